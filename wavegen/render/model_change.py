"""The model a render began with, when a resume finds it changed or gone.

A render records its model's folder, the sha256 of its weights file and the digest of their tensors
alone (``model``, ``model_sha256``, ``model_tensors_sha256`` in ``.state/params.json``). A run's
``best/`` (written by :func:`wavegen.checkpoint.save_model`) and its checkpoints (accelerate's writer)
hold the same tensors in files of other bytes (other header metadata): "the same model" is the same
tensors (:func:`same_model`), whichever folder holds them. A resume whose tensors differ is refused
(:func:`model_differs`), naming the kept checkpoint of the run that holds the ones the render began
with, if any (a finished render's rerun: that it is finished, with nothing to resume).

Where the model a render or a live stream's archive began from is gone (a run's ``best/`` deleted or being
replaced, a checkpoint pruned) but a kept checkpoint (or, for a checkpoint, the run's best/) holds the very
tensors it began with, :func:`stand_in` names that model, the one way to find it for render and serve alike:
going on with it is going on with exactly the weights they began with, said in one line
(:meth:`StandIn.said`). Where none holds them, :func:`model_gone` says why the render cannot go on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from wavegen.render.settings import rerun_ending
from wavegen.resolve import BEST_FOLDERS, MODEL_FILE, ModelRef, resolve_model
from wavegen.resolve_checkpoints import best_with, checkpoint_with, intact_checkpoints, run_checkpoints

TENSORS_KEY = "model_tensors_sha256"  # params.json: the model's tensors_sha256 (wavegen.weights_file)


def with_recorded_tensors(snapshot_params: dict, recorded: dict | None) -> dict:
    """A snapshot's parameters, with the tensors digest ``recorded`` (its folder's params.json) holds where the
    snapshot lacks it (written by an older wavegen, or before params.json gained the digest) and records the same
    weights file: judged as params.json is, so the checkpoint holding those weights continues it."""
    if not isinstance(snapshot_params, dict) or snapshot_params.get(TENSORS_KEY) is not None or \
            not recorded or recorded.get(TENSORS_KEY) is None or \
            recorded.get("model_sha256") != snapshot_params.get("model_sha256"):
        return snapshot_params
    return {**snapshot_params, TENSORS_KEY: recorded[TENSORS_KEY]}


def same_model(saved: dict, current: dict) -> bool:
    """Whether the parameters ``current`` render the model the render recorded in ``saved`` began with:
    the same tensors. A render begun before tensors were recorded (no TENSORS_KEY) is judged by its
    weights file's sha256, the only thing it recorded: the file it began from, byte for byte (a best/
    and the checkpoint it came from, alike in tensors, are told apart then: honest, if strict)."""
    key = TENSORS_KEY if saved.get(TENSORS_KEY) is not None else "model_sha256"
    return saved.get(key) is not None and saved.get(key) == current.get(key)


def kept_with(began: str | Path, saved: dict) -> tuple[Path, str | None, str] | None:
    """Where the weights a render or archive began with from the model folder ``began`` are kept now (``saved``
    records their TENSORS_KEY and model_sha256), for a refusal of other weights to name: (run, "step_N", "the kept
    checkpoint FOLDER") for the newest kept checkpoint of its run holding them; else, where ``began`` is a checkpoint
    gone since (pruned), (run, None, "the run's best/") where the run's best/ (or best.old/) does. None: neither."""
    held = _holder(Path(began), saved.get(TENSORS_KEY), saved.get("model_sha256"))
    return None if held is None else (held.run, held.checkpoint, held.words)


class _Held(NamedTuple):
    run: Path
    checkpoint: str | None  # "step_N" where a kept checkpoint holds the weights
    best: str | None  # else the run's best folder's name (best, best.old) that does
    words: str  # "the kept checkpoint FOLDER", "the run's best/"


def _holder(began: Path, tensors: str | None, sha256: str | None, best_too: bool = True) -> _Held | None:
    """The one search for the weights (``tensors``, else the weights file's ``sha256``) of the model folder
    ``began``: the newest kept checkpoint of its run holding them; else (``best_too``), where ``began`` is a
    checkpoint gone since (pruned), the run's best/ (or best.old/) holding them. None: neither."""
    found = checkpoint_with(began, tensors, sha256)
    if found is not None:
        return _Held(found[1].parent.parent, f"step_{found[0]}", None, f"the kept checkpoint {found[1]}")
    if best_too and _in_checkpoints(str(began)) and not began.exists():  # pruned since
        run = began.parent.parent
        best = best_with(run, tensors)
        if best is not None:
            return _Held(run, None, best, f"the run's {best}/")
    return None


def model_differs(where: Path, saved: dict, current: dict, finished: bool | None = False) -> str:
    """The refusal of a resume whose weights are not the ones the render began with: the model in the
    same place changed (the run trained further, best/ was replaced), or this command names another.
    ``finished``: the render is, with nothing to resume (:func:`~wavegen.render.settings.rerun_ending`); None
    where that is not known (a damaged report beside the .state/ a kill left): the rerun with the weights it
    began with is said to resume it or say it is finished."""
    began, now = saved.get("model"), current.get("model")
    sha = saved["model_sha256"]
    if began is None or Path(began) == Path(now):
        what = (f"{where} holds a render begun from the model in {now}, which changed since (trained further or "
                f"replaced: model_sha256 was {sha[:12]}..., is now {current['model_sha256'][:12]}...)")
    else:
        what = (f"{where} holds a render begun from the model in {began} (model_sha256={sha[:12]}...), but this "
                f"command renders {now} (model_sha256={current['model_sha256'][:12]}...)")
    anew = "render it anew from the model as it is now"
    if finished:
        return f"{what}. {rerun_ending('', finished=True, anew=anew)}"
    found = kept_with(began, saved) if began else None
    if found is not None and finished is None:
        rerun = (f"Pass --checkpoint {found[1]} (the weights it began with)" if found[1] else
                 f"Rerun without --checkpoint ({found[2]} holds the weights it began with)")
        return f"{what}. {rerun_ending('', None, rerun=rerun)}"
    resume = ""
    if found is not None:
        resume = (f"resume it with --checkpoint {found[1]} (the weights it began with), " if found[1] else
                  f"resume it without --checkpoint ({found[2]} holds the weights it began with), ")
    return f"{what}; {resume}pass --restart to {anew}, or choose another --out"


def model_gone(where: Path, named, saved: dict, complete: bool | None, checkpoint: str | None = None) -> str | None:
    """The refusal of a rerun naming ``named`` (a run or model folder, as given; with ``checkpoint``, that
    checkpoint of the run), which no longer holds a model, where the render in ``where`` began from it
    (``saved``: the render's recorded ``model``, ``model_sha256`` and TENSORS_KEY): best/ deleted, or gone
    while a training replaces it; a checkpoint pruned by a training that went on, where no model holds the
    weights it began with (:func:`stand_in` is asked first: where one does, the render goes on with it).
    ``complete`` None: whether the render finished is not known (:func:`_cannot_be`). None where the render there
    began from another model, or recorded none."""
    began, sha = saved.get("model"), saved.get("model_sha256")
    if not (isinstance(began, str) and isinstance(sha, str)):
        return None
    saved = {**saved, TENSORS_KEY: saved.get(TENSORS_KEY) if isinstance(saved.get(TENSORS_KEY), str) else None}
    began_dir, named_dir = Path(began), Path(named).expanduser().resolve()
    if checkpoint is not None:
        return _checkpoint_gone(where, named_dir, began_dir, saved, complete, checkpoint)
    if (began_dir / MODEL_FILE).is_file() or not (
            began_dir == named_dir or (began_dir.parent == named_dir and began_dir.name in BEST_FOLDERS)):
        return None
    what = (f"{where} holds a {'finished render' if complete else 'render'} begun from the model in {began} "
            f"(model_sha256={sha[:12]}...), which is gone (deleted, or being replaced by a training)")
    run = began_dir.parent.parent if _in_checkpoints(began) else began_dir.parent
    if saved[TENSORS_KEY] is None:  # recorded by an older wavegen: a checkpoint's other file cannot be told
        return (f"{what}, and no kept checkpoint of {run} holds its weights file byte for byte (the render, begun by "
                "an older wavegen, recorded no more of its model than that file's sha256, and a training's "
                f"checkpoint holds the same weights in a file of other bytes), so it cannot be {_cannot_be(complete)}: "
                "pass --restart, or bring the model folder back")
    return (f"{what}, and no kept checkpoint of {run} holds its weights, so it cannot be {_cannot_be(complete)}: "
            f"pass --restart with a model that is there{_there(run)}, or choose another --out")


def _cannot_be(complete: bool | None) -> str:
    """What a rerun of a render whose model is gone cannot do, as "so it cannot be ...": check a ``complete`` one,
    resume one that is not; where that is not known (None: a damaged report beside the .state/ a kill left), it
    would resume the render, or find it finished and write the report again."""
    if complete is None:
        return "resumed, nor, if it is finished, checked and its damaged report written again"
    return "checked" if complete else "resumed"


def _checkpoint_gone(where: Path, run: Path, began: Path, saved: dict, complete: bool | None,
                     checkpoint: str) -> str | None:
    """:func:`model_gone` for ``--checkpoint step_N`` of the run ``run``, where the render in ``where`` began
    from that checkpoint (``began``), now gone (pruned): that neither a kept checkpoint nor the run's best/ holds
    its weights. None where the render began from another checkpoint."""
    step, sha = checkpoint.removeprefix("step_"), saved["model_sha256"]
    if began.parent != run / "checkpoints" or began.name != f"step_{step}" or began.exists():
        return None
    what = (f"--checkpoint {checkpoint}: {where} holds a {'finished render' if complete else 'render'} begun from "
            f"the checkpoint {began} (model_sha256={sha[:12]}...), which is gone (pruned by a training that went on, "
            "or deleted)")
    if saved[TENSORS_KEY] is None:  # recorded by an older wavegen: best/'s file of other bytes cannot be told
        return (f"{what}, and no kept checkpoint holds its weights file byte for byte (the render, begun by an older "
                "wavegen, recorded no more of its model than that file's sha256, and the run's best/ holds weights "
                f"in a file of other bytes), so it cannot be {_cannot_be(complete)}: pass --restart, or bring the "
                "checkpoint back")
    return (f"{what}, and neither a kept checkpoint nor the run's best/ holds its weights, so it cannot be "
            f"{_cannot_be(complete)}: pass --restart with a model that is there{_there(run, best=True)}, or choose "
            "another --out")


def _there(run: Path, best: bool = False) -> str:
    """The model of ``run`` a refusal's "pass --restart with a model that is there" names, in parentheses: its
    newest intact kept checkpoint ("e.g. --checkpoint last", or "step_N" where the newest is damaged); else, with
    ``best``, its best/ (or best.old/) where one holds a model; else nothing: the run holds no model to name (the
    hint named --checkpoint last of a run that had no checkpoint left)."""
    try:
        _, newest = intact_checkpoints(run_checkpoints(run))
    except OSError:  # unreadable: nothing to name
        newest = None
    if newest:
        return f" (e.g. --checkpoint {newest})"
    if best and any((run / name / MODEL_FILE).is_file() for name in BEST_FOLDERS):
        return " (e.g. the run's best/, without --checkpoint)"
    return ""


@dataclass(frozen=True)
class StandIn:
    """The model holding the weights a render (or an archive) began with, the model it began from being gone."""

    ref: ModelRef  # the kept checkpoint or best/ holding them, resolved
    began: Path  # the model folder the render began from, gone
    holder: str  # it in words: "the kept checkpoint /run/checkpoints/step_9", "the run's best/"
    gone_why: str  # why such a folder goes

    def said(self, named: str, whose: str, doing: str) -> str:
        """The one line saying so: ``named`` as the command named it ("--checkpoint step_5", "runs/a"),
        ``whose`` the render or archive ("the render in out/"), ``doing`` what goes on ("resuming it")."""
        return (f"{named}: {self.began}, the model {whose} began with, is gone ({self.gone_why}); {self.holder} holds "
                f"the weights it began with, the same tensors: {doing} with it")


def stand_in(named, checkpoint: str | None, began, tensors: str | None, sha256: str | None) -> StandIn | None:
    """Where ``named`` (a run or model folder, as given; with ``checkpoint`` "step_N", that checkpoint of the run)
    holds no model now, and the render or archive that recorded ``began`` (the resolved model folder it began
    from), ``tensors`` (its TENSORS_KEY, or None: recorded by an older wavegen) and ``sha256`` (its weights
    file's) began from it: the model that holds those weights now. For a run's best/ gone (deleted, or being
    replaced by a training): the newest kept checkpoint holding them; for a checkpoint gone (pruned by a training
    that went on): that, else the run's best/ (or best.old/). None where nothing holds them (by tensors digest, or
    by the weights file byte for byte where no digest was recorded), or where ``named`` names a model still there,
    or not the one ``began`` records: the caller's refusal stands."""
    if not isinstance(began, str) or not (isinstance(tensors, str) or isinstance(sha256, str)):
        return None
    tensors = tensors if isinstance(tensors, str) else None
    began_dir, named_dir = Path(began), Path(named).expanduser().resolve()
    if checkpoint is not None:
        if began_dir != named_dir / "checkpoints" / checkpoint or began_dir.exists():
            return None
        gone_why = "pruned by a training that went on, or deleted"
    else:
        if (began_dir / MODEL_FILE).is_file() or not (
                began_dir == named_dir or (began_dir.parent == named_dir and began_dir.name in BEST_FOLDERS)):
            return None
        gone_why = "deleted, or being replaced by a training"
    held = _holder(began_dir, tensors, sha256, best_too=checkpoint is not None)
    if held is None:
        return None
    ref = resolve_model(held.run, held.checkpoint) if held.checkpoint is not None else \
        resolve_model(held.run if held.best == BEST_FOLDERS[0] else held.run / held.best)
    return StandIn(ref, began_dir, held.words, gone_why)


def _in_checkpoints(model_dir: str) -> bool:
    return Path(model_dir).parent.name == "checkpoints"
