"""The render folder: its lock, its recorded parameters, the rerun check, --restart, the report.

``OUT/`` holds the audio (``stream_000.wav`` ...), a spectrogram PNG per stream and, once the
render is complete, ``render_report.json`` (naming its files relative to ``OUT``, so a rerun from
another directory, or of a copy of the folder, finds its own). While it runs, ``OUT/.state/`` holds
``params.json`` (everything that decides the audio, the numba engine's thread count included) and a
snapshot per process; ``OUT/.lock`` is held by the render's first process from start to end
(:class:`wavegen.folders.FolderLock`), so a second render into the same folder is refused at once,
naming the holder.

A rerun with the same parameters resumes (or, when complete, does nothing); any binding
parameter that differs is refused with both values named (``--backend auto`` as typed and as
resolved here: :mod:`wavegen.render.params_check`), until ``--restart``. A params.json damaged or gone is
written again from a snapshot, which records the same parameters (said), and ``--restart`` learns from one what
the render there wrote; snapshots gone while the WAVs (or a FLAC render's raw PCM, marked ``rank{r}.snapshotted``
once snapshotted) hold audio one vouched for are refused by :meth:`wavegen.render.shard.ShardRender.start`, not
rendered over. A finished render's report damaged since is written again where the folder proves the render
finished (:mod:`wavegen.render.folder_report`; beside snapshots of an unfinished render of these parameters it is set
aside and the render resumes), else refused naming it; a folder (or a FIFO, a device) at a stream's, its spectrogram's
or the report's name is refused, naming it, before anything is written (--restart removes files only).
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from pathlib import Path

from wavegen.errors import WavegenError, some_of
from wavegen.fileio import not_a_file, read_json_object, stale_temporaries, write_json
from wavegen.folders import FolderLock, ensure_folder, link_to_nothing
from wavegen.progress import counted
from wavegen.render.folder_report import (mend_damaged_report, recorded_params_in, stream_crc32s,
                                          with_stream_crc32)
from wavegen.render.model_change import TENSORS_KEY, with_recorded_tensors
from wavegen.render.params_check import check_params
from wavegen.render.settings import FORMATS, RenderStateError, RenderWriteError, estimate_bytes, stream_paths
from wavegen.render.writers import open_file_limit, recorded_meta

logger = logging.getLogger("wavegen.render")

STATE_DIR = ".state"
REPORT_FILE = "render_report.json"
PARAMS_FILE = "params.json"
STREAM_NAME = re.compile(r"stream_\d{3,}\.(wav|flac|png)")  # stream_paths' names, and their spectrograms


def _read_json(path: Path, what: str) -> dict:
    """A JSON object the render wrote; RenderStateError naming ``path`` (``what`` it is) when unreadable."""
    try:
        return read_json_object(path)
    except (OSError, ValueError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise RenderStateError(f"{path}: unreadable {what} ({reason}); rerun with --restart to start the "
                               "render over") from None


def remove_temporaries(stale: list[Path], where, why: str, log: logging.Logger = logger) -> None:
    """Lock held: remove ``stale``, atomic_write's leftovers of a killed writer (never read: found by
    :func:`~wavegen.fileio.stale_temporaries`), said once: "WHERE: removed NAMES, WHY" (render and serve's archive)."""
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("%s: removed %s, %s", where, ", ".join(p.name for p in stale), why)


def check_out(out_dir: Path) -> None:
    """RenderStateError (RenderWriteError for a file or a link to nothing) in one line naming ``out_dir`` where a
    render cannot go there: a file, a link to nothing, another wavegen command's folder (a model, a run, a corpus, a
    live stream's archive) or one inside a model, run or corpus, or a .state/ (:func:`wavegen.resolve_why.other_use`,
    serve's --archive check too), or a folder of audio files that holds no render (recordings: eval --renders judges
    every audio file there, and a prep of the folder would take the streams for recordings:
    :func:`wavegen.resolve_why.recordings`, serve's too). Looked at only: nothing is made or written."""
    from wavegen.resolve_why import other_use, recordings

    dangling = link_to_nothing(out_dir)
    if dangling is not None:
        raise RenderWriteError(f"--out {dangling[0]}: {dangling[1]}, or give another --out")
    if out_dir.exists() and not out_dir.is_dir():
        kind = not_a_file(out_dir) or "file"  # a device, a FIFO: not a file either
        raise RenderWriteError(f"--out {out_dir} is a {kind}, not a folder: give a folder for the render's "
                               "stream_000.wav ... (a new name is created)")
    held = other_use(out_dir, "render")
    if held is not None:
        where = "outside it" if held.lies_inside else "e.g. a new folder"
        raise RenderStateError(f"--out {out_dir}: {held.words}; a render there would mix its files (stream_000.wav "
                               f"..., render_report.json, .state/, .lock) into it: choose another --out, {where}")
    audio = recordings(out_dir, "render")
    if audio:
        raise RenderStateError(f"--out {out_dir} holds audio files ({some_of(audio)}) and no render: eval --renders would "
                               f"judge them as the render's, and a wavegen prep of the folder would take the render's "
                               "streams for recordings: choose another --out, e.g. a new folder")


class RenderFolder:
    """``out_dir`` of a render of ``streams`` streams in ``fmt``: paths, lock, parameters, report. Made, it has
    checked ``out_dir`` (:func:`check_out`), before the render loads its model."""

    def __init__(self, out_dir: str | Path, streams: int, fmt: str, backend: str | None = None,
                 spectrogram: bool = False):
        """``backend``: --backend as typed ("auto"), named beside the backend it resolved to where a resume's
        differs; ``spectrogram``: whether the render writes a PNG beside each stream."""
        self.out_dir = Path(out_dir)
        self.backend_asked = backend
        check_out(self.out_dir)
        self.state_dir = self.out_dir / STATE_DIR
        self.params_path = self.state_dir / PARAMS_FILE
        self.report_path = self.out_dir / REPORT_FILE
        self.streams, self.format = streams, fmt
        self.paths = stream_paths(self.out_dir, streams, fmt)
        self._refuse_what_is_no_file(spectrogram)
        self._lock: FolderLock | None = None

    def _refuse_what_is_no_file(self, spectrogram: bool) -> None:
        """RenderStateError naming a folder, FIFO or device at a name the render writes (a stream, its spectrogram
        where ``spectrogram``, the report): its write would fail once every stream is rendered, and --restart (which
        removes files only, the finished streams among them) would not clear it."""
        named = [(p, "stream file", "its stream") for p in self.paths]
        named.append((self.report_path, "report file", "its report at the end"))
        if spectrogram:
            named += [(p.with_suffix(".png"), "spectrogram file", "a stream's spectrogram") for p in self.paths]
        for path, what, thing in named:
            kind = not_a_file(path)
            if kind is not None:
                raise RenderStateError(f"{path} is a {kind}, not a {what}: the render writes {thing} there; "
                                       f"move or rename that {kind}, or choose another --out")

    # ----- the lock -----

    def lock(self) -> None:
        """Create the folder and hold its lock (FolderBusyError naming the holder when taken)."""
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise RenderWriteError(f"--out {self.out_dir} is a file, not a folder: give a folder for the "
                                   "render's stream_000.wav ... (a new name is created)")
        try:
            ensure_folder(self.out_dir, "render output")
            self._lock = FolderLock(self.out_dir, "render").acquire()
        except OSError as err:
            raise self.io_error(Path(err.filename or self.out_dir), err) from err
        except WavegenError as err:
            if type(err) is not WavegenError:  # FolderBusyError: already says it all
                raise
            raise RenderWriteError(f"{err}; nothing was written") from None

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ----- paths -----

    def snapshot_path(self, rank: int) -> Path:
        return self.state_dir / f"rank{rank}.npz"

    def snapshotted_path(self, rank: int) -> Path:
        """The mark a FLAC render's process ``rank`` leaves once it saved a snapshot: its raw PCM holds audio a
        snapshot vouched for (a WAV's header counts it instead), so that PCM without a snapshot is refused."""
        return self.state_dir / f"rank{rank}.snapshotted"

    def work_paths(self, ids) -> list[Path]:
        """What stream ids ``ids`` are written to while rendering: the WAVs, or raw PCM under .state for FLAC."""
        if self.format == "wav":
            return [self.paths[i] for i in ids]
        return [self.state_dir / f"stream_{i:03d}.pcm" for i in ids]

    def io_error(self, path: Path, err: BaseException, written: int | None = None,
                 sample_rate: int | None = None) -> RenderWriteError:
        """The error for a failed write of ``path``, saying what is intact (``written`` samples per stream)."""
        reason = getattr(err, "strerror", None) or str(err) or f"{type(err).__name__} (no reason given)"
        intact = "nothing was written yet" if not written else \
            f"{written / sample_rate:.1f} s of each stream written so far are intact"
        code = getattr(err, "errno", None)
        if code == errno.EMFILE:
            limit = open_file_limit()
            return RenderWriteError(
                f"cannot write {path}: {reason}: the render keeps a file open per stream and reached this "
                f"process's open-file limit ({'unlimited' if limit is None else limit}); {intact}; raise it with "
                "ulimit -n (or render fewer streams per folder) and rerun the same command to resume")
        if code == errno.ENOENT and written is not None and not self.out_dir.is_dir():
            # moved or renamed while the render ran (its files went with it): "rerun the same command" would
            # begin a new render at the old name
            intact = "nothing was written yet" if not written else \
                f"{written / sample_rate:.1f} s of each stream written so far are intact in it, wherever it went"
            return RenderWriteError(
                f"cannot write {path}: the render's folder {self.out_dir} is gone (moved, renamed or removed while "
                f"the render ran); {intact}; rerun the command with --out naming its new place to resume")
        if code == errno.ENFILE:
            return RenderWriteError(f"cannot write {path}: {reason}: the system's table of open files is full; "
                                    f"{intact}; close other programs' files and rerun the same command to resume")
        return RenderWriteError(f"cannot write {path}: {reason}; {intact}; free space (or make the folder "
                                "writable) and rerun the same command to resume")

    # ----- what the folder holds -----

    def completed_report(self, params: dict) -> dict | None:
        """The report of a finished render of these ``params`` (None when there is none).

        RenderStateError when it is a render of other parameters, or a file it wrote is gone.
        """
        if not self.report_path.is_file():
            return None
        report = _read_json(self.report_path, "render report")
        if report.get("status") != "complete":
            return None
        check_params(report.get("params", {}), params, self.out_dir, self.backend_asked, finished=True)
        report = self.located(report)
        missing = [p for p in report["paths"] if not Path(p).is_file()]
        if missing:
            raise RenderStateError(f"{self.out_dir} holds a finished render but {missing[0]} is gone; "
                                   "pass --restart to render it again")
        return report

    def warn_if_changed(self, report: dict) -> None:
        """A warning naming each file of a finished ``report`` whose size is not the one the render wrote
        (cut short by a copy, edited): the rerun does not say "complete" of it silently. A report of an
        older wavegen records no sizes."""
        sizes = report.get("file_bytes")
        if not isinstance(sizes, list) or len(sizes) != len(report["paths"]):
            return
        for path, size in zip(report["paths"], sizes):
            now = Path(path).stat().st_size
            if now != size:
                logger.warning("%s: %s, not the %d this render wrote: it was changed since it finished; "
                               "pass --restart to render it again", path, counted(now, "byte"), size)

    def located(self, report: dict) -> dict:
        """``report`` with its files as paths in this ``out_dir`` (as given now), from the names the
        report file holds; an older report's full or relative paths are taken by their file name."""
        names = report.get("paths") or [p.name for p in self.paths]
        return {**report, "paths": [str(self.out_dir / Path(p).name) for p in names],
                "spectrograms": [str(self.out_dir / Path(p).name) for p in report.get("spectrograms", [])]}

    def saved_params(self) -> dict | None:
        """The parameters recorded under .state (None when no render was started here)."""
        if not self.params_path.is_file():
            return None
        return _read_json(self.params_path, "render parameters file")

    def recorded(self, key: str) -> tuple[object, bool | None]:
        """(``key`` of the parameters the render here recorded: its report's when it is complete, else those
        under .state; None where there is none), whether it is complete: None where that is not known (a damaged
        report recording no parameters, beside the .state/ a kill left: its rerun resumes the render, or finds it
        finished and writes the report again). An unreadable report or parameters file gives (None, False): the
        rerun check names it."""
        try:
            report = self._report_or_its_params() if self.report_path.is_file() else {}
            if report is not None and report.get("status") == "complete":
                return report.get("params", {}).get(key), True
            return (self._recorded_params()[0] or {}).get(key), None if report is None else False
        except (RenderStateError, AttributeError):  # AttributeError: "params" is not an object
            return None, False

    def _report_or_its_params(self) -> dict | None:
        """The report; where it is damaged, the finished render's parameters its readable part still holds
        (:func:`~wavegen.render.folder_report.recorded_params_in`) as {"status": "complete", "params": ...}, else
        None (.state/ is asked then)."""
        try:
            return read_json_object(self.report_path)
        except (OSError, ValueError):
            params = recorded_params_in(self.report_path)
            return None if params is None else {"status": "complete", "params": params}

    def wipe(self) -> None:
        """--restart: remove what a render writes here (state, audio, PNGs, report) by their exact names,
        for this render's stream count and format and those recorded by the render before; nothing else."""
        removed = []
        layouts, learned = self._recorded_layouts()
        for name in sorted(self._names_of(layouts)):  # .state/ last: a --restart killed in between still has its record
            path = self.out_dir / name
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(name)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            removed.append(STATE_DIR)
        if removed:
            logger.info("--restart: removed %s from %s%s", ", ".join(sorted(removed)), self.out_dir, learned)
        left = sorted(p.name for p in self.out_dir.glob("stream_*") if STREAM_NAME.fullmatch(p.name) and not p.is_dir())
        if left:  # a render's names that no readable record (params.json, report, snapshot) says it wrote
            logger.warning("--restart: left %s in %s: no readable record there (%s/%s, its snapshots, %s) names "
                           "them as a render's; remove them yourself if a render wrote them: eval --renders judges "
                           "every audio file in the folder", some_of(left), self.out_dir, STATE_DIR, PARAMS_FILE,
                           REPORT_FILE)

    def _written_names(self) -> set[str]:
        """The names of the files in OUT a render writes: the streams (and their PNGs) of this render and
        of the one recorded (:meth:`_recorded_layouts`), and the report."""
        return self._names_of(self._recorded_layouts()[0])

    def _names_of(self, layouts: set[tuple[int, str]]) -> set[str]:
        names = {REPORT_FILE}
        for streams, fmt in layouts:
            for path in stream_paths(self.out_dir, streams, fmt):
                names.update((path.name, path.with_suffix(".png").name))
        return names

    def _recorded_layouts(self) -> tuple[set[tuple[int, str]], str]:
        """({(streams, format)} of this render and of the one recorded in .state/params.json or
        render_report.json (maybe more streams, another format); where params.json is unreadable or gone, the
        layout its snapshots recorded (the same parameters)), and where so, how that was learned, as said."""
        layouts, learned, records = {(self.streams, self.format)}, "", []
        for path in (self.params_path, self.report_path):
            try:
                record = read_json_object(path)
            except (OSError, ValueError) as err:  # none, or unreadable: its layout is not known
                if path == self.report_path:  # a damaged report's readable part may still record it
                    params = recorded_params_in(path)
                    records += [] if params is None else [params]
                    continue
                params, name = self._snapshot_params()
                if params is not None:
                    records.append(params)
                    what = "is gone" if isinstance(err, FileNotFoundError) else "is unreadable"
                    layout = counted(params.get("streams"), f"{params.get('format')} stream")
                    learned = (f" (the render there was of {layout}, as its snapshot {name} recorded: "
                               f"{PARAMS_FILE} {what})")
                continue
            records.append(record.get("params", record))
        for params in records:
            streams, fmt = (params.get("streams"), params.get("format")) if isinstance(params, dict) else (0, 0)
            if isinstance(streams, int) and not isinstance(streams, bool) and fmt in FORMATS:
                layouts.add((streams, fmt))
        return layouts, learned

    def remove_stale_temporaries(self) -> None:
        """Lock held: the partial files a render killed mid-write left (a FLAC or PNG being encoded, a
        snapshot being saved: atomic_write's temporaries, never read): they would stay for good."""
        remove_temporaries(stale_temporaries(self.out_dir, self._written_names()) + stale_temporaries(self.state_dir),
                           self.out_dir, "left partial by a render that was killed while writing it")

    def prepare(self, params: dict, restart: bool, progress: bool = False) -> dict | None:
        """First process, lock held: check (or wipe) what the folder holds, record ``params``; ``progress``: a
        progress bar over a long check (a damaged report's FLAC streams decoded to the end).

        Returns the report when this render is already complete, else None.
        """
        self.remove_stale_temporaries()
        if restart:
            self.wipe()
        mend_damaged_report(self, params, progress)
        done = self.completed_report(params)
        if done is not None:
            self._remove_finished_state()
            return done
        saved, lost = self._recorded_params()
        if saved is not None:
            check_params(saved, params, self.out_dir, self.backend_asked)
            if lost is not None:
                self._write_params_again(saved, lost)
            self._record_tensors(saved, params)
            if "threads" not in saved and params.get("threads") is not None:
                logger.warning("%s: started before renders recorded their thread count; resuming on %s (if it "
                               "was started on another count, its streams may differ from an uninterrupted render)",
                               self.out_dir, counted(params["threads"], "thread"))
            return None
        foreign = [p for p in self.paths if p.exists()]
        if foreign:
            raise RenderStateError(f"{foreign[0]} exists and is not part of a resumable render; pass "
                                   "--restart to overwrite it, or choose another --out")
        try:
            self.state_dir.mkdir(exist_ok=True)
            write_json(self.params_path, params, indent=1)
        except OSError as err:
            raise self.io_error(Path(err.filename or self.state_dir), err) from err
        return None

    def _write_params_again(self, params: dict, lost: tuple[str, str]) -> None:
        """params.json damaged, unreadable or gone (``lost``: what is wrong with it, the snapshot read instead,
        :meth:`_recorded_params`), ``params`` its snapshot's, checked: said, and written again from them."""
        logger.warning("%s %s; resuming with the parameters the render's snapshot %s recorded (params.json "
                       "written again from them)", self.params_path, *lost)
        try:
            write_json(self.params_path, params, indent=1)
        except OSError as err:
            raise self.io_error(Path(err.filename or self.params_path), err) from err

    def _recorded_params(self) -> tuple[dict | None, tuple[str, str] | None]:
        """Looked at only: (the parameters params.json holds, None), or, where it is damaged, unreadable or gone
        while a snapshot is readable (:meth:`_snapshot_params`), (the snapshot's, (what is wrong with params.json,
        the snapshot's name)). RenderStateError naming params.json where it is unreadable and no snapshot is;
        (None, None): no render was started here."""
        if not self.params_path.is_file():
            if not self.state_dir.is_dir():
                return None, None
            what = "is gone"
        else:
            try:
                return read_json_object(self.params_path), None
            except (OSError, ValueError) as err:
                what = f"is unreadable ({getattr(err, 'strerror', None) or err})"
        params, name = self._snapshot_params()
        if params is None:  # no snapshot either: params.json's refusal, or a folder with no render
            return self.saved_params(), None
        return params, (what, name)

    def _snapshot_params(self) -> tuple[dict | None, str | None]:
        """(The parameters a snapshot under .state recorded, its name): the first process's, else another's (every
        process records the same), each newest else the one it replaced; (None, None) where none is readable."""
        if not self.state_dir.is_dir():
            return None, None
        ranks = {0} | {int(p.name[4:].split(".")[0]) for p in self.state_dir.glob("rank*.npz")
                       if p.name[4:].split(".")[0].isdigit()}
        for rank in sorted(ranks):
            meta, name = recorded_meta(self.snapshot_path(rank))
            params = meta.get("params") if isinstance(meta, dict) else None
            if isinstance(params, dict):
                return params, name
        return None, None

    def _remove_finished_state(self) -> None:
        """A finished render's .state/ that is still there (its render was killed while write_report removed it,
        after the report was written): its snapshots and raw PCM (as large as the FLAC streams' audio) serve
        nothing now, and no later run would remove them."""
        if self.state_dir.is_dir() and not self.state_dir.is_symlink():
            shutil.rmtree(self.state_dir, ignore_errors=True)
            if self.state_dir.exists():
                logger.warning("%s: cannot remove %s, left by the finished render (it was stopped while removing "
                               "it); the render is complete: remove it yourself", self.out_dir, self.state_dir)
            else:
                logger.info("%s: removed %s, left by the finished render (it was stopped while removing it)",
                            self.out_dir, STATE_DIR)

    def _record_tensors(self, saved: dict, params: dict) -> None:
        """A render begun before renders recorded their model's tensors (``saved`` without TENSORS_KEY), resumed
        from the very weights file it began with: its params.json gains their digest, so that once best/ is
        gone or replaced, the checkpoint holding the same tensors is named, and resumes it."""
        if saved.get(TENSORS_KEY) is not None or params.get(TENSORS_KEY) is None or \
                saved.get("model_sha256") != params.get("model_sha256"):
            return
        try:
            write_json(self.params_path, {**saved, TENSORS_KEY: params[TENSORS_KEY]}, indent=1)
        except OSError as err:
            raise self.io_error(Path(err.filename or self.params_path), err) from err

    def with_recorded_tensors(self, snapshot_params: dict) -> dict:
        """A snapshot's parameters, with the tensors digest params.json gained (_record_tensors) where the snapshot
        was written before it of the same weights file (model_change.with_recorded_tensors)."""
        return with_recorded_tensors(snapshot_params, self.saved_params())

    def warn_if_short_of_space(self, total: int) -> None:
        """Warn when the rest of a render of ``total`` samples per stream may not fit on the disk."""
        needed = estimate_bytes(self.streams, total, self.format)
        for path in self.work_paths(range(self.streams)) + self.paths:
            if path.is_file():
                needed -= path.stat().st_size
        free = shutil.disk_usage(self.out_dir).free
        if needed > free:
            logger.warning("%s: this render needs about %s more and its disk has %s free; it will stop with its "
                           "files intact when the disk is full (free space, then rerun to resume)",
                           self.out_dir, _size(needed), _size(free))

    # ----- the end -----

    def write_report(self, report: dict, total: int, sample_rate: int) -> None:
        """``report`` → render_report.json (its "paths" and "spectrograms": file names in OUT, so the
        folder can be moved, or rerun from another directory); then .state goes."""
        report["file_bytes"] = [p.stat().st_size for p in self.paths]  # a rerun tells a file changed since
        # each stream's CRC-32, from its process's finished snapshot: a damaged report is written again only over
        # the render's own files (folder_report), not another program's of the same length
        metas = [recorded_meta(self.snapshot_path(rank))[0] or {} for rank in range(report.get("processes") or 1)]
        with_stream_crc32(report, stream_crc32s(metas, self.streams))
        try:
            write_json(self.report_path, report, indent=1)
        except OSError as err:
            raise self.io_error(self.report_path, err, total, sample_rate) from err
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _size(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
