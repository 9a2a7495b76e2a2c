"""Opening an archive (``Archive.open``): what its params.json and snapshots hold, checked against this command,
the snapshot to go on from (the one before it where the newest is damaged or missing), the parts it counts; then,
all checked, the folder cut back to it (:func:`resume`). Functions of the :class:`~wavegen.serve.archive.Archive`,
as :mod:`wavegen.serve.archive_folder`'s."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError
from wavegen.fileio import fsync_dir, free_name, not_a_file, read_json_object, stale_temporaries, write_json
from wavegen.folders import link_to_nothing
from wavegen.render import PCMWriter, load_snapshot, save_snapshot
from wavegen.render.folder import remove_temporaries
from wavegen.render.model_change import TENSORS_KEY, with_recorded_tensors
from wavegen.render.shard import kept_states
from wavegen.render.writers import flushed_samples, previous_snapshot
from wavegen.serve.archive import (GONE_SAID_KEY, KEEP_PARTS_KEY, PARAMS_FILE, SNAPSHOT_FILE, STATE_DIR, Archive,
                                   ServeError, part_path, parts_in, snapshot_params)
from wavegen.serve.control import apply_label

logger = logging.getLogger("wavegen.serve.archive")  # the archive's words, whichever module says them


def resume(archive: Archive) -> tuple[dict[str, np.ndarray] | None, int, dict]:
    """Check all (a refusal leaves the folder as it was), then cut back, remove and record."""
    remove_stale_temporaries(archive)
    params_path = archive.state_dir / PARAMS_FILE
    recorded, lost, where = recorded_params(archive)
    if recorded is not None:
        archive._check_params(recorded, where)
    elif part_path(archive.folder, 0).exists():
        raise ServeError(f"{part_path(archive.folder, 0)} exists but {archive.folder} has no {STATE_DIR}/"
                         f"{PARAMS_FILE}: it is not an archive wavegen serve can continue; choose another "
                         "--archive")
    state, meta, fell_back = None, {}, None
    found = snapshot_to_resume(archive)
    if found is not None:
        read, state, archive.position, meta, fell_back = found
        archive._check_params(with_recorded_tensors(meta.get("params", {}), recorded), read)
        keep_part_length(archive, meta)
        first = meta.get("first_part", 0)
        if not isinstance(first, int) or not 0 <= first <= archive.position // archive.part_frames:
            raise archive._damaged(read, f"first_part={first!r} is not a part it counts")
        archive.first_part = first
        archive.gone_said = meta.get(GONE_SAID_KEY, [])  # checked where it is read: said_before
    else:
        from wavegen.serve.archive_folder import check_nothing_to_lose  # it imports this module

        check_nothing_to_lose(archive, recorded)
    archive.snapshot_position = archive.position
    index, frames = divmod(archive.position, archive.part_frames)
    if fell_back is not None:
        rotated_past(archive, index, meta)
    check_parts(archive, index, frames)  # before anything is cut or removed
    if fell_back is not None:
        fall_back(archive, fell_back, state, meta)
    elif found is not None:
        clear_previous(archive)
        record_gone_said(archive, state, meta)
    if state is None or recorded is None:  # begun (again) at 0, or params.json lost: this command's, with its bound
        archive.state_dir.mkdir(parents=True, exist_ok=True)
        write_json(params_path, {**archive.params, **archive._bounds()})
    else:
        if lost is not None:
            recorded = write_params_again(archive, recorded, lost)
        record_tensors(archive, recorded, params_path)
    archive._remove_parts_before(archive.first_part)  # removed by rotation, but not yet when it stopped
    for later_index, later in parts_in(archive.folder):
        if later_index > index:  # written after the snapshot: written again
            later.unlink()
    archive.writer = archive._writer(index, frames)
    if archive.position:
        logger.info("archive %s: continuing at %.1f s", archive.folder, archive.position / archive.sample_rate)
    return state, archive.position, meta


def recorded_params(archive: Archive) -> tuple[dict | None, str | None, Path]:
    """Looked at only: (what .state/params.json holds, None, its path); where it is damaged or gone while the
    snapshot is readable, (the parameters the snapshot recorded, what is wrong with params.json, the snapshot's
    path): the snapshot records the same ones, so the archive goes on (:func:`write_params_again`); a refusal
    names the file its values came from. (None, None, params.json's path): no params.json and no snapshot to
    stand for it. ServeError naming params.json where it is damaged and no snapshot is readable, or something
    else than a file, or a file that cannot be read (its permissions: said, not written over), or a link to nothing
    (a loop of links, one under a file: :func:`params_link_refusal`)."""
    path = archive.state_dir / PARAMS_FILE
    if state_file(archive, path):
        try:
            return read_json_object(path), None, path
        except OSError as err:
            nothing = link_to_nothing(path)
            if nothing is not None:  # its read says only "No such file" (or "Too many levels") of the link's name
                raise params_link_refusal(archive, nothing[0]) from None
            raise ServeError(f"cannot read {path}: {err.strerror or err}; make it readable, or choose another "
                             "--archive") from None
        except ValueError as err:
            refusal, what = archive._damaged(path, str(err)), f"is damaged ({err})"
    else:
        refusal, what = None, "is gone"
    params, name = snapshot_params(archive.state_dir)
    if params is not None:
        return params, what, archive.state_dir / name
    if refusal is not None:
        raise refusal
    return None, None, path


def params_link_refusal(archive: Archive, said: str) -> ServeError:
    """The refusal of .state/params.json where it is a link that leads to nothing (``said``: "PATH is a link to
    TARGET, which does not exist", link_to_nothing's words): not written again from the snapshot, which would
    replace the link. Where the snapshot records the parameters, removing the link lets the archive go on (its
    params.json written again from them, :func:`write_params_again`): said, as a way on for a file lost."""
    recorded, name = snapshot_params(archive.state_dir)
    remove = "" if recorded is None else \
        f", or remove the link (then {PARAMS_FILE} is written again from what {STATE_DIR}/{name} recorded)"
    return ServeError(f"{said}: point it at the archive's {PARAMS_FILE}{remove}, or choose another --archive")


def write_params_again(archive: Archive, params: dict, lost: str) -> dict:
    """params.json damaged or gone (``lost`` says which), ``params`` the snapshot's, checked: said in one
    warning and written again from them (with this command's bound for audio without a snapshot, and the
    archive's part length) → them."""
    path = archive.state_dir / PARAMS_FILE
    logger.warning("archive %s: %s %s; going on with the parameters %s/%s recorded (%s written again from "
                   "them)", archive.folder, path, lost, STATE_DIR, SNAPSHOT_FILE, PARAMS_FILE)
    params = {**params, **archive._bounds()}
    write_json(path, params)
    return params


def remove_stale_temporaries(archive: Archive) -> None:
    """Lock held: the partial state files a server killed while writing them left (atomic_write's
    temporaries, never read): a station restarted after each kill would gather them for good."""
    remove_temporaries(stale_temporaries(archive.state_dir), f"archive {archive.folder}",
                       "left partial by a server killed while writing it", logger)


def record_tensors(archive: Archive, recorded: dict, path: Path) -> None:
    """An archive begun before serve recorded its model's tensors, continued from the very weights file it
    began with: params.json gains their digest, so that from now on the same tensors in another file (the
    run's checkpoint of its best/) continue it too."""
    if TENSORS_KEY in recorded or archive.params.get(TENSORS_KEY) is None or \
            recorded.get("model_sha256") != archive.params.get("model_sha256"):
        return
    write_json(path, {**recorded, TENSORS_KEY: archive.params[TENSORS_KEY]})


def keep_part_length(archive: Archive, meta: dict) -> None:
    """Go on with the length the archive's parts were begun with (its snapshot's record; before there
    was one, the oldest part's there, full where a later part is there too: part 0 may have been moved
    away; by its header, which a part cut short since keeps, :func:`closed_part_frames`): with another
    length, a restart would cut the parts where they do not end and write over archived audio.
    --archive-part-seconds shapes a new archive only."""
    recorded = meta.get("part_frames")
    if not isinstance(recorded, int) or recorded < 1:  # a snapshot that does not say
        parts = parts_in(archive.folder)
        if len(parts) < 2 or not parts[0][1].is_file():
            return
        from wavegen.serve.archive_folder import closed_part_frames  # it imports this module

        recorded = closed_part_frames(parts[0][1], archive.sample_rate)
    if recorded >= 1 and recorded != archive.part_frames:
        logger.warning("archive %s: its parts are %g s each; it goes on with those (--archive-part-seconds "
                       "%g shapes a new archive only)", archive.folder, recorded / archive.sample_rate,
                       archive.part_frames / archive.sample_rate)
        archive.part_frames = recorded


def state_file(archive: Archive, path: Path) -> bool:
    """Whether a state file is at ``path`` (True too for a link to nothing: its read says so). Something
    else there (a folder, a FIFO: never opened, it would block) is refused, not taken for no file: an
    archive without a snapshot restarts from 0, over its parts."""
    if not os.path.lexists(path):
        return False
    kind = not_a_file(path)
    if kind is not None:
        raise archive._damaged(path, f"a {kind}, not a file")
    return True


def not_a_snapshot_file(path: Path) -> str | None:
    """What is at a snapshot's name ``path`` where it is something else than a file, as said after its path: "is
    a folder, not a snapshot file" (a FIFO, a device: never opened, it would block), "is a link to TARGET, which
    does not exist" (its read would say only "No such file" of the link's name, and a rename onto it replace the
    link); None otherwise."""
    kind = not_a_file(path)
    if kind is not None:
        return f"is a {kind}, not a snapshot file"
    nothing = link_to_nothing(path)
    return None if nothing is None else nothing[0].removeprefix(f"{path} ")


def snapshot_to_resume(archive: Archive) -> tuple[Path, dict[str, np.ndarray], int, dict, str | None] | None:
    """Looked at only: (the snapshot file read, its engine state, position and meta, None); where the newest
    cannot be gone on from (:func:`judged`: damaged, something else than a file at its name, a state that does
    not fit the engine) or is missing while the one it replaced (``snapshot.prev.npz``, render's
    :func:`~wavegen.render.writers.previous_snapshot`) can, that one's, with what is wrong with the newest
    (:func:`fall_back` puts it in place once all is checked); None where there is neither.
    ServeError naming the newest where it cannot be gone on from and the one before it cannot either."""
    snap = archive.state_dir / SNAPSHOT_FILE
    prev = previous_snapshot(snap)
    got = judged(archive, snap)
    if isinstance(got, tuple):
        return (snap, *got, None)
    what = got or "is missing"
    got_before = judged(archive, prev)  # looked at only where the newest cannot be gone on from
    if isinstance(got_before, tuple):
        return (prev, *got_before, what)
    if got is None and got_before is None:
        return None
    before = f"there is no snapshot before it ({prev.name})" if got_before is None else \
        f"the snapshot before it, {prev.name}, {got_before}"
    raise archive._damaged(snap, None, f"{snap} {what}, and {before}")


def judged(archive: Archive, path: Path) -> tuple[dict[str, np.ndarray], int, dict] | str | None:
    """The snapshot at ``path`` (engine state, position, meta) where it can be gone on from; else what is wrong
    with it, as said after its path: "is damaged (WHY)" (a state the engine does not take, or whose label is not
    its blend: ``archive.state_fits``, too), "is a folder, not a snapshot file" (a FIFO: never opened, it would
    block), "is a link to TARGET, which does not exist"; None where nothing is there."""
    if not os.path.lexists(path):
        return None
    what = not_a_snapshot_file(path)
    if what is not None:
        return what
    got = load(path)
    if isinstance(got, str):
        return f"is damaged ({got})"
    misfit = archive.state_fits(*got) if archive.state_fits is not None else None
    return f"is damaged ({misfit})" if misfit else got


def engine_fit(engine, label_state, folder: str | Path, kept=None):
    """→ ``Archive``'s ``state_fits(state, position, meta)``: None where a snapshot's engine ``state`` loads into
    ``engine`` (left holding it), the states ``kept`` (the station) keeps beside it load into it
    (:func:`kept_misfit`: --pitch-sync's, --postfilter's) and the label its ``meta`` records is the blend that state
    holds (``label_state``, the station's :class:`~wavegen.serve.control.LabelState`: its ``misfit``); else what
    does not fit, said. Checked while the archive opens, so a snapshot that does not fit is fallen back from as a
    damaged one. The one gone on from is the last judged: the engine holds it, and the station takes its label
    (``LabelState.adopt``) without loading or parsing it again. One of an older wavegen, which recorded no label,
    goes on with --label's blend (:func:`older_blend`)."""
    def state_fits(state: dict, position: int, meta: dict) -> str | None:
        try:
            engine.load_state_dict(state)
        except (KeyError, ValueError, TypeError, RuntimeError) as err:
            return f"its engine state does not fit this model's engine: {type(err).__name__}: {err}"
        misfit = kept_misfit(kept, state, position) if kept is not None else None
        if misfit:
            return misfit
        if "label" not in meta:
            older_blend(engine, label_state, state, folder)
        return label_state.misfit(meta, state)

    return state_fits


def kept_misfit(owner, state: dict, position: int) -> str | None:
    """Each state ``owner`` (the station) keeps beside the engine's (:func:`~wavegen.render.shard.kept_states`:
    --pitch-sync's, --postfilter's, where on) put at what a snapshot's entries hold; None where done, else what is
    wrong, as said after "is damaged (...)": an archive recorded with the option keeps its state in every snapshot,
    one held to the snapshot's position (--postfilter's, as render's snapshots are) taken at ``position``."""
    for prefix, flag, held, at_position in kept_states(owner):
        entries = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        now = held.state_dict()
        if set(entries) != set(now):
            return f"it holds no {flag} state"
        if any(np.shape(entries[k]) != np.shape(now[k]) for k in now):
            return f"its {flag} state is not one stream's"
        if at_position and int(entries["pos"]) != position:
            return f"its {flag} state is at sample {int(entries['pos'])}, the snapshot at {position}"
        held.load_state_dict(entries)
    return None


def older_blend(engine, label_state, state: dict, folder: str | Path) -> None:
    """A snapshot of an older wavegen (no label in its meta: no switch could be made then, so it holds --label's
    blend as that wavegen read it) loaded into ``engine``, whose blend is not the one --label reads as now (a
    label holding ',' or ':' was read as a blend then): the engine gets --label's (``label_state.weights``), said.
    The station reports --label (``LabelState.adopt`` keeps it where no label is recorded); playing another blend,
    its snapshots would record a label that is not their state's, which a restart takes for damaged ones. ``folder``:
    the archive, named in the warning."""
    if not label_state.labels or label_state.weights is None:
        return
    held = np.asarray(state.get("label_weights", np.zeros(0)), dtype=np.float32).reshape(-1)
    asked = np.asarray(label_state.weights, dtype=np.float32).reshape(-1)
    if held.shape != asked.shape or np.array_equal(held, asked):  # another shape: the engine refused it
        return
    apply_label(engine, asked)
    # the labels it holds only, each quoted (a name may hold spaces, ',' or ':'): a model of many labels would
    # list them all, most at 0, in a line of a thousand characters
    blend = ", ".join(f"{name!r} {weight:.3g}" for name, weight in zip(label_state.labels, held) if weight) or "none"
    logger.warning("archive %s: its snapshot, of an older wavegen (no label recorded), holds another blend of the "
                   "labels (%s) than --label %r reads as now: the stream goes on with --label's", folder, blend,
                   label_state.text)


def fall_back(archive: Archive, what: str, state: dict[str, np.ndarray], meta: dict) -> None:
    """The newest snapshot ``what`` (damaged, not fitting the engine, missing, or not a file), all checked: said,
    and the one before it (``state``, ``meta``) put in its place, as a render does
    (:func:`~wavegen.render.writers.load_snapshot`'s fallback): the next snapshot keeps it, not the damaged file, as
    its own fallback. Whatever was at its name (a damaged file, one that does not fit, a folder, a FIFO, a link to
    nothing) is moved aside first, named, not deleted: what went wrong can still be looked into. Where
    :func:`rotated_past` moved ``first_part`` up, or parts were said gone, the snapshot put in place records it
    (written again from ``state``): a server killed before its next snapshot does not leave the rotated parts to be
    said gone at the restart after, nor the parts said gone to be said again."""
    snap = archive.state_dir / SNAPSHOT_FILE
    prev = previous_snapshot(snap)
    aside = set_aside(snap)
    logger.warning("archive %s: %s %s%s; going on from the snapshot before it, %s, at %.1f s (the broadcast "
                   "after it is written again, the same samples)", archive.folder, snap, what, aside, prev.name,
                   archive.position / archive.sample_rate)
    if meta.get("first_part", 0) != archive.first_part or meta.get(GONE_SAID_KEY, []) != archive.gone_said:
        save_snapshot(snap, state, archive.position, {**meta, "first_part": archive.first_part,
                                                      GONE_SAID_KEY: archive.gone_said})
        prev.unlink()
    else:
        os.replace(prev, snap)
    fsync_dir(archive.state_dir)


def record_gone_said(archive: Archive, state: dict[str, np.ndarray], meta: dict) -> None:
    """Gone on from the newest snapshot (``state``, ``meta``), where the parts said gone at this restart are not the
    ones it records (some said now, or some brought back): written again recording them, all else as it was (as
    :func:`fall_back` does), so that a server killed before its next snapshot does not leave them to be said again
    at the restart after."""
    if meta.get(GONE_SAID_KEY, []) != archive.gone_said:
        save_snapshot(archive.state_dir / SNAPSHOT_FILE, state, archive.position,
                      {**meta, GONE_SAID_KEY: archive.gone_said})
        fsync_dir(archive.state_dir)


def set_aside(path: Path) -> str:
    """What is at a snapshot's name ``path`` and not gone on from (a damaged file, a folder, a FIFO, a link: the link
    itself, its target untouched) moved aside, not deleted (to ``NAME.damaged``, else ``NAME.damaged2``, ...)
    → " (moved to NAME.damaged)"; "" where nothing is there."""
    if not os.path.lexists(path):
        return ""
    moved = free_name(path.with_name(path.name + ".damaged"))
    os.replace(path, moved)
    return f" (moved to {moved.name})"


def clear_previous(archive: Archive) -> None:
    """Gone on from the newest snapshot: something else than a file where it moves the one it replaces, its next
    snapshot (``snapshot.prev.npz``: a folder would stop the server there, a FIFO be written over, a link to
    nothing be replaced) moved aside, said."""
    prev = previous_snapshot(archive.state_dir / SNAPSHOT_FILE)
    what = not_a_snapshot_file(prev)
    if what is not None:
        aside = set_aside(prev)
        logger.warning("archive %s: %s %s%s; the next snapshot keeps the one it replaces there", archive.folder,
                       prev, what, aside)


def rotated_past(archive: Archive, index: int, meta: dict) -> None:
    """Fallen back where parts rotate (--archive-keep-parts: this command's, or that of the server that wrote the
    snapshot fallen back to, its ``meta``'s KEEP_PARTS_KEY: a restart without the option after a rotation): the
    rotation after the damaged snapshot removed the oldest parts its record let go (never the part the one before
    it ends in, ``index``): ``first_part`` moves up to the oldest part there, said as the rotation's doing, not
    as parts gone. Only as far as a rotation keeping the fewest parts of those two could have removed them (the
    damaged snapshot ended at most in the newest part there): a part moved away that no rotation removed stays
    said gone, and is kept when it is brought back."""
    recorded = meta.get(KEEP_PARTS_KEY)
    keeps = [k for k in (archive.keep_parts, recorded) if isinstance(k, int) and not isinstance(k, bool) and k > 0]
    if not keeps:
        return
    indices = [k for k, _ in parts_in(archive.folder)]
    reach = max(indices, default=index) - min(keeps) + 1  # a rotation removed no part from here on
    there = [k for k in indices if archive.first_part <= k <= index]
    oldest = min(min(there, default=index), reach)
    if oldest > archive.first_part:
        logger.info("archive %s: the parts before %s were removed by the --archive-keep-parts rotation at the "
                    "damaged snapshot", archive.folder, part_path(archive.folder, oldest).name)
        archive.first_part = oldest


def load(path: Path) -> tuple[dict[str, np.ndarray], int, dict] | str:
    """The snapshot at ``path`` (engine state, position, meta), or what is wrong with it, as said. ServeError
    where this user may not read it (its permissions): not damaged, and not to be fallen back from (that would
    write over it and cut back the audio after the one before it), as params.json's."""
    try:
        state, position, meta = load_snapshot(path)
    except WavegenError as err:  # render's message tells a render what to do: restated for serve
        why = err.__cause__ or err
        if isinstance(why, PermissionError):
            raise ServeError(f"cannot read {path}: {why.strerror or why}; make it readable, or choose another "
                             "--archive") from None
        if isinstance(why, ValueError) and "pickle" in str(why):  # numpy's guess for a file that is no .npz
            return "not a snapshot wavegen serve wrote"
        return f"{type(why).__name__}: {why}"
    if not isinstance(meta, dict) or position < 0:
        return "its record of the archive is not one wavegen serve wrote"
    return state, position, meta


def check_parts(archive: Archive, index: int, frames: int) -> None:
    """The part the snapshot ends in (``index``) is there with its ``frames`` samples: the broadcast goes on
    in it. Earlier parts gone or cut short are said (:func:`~wavegen.serve.archive_folder.say_earlier_parts`),
    and the archive goes on."""
    from wavegen.serve.archive_folder import say_earlier_parts  # it imports this module

    say_earlier_parts(archive, index)
    path = part_path(archive.folder, index)
    if frames and not path.is_file():
        raise ServeError(f"{path} is missing but the archive's snapshot counts it: the archive was changed "
                         "since; choose another --archive")
    # a part the snapshot counts, or a new one's name holding more than a header (a killed server's new part has
    # a whole header at once): a file put there since (another's recording, a FLAC renamed) is not written over
    held = frames or (path.is_file() and path.stat().st_size > PCMWriter.HEADER_BYTES)
    other = flushed_samples(path, archive.sample_rate)[1] if held else None
    if other is not None:
        raise ServeError(f"{path} is {other}, where the archive wrote a mono {archive.sample_rate} Hz 16-bit WAV "
                         "part: the archive was changed since; put its part back to continue it, or "
                         "choose another --archive")
    if frames and path.stat().st_size < PCMWriter.HEADER_BYTES + 2 * frames:
        raise archive._short_part(path, frames)
