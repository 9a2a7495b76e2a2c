"""Why a path that exists names no model, and what to give instead (:func:`wavegen.resolve.resolve_model`'s
errors): a run with no model yet or no best/ (:func:`no_best`), a checkpoint folder, a prepared corpus, a render
folder or a live stream's archive (the model that made it, from its records), or another folder
(:func:`not_a_model`); what a folder given ``--checkpoint`` lacks to be a run (:func:`not_a_run`); and what
other wavegen folder a render's --out or serve's --archive names (:func:`other_use`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from wavegen.resolve import CONFIG_FILE, MODEL_FILE, WEIGHTS_RECORD

RUN_FILES = ("checkpoints", "metrics.jsonl", ".lock")  # a run folder's, beside its config.json (train.py)
RUN_OWN_FILES = ("best", "checkpoints", "metrics.jsonl")  # those no render or archive has (they hold a .lock too)
# A render folder's names (render/folder.py's REPORT_FILE, STATE_DIR, PARAMS_FILE; settings.stream_paths and
# FORMATS), restated: resolve lies below render and never imports it (test_resolve checks both).
RENDER_REPORT, RENDER_PARAMS = "render_report.json", Path(".state") / "params.json"
RENDER_STREAMS = ("stream_000.wav", "stream_000.flac")
RENDER_STREAM_NAME = re.compile(r"stream_(?:\d{3}|[1-9]\d{3,})\.(?:wav|flac)")  # stream_paths' names, any stream
# A live stream's archive (serve/archive.py's PART_GLOB, MODEL_FOLDER_KEY, UNSNAPSHOT_KEY): its parts, and what
# its .state/params.json holds beside render's keys (the same "model")
ARCHIVE_PARTS, ARCHIVE_FOLDER_KEY = "broadcast_[0-9][0-9][0-9][0-9][0-9].wav", "model_folder"
ARCHIVE_KEYS = (ARCHIVE_FOLDER_KEY, "unsnapshot_seconds")


def not_a_model(path: Path) -> str:
    """Why an existing path names no model, and what to give instead: a checkpoint of a run (give the
    run and --checkpoint), a prepared corpus (train on it first), a render folder (give the model that
    made it), or another folder."""
    from wavegen.corpus import MANIFEST

    run = path.parent.parent
    is_run = (path / CONFIG_FILE).is_file() and any((path / name).exists() for name in RUN_FILES)
    aside = moved_aside(path) if is_run else ""
    if aside:  # a run whose only models training moved aside (a non-finite step)
        best = (best_aside(path) or [None])[-1]  # the newest
        anyway = f", give {best} to render it anyway" if best is not None else ""
        return (f"{path}: a training run with no model left to give: {aside}; rerun its wavegen train command with "
                f"a lower train.lr (no finished checkpoint is left: it starts again from step 0){anyway}, or give "
                f"{path / CONFIG_FILE} for its settings (random weights)")
    if is_run:
        return (f"{path}: a training run with no model yet (no best/ and no finished checkpoint: training has not "
                f"saved one); wait for its first checkpoint (then --checkpoint last), or give {path / CONFIG_FILE} "
                "for its settings (random weights)")
    if path.parent.name == "checkpoints" and (run / CONFIG_FILE).is_file():
        return f"{path}: a checkpoint of the run {run}; give the run and the checkpoint: {run} --checkpoint {path.name}"
    if (path / MANIFEST).is_file():
        return (f"{path}: a prepared corpus, not a model; train one on it first (wavegen train --data {path} "
                "--model PRESET --run RUN), then give RUN")
    if is_archive(path):
        return _archive_folder(path)
    if any((path / name).is_file() for name in (RENDER_REPORT, RENDER_PARAMS, *RENDER_STREAMS)):
        return _render_folder(path)
    if (path / WEIGHTS_RECORD).is_file() and not (path / MODEL_FILE).exists():  # a copy that lost its weights
        return (f"{path}: a model folder without its weights ({WEIGHTS_RECORD} records a {MODEL_FILE}, which is not "
                "here); copy the folder again from where it was made, or give the run it came from (its best/, or "
                "--checkpoint step_N)")
    return (f"{path}: no {MODEL_FILE} + {CONFIG_FILE} here or in {path / 'best'}; "
            "train a model first (wavegen train), or give a run or model folder")


def _recorded(path: Path) -> dict:
    """.state/params.json's object, or {} where there is none to read."""
    from wavegen.fileio import read_json_object

    try:
        params = read_json_object(path / RENDER_PARAMS)
    except (OSError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def is_archive(path: Path) -> bool:
    """Whether ``path`` holds a live stream's archive (wavegen serve --archive): a part, or its params."""
    return any(path.glob(ARCHIVE_PARTS)) or any(key in _recorded(path) for key in ARCHIVE_KEYS)


def is_render(path: Path) -> bool:
    """Whether ``path`` holds a render (wavegen render --out): its report or first stream, or its snapshots and raw
    PCM while it runs (its .state/params.json alone is not told from an archive's where it is damaged)."""
    state = path / RENDER_PARAMS.parent
    return any((path / name).is_file() for name in (RENDER_REPORT, *RENDER_STREAMS)) or \
        any(state.glob("rank*.npz")) or any(state.glob("stream_*.pcm"))


@dataclass(frozen=True)
class OtherUse:
    """What :func:`other_use` found: ``words`` say it ("it holds a model (model.safetensors)", "it lies inside the
    training run R (...)"); ``lies_inside``: the folder lies inside another command's folder (a folder outside it
    will do), rather than holding another command's files itself (a new folder will)."""

    words: str
    lies_inside: bool


def other_use(folder: Path, own: str) -> OtherUse | None:
    """What wavegen folder other than ``own``'s ("render": a render's --out; "archive": serve's --archive) ``folder``
    is, or lies inside (:class:`OtherUse`), or None: no such folder, one of ``own``'s, or one of other files (a
    render or an archive writes beside them by its own names). Render and serve refuse such a folder before the
    model loads: their files would mix into it (a run's .lock taken, a render's .state/params.json taken for an
    archive's, or the other way round), or into a folder that a model, run or corpus is, or into what its writer
    replaces, prunes or removes (a run's best/ and checkpoints, a render's or archive's .state/)."""
    try:
        held = _holds_other(folder, own) if folder.is_dir() else None
    except OSError:  # cannot be looked in: the command's own checks say why
        return None
    if held is not None:
        return OtherUse(held, lies_inside=False)
    try:
        words = inside(folder)
    except OSError:
        return None
    return OtherUse(words, lies_inside=True) if words is not None else None


def _holds_other(folder: Path, own: str) -> str | None:
    """What other wavegen command's files the folder ``folder`` holds itself, in words, or None."""
    from wavegen.corpus import MANIFEST

    if (folder / MODEL_FILE).is_file():  # a model folder, best/, a checkpoint
        return f"it holds a model ({MODEL_FILE})"
    if _is_run(folder):
        return "it holds a training run (what wavegen train --run wrote)"
    if (folder / MANIFEST).is_file():
        return "it holds a prepared corpus (what wavegen prep wrote)"
    if own != "archive" and is_archive(folder):
        model = _archive_model(folder)
        return (f"it holds a live stream's archive (what wavegen serve --archive wrote: wavegen serve "
                f"{model or 'MODEL'} --archive {folder} continues it)")
    if own != "render" and is_render(folder):
        return "it holds a render (what wavegen render --out wrote)"
    return None


def _is_run(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and any((folder / name).exists() for name in RUN_OWN_FILES)


def inside(folder: Path) -> str | None:
    """Where ``folder`` (there or not yet, links followed) lies inside what another wavegen command replaces or
    prunes, in words: a model folder (saved again as a whole), a prepared corpus (prep publishes it again), a
    training run's own folders (best/, checkpoints/, samples/, tb/, its hidden ones; a folder of the user's
    beside them, ``RUN/renders``, is not the run's), a render's or an archive's .state/. The outermost such
    folder is named. A folder above is taken for wavegen's by what its files hold, not by their names alone: a
    project of the user's with a config.json beside checkpoints/, or a dataset's manifest.json, is none of
    wavegen's."""
    real = Path(os.path.realpath(folder))
    found = None
    for child, parent in zip((real, *real.parents), real.parents):
        what = _replaced_inside(parent, child, itself=child == real)
        if what is not None:
            found = what
        elif found is None and child.name == RENDER_PARAMS.parent.name and (
                (parent / RENDER_PARAMS).is_file() or is_render(parent) or is_archive(parent)):  # begun, or done
            what = "a live stream's archive's" if is_archive(parent) else "a render's"
            named = f"it is {child.name}/ of {parent}" if child == real else f"{INSIDE} {child}"
            found = f"{named}, {what} snapshots (removed or replaced as it goes)"
    return found


INSIDE = "it lies inside"  # how inside's words begin for a folder below the one named
RUN_OWN_FOLDERS = ("checkpoints", "samples", "tb")  # with best*, .lock, ...: what a training writes in its run


def _replaced_inside(parent: Path, child: Path, itself: bool = False) -> str | None:
    """What of ``parent`` (a wavegen folder, by its files' content) would take ``child`` (in it) with it, in words.
    ``itself``: ``child`` is the folder asked about, said to be that folder (not to lie inside itself)."""
    from wavegen.corpus import MANIFEST
    from wavegen.prep_publish import CORPUS_MARKER

    config = _wavegen_config(parent / CONFIG_FILE)
    if (parent / MODEL_FILE).is_file() and config:
        return f"{INSIDE} the model folder {parent} ({MODEL_FILE})"
    if config and _is_run(parent):
        name = child.name
        if name in RUN_OWN_FOLDERS or name.startswith(("best", ".")):
            named = f"it is {name}/" if itself else f"{INSIDE} {child},"
            return f"{named} of the training run {parent} (what wavegen train writes)"
        return None
    if (parent / CORPUS_MARKER).exists() or _holds_keys(parent / MANIFEST, MANIFEST_KEYS):
        return f"{INSIDE} the prepared corpus {parent} (what wavegen prep wrote)"
    return None


MANIFEST_KEYS = ("sample_rate", "splits", "files")  # what wavegen prep writes into a corpus's manifest.json


def _wavegen_config(path: Path) -> bool:
    """Whether ``path`` holds a wavegen model's config: a model_type and its model settings, as
    resolve_config.read_config asks (not a config.json of another program's: "model" and "train" alone)."""
    data = _json_object(path)
    return data is not None and isinstance(data.get("model_type"), str) and isinstance(data.get("model"), dict)


def _holds_keys(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` holds a JSON object with every one of ``keys`` (False where it cannot be read)."""
    data = _json_object(path)
    return data is not None and all(key in data for key in keys)


def _json_object(path: Path) -> dict | None:
    from wavegen.fileio import read_json_object

    try:
        return read_json_object(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def recordings(folder: Path, own: str) -> list[str]:
    """The names of the audio files directly in ``folder`` (a render's --out, ``own`` "render"; serve's --archive,
    "archive") that ``own`` does not write (stream_NNN.wav|flac; broadcast_NNNNN.wav), sorted, where ``folder``
    holds none of ``own``'s work yet: a folder of recordings, which eval --renders, or a prep of it, would take
    with what the command writes there. [] where it is no folder, holds ``own``'s work, or cannot be listed."""
    from wavegen.prep_inputs import audio_names

    try:
        if not folder.is_dir():
            return []
        if own == "render" and ((folder / RENDER_REPORT).is_file() or (folder / RENDER_PARAMS).is_file()):
            return []
        if own == "archive" and is_archive(folder):
            return []
        ours = RENDER_STREAM_NAME.fullmatch if own == "render" else (lambda name: fnmatch(name, ARCHIVE_PARTS))
        return [name for name in audio_names(folder) if not name.startswith(".") and not ours(name)]
    except OSError:  # cannot be listed: the folder's own checks say why
        return []


def _give(model: Path) -> str:
    """A model folder as the command line takes it: a checkpoint as its run and --checkpoint."""
    return f"{model.parent.parent} --checkpoint {model.name}" if model.parent.name == "checkpoints" else str(model)


def _archive_model(path: Path) -> str | None:
    """The model that played the archive in ``path``, as the command line takes it (its params: the folder of the
    weights, resolved; for random weights, or an archive of an older wavegen, the "model" named), or None."""
    params = _recorded(path)
    folder, model = params.get(ARCHIVE_FOLDER_KEY), params.get("model")
    if isinstance(folder, str) and folder:
        return _give(Path(folder))
    if isinstance(model, str) and model:  # "preset NAME (random weights)", "CONFIG (...)", "CHECKPOINT (step N)"
        named = model.split(" (")[0]
        return named.removeprefix("preset ") if model.startswith("preset ") else _give(Path(named))
    return None


def _archive_folder(path: Path) -> str:
    """For a live stream's archive given as a model: what it is, and the model that played it."""
    what, model = f"{path}: a live stream's archive (what wavegen serve broadcast), not a model", _archive_model(path)
    if model is not None:
        return f"{what}; give the model that played it: {model}"
    return f"{what}; give the model or run folder that played it"


def _render_folder(path: Path) -> str:
    """For a render folder given as a model: what it is, and the model that rendered it (its report's
    parameters when complete, else those under .state: "model", the folder of the weights) to give instead."""
    from wavegen.fileio import read_json_object

    made_by = None
    for record, key in ((RENDER_REPORT, "params"), (RENDER_PARAMS, None)):
        try:
            params = read_json_object(path / record)
            model = (params.get(key) if key else params)["model"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):  # none, unreadable or no model named
            continue
        if isinstance(model, str) and model:
            made_by = model
            break
    if made_by is None:
        return (f"{path}: a render folder (audio wavegen render wrote), not a model; give the model or run folder "
                "that rendered it")
    model = Path(made_by)
    return f"{path}: a render folder (made by {model}), not a model; give the model that made it: {_give(model)}"


def not_a_run(folder: Path, checkpoint: str) -> str:
    """Why ``--checkpoint checkpoint`` finds no run in ``folder`` (which lacks config.json or checkpoints/), and
    what to give instead: a run's best/ (its run folder), another model folder (it holds no checkpoints:
    give it without --checkpoint), or what an other folder lacks."""
    from wavegen.resolve import BEST_FOLDERS

    head, give = f"--checkpoint {checkpoint}: {folder}", "give the run folder that wavegen train wrote"
    if (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        run = folder.parent
        if folder.name in BEST_FOLDERS and (run / CONFIG_FILE).is_file() and (run / "checkpoints").is_dir():
            return f"{head} is {run}'s best model; give the run folder, {run}, with --checkpoint {checkpoint}"
        return (f"{head} is a model folder, which holds no checkpoints/ (a run's are in its run folder): {give}, "
                "or this folder without --checkpoint")
    lacks = [name for name, there in ((CONFIG_FILE, (folder / CONFIG_FILE).is_file()),
                                      ("checkpoints/", (folder / "checkpoints").is_dir())) if not there]
    return f"{head} is not a run folder (no {' and no '.join(lacks)}); {give}"


def no_best(run_dir: Path) -> str:
    """Why a run folder with checkpoints has no best/, and what to do: no validation has run yet, or
    best/ went missing though validations ran (metrics.jsonl records them); what training moved aside
    (:func:`moved_aside`) named, and the checkpoint a rerun restores best/ from named only while it is kept."""
    from wavegen.resolve_checkpoints import kept_checkpoints, run_checkpoints, set_aside
    from wavegen.runlog import best_validation

    scored = best_validation(run_dir)
    aside = moved_aside(run_dir)
    note = f" ({aside})" if aside else ""
    if scored is None:
        if aside:
            return (f"{run_dir}: this run has no best/ model now{note}; use --checkpoint last or step_N "
                    f"({kept_checkpoints(run_checkpoints(run_dir))}), or rerun its wavegen train command: it writes "
                    "best/ anew at its next validation step")
        return (f"{run_dir}: this run has no best/ model yet (no validation has run); use --checkpoint last, or "
                "train on until a validation step")
    step, bits = scored
    head = (f"{run_dir}: this run's best/ model is missing, though validations ran (the best, {bits:.4f} "
            f"bits/sample, at step {step}){note}")
    found = run_checkpoints(run_dir)
    kept = dict(found)
    if step in kept:
        return (f"{head}; use --checkpoint last or step_N, or rerun its wavegen train command: it restores best/ "
                f"from checkpoints/step_{step} while that is kept")
    gone = f"checkpoints/step_{step}, which scored it, is {'one of those' if set_aside(run_dir, step) else 'not kept'}"
    earlier = best_validation(run_dir, found[-1][0]) if found else None
    rerun = (f"restores best/ from checkpoints/step_{earlier[0]}, the best validation up to the checkpoint it resumes "
             f"from ({earlier[1]:.4f} bits/sample)" if earlier is not None and earlier[0] in kept else
             "writes best/ again at its next validation")
    return f"{head}; {gone}: use --checkpoint last or step_N ({kept_checkpoints(found)}), or rerun its wavegen " \
           f"train command: it {rerun}"


def best_aside(run_dir: Path) -> list[Path]:
    """The best/ folders training moved aside (``best.diverged``, ``best.diverged2``, ...; divergence._best_aside),
    oldest first (fileio.free_name's order: best.diverged, best.diverged2, ..., best.diverged10)."""
    found = [path for path in Path(run_dir).glob("best.diverged*") if (path / MODEL_FILE).is_file()]
    return sorted(found, key=lambda path: (len(path.name), path.name))


def moved_aside(run_dir: Path) -> str:
    """What training moved aside in the run ``run_dir`` (its best/ as ``best.diverged``, checkpoints as
    ``step_N.diverged`` or ``.damaged``: divergence.kept_after_divergence, checkpoint.set_aside), for an error:
    what they are and that they are kept for the user; "" where there is none."""
    from wavegen.resolve_checkpoints import SET_ASIDE

    parts = [f"{best} (best/ as it was: it held the weights that gave the run's first non-finite step, which no finite "
             "validation score vouches for)"
             for best in best_aside(run_dir)]
    for suffix, why in SET_ASIDE.items():
        steps = [path for path in Path(run_dir, "checkpoints").glob(f"step_*{suffix}*") if path.is_dir()]
        steps.sort(key=lambda path: int(re.match(r"step_(\d+)", path.name).group(1)))
        if steps:
            parts.append(f"checkpoints/{', '.join(path.name for path in steps)} ({why})")
    if not parts:
        return ""
    return f"training moved aside {'; '.join(parts)}: kept for you, never resumed from nor rendered as the run's model"
