"""Training samples: hear the model while it trains.

Every ``train.sample_interval`` steps (0, the default: at validation steps, at most every
DEFAULT_MIN_STEPS steps; negative: never) and at the last step, the main process renders ``train.sample_seconds`` of
``train.sample_streams`` streams (a conditioned model: one stream per label, up to
LABEL_STREAMS) from the current weights with the fastest engine on the training device
(:func:`wavegen.generate.make_engine`, backend auto: numba on a CPU, cuda on a GPU where it is
built, torch otherwise) into::

    RUN/samples/step_N/stream_000.wav ...  16-bit WAV (the render's PCM writer)
    RUN/samples/step_N/stream_000.png ...  spectrogram (wavegen.plotting)
    RUN/samples/step_N/samples.json        what was drawn, how fast, and cheap features per stream

and into TensorBoard (``samples/stream_K`` audio and images, ``samples/*`` scalars). The random
numbers are ``uniforms(train.seed, stream, position)``: the same at every step, so two steps'
samples differ by their weights only, and the same a render draws, so an unconditioned model's
samples at a kept checkpoint are ``wavegen render RUN --checkpoint step_N --seed SEED --streams K
--seconds S --no-guard`` (same backend), to be continued at any length. The folder is written
under a temporary name and renamed: a kill leaves no half folder. The samples of a step past the
checkpoint a run starts from (0 when it starts anew) belong to a session that no longer exists (killed
before its next checkpoint, or an earlier start): the weights that drew them are gone, and the resumed
run's differ wherever its arithmetic does (``train.mixed_precision``, ``grad_accum``, the process or
thread count), so they go when the run starts and are drawn again when it gets there: wavegen's own
step folders are removed, a folder holding anything else is moved aside to ``step_N.earlier``
(nothing of the user's is deleted). samples.json records the run's key (:func:`run_key`). Samples never
stop the training: a failure to draw or write a set warns and training goes on; where RUN/samples cannot hold
them at all (a file in the way, a link to nowhere or to a name too long, a folder that cannot be made or
written), that is said once at the start, with the reason, and no set is drawn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wavegen.fileio import free_name, fsync_dir, read_json_object, write_json
from wavegen.progress import counted

logger = logging.getLogger(__name__)

SAMPLES_DIR = "samples"
SAMPLES_FILE = "samples.json"
LABEL_STREAMS = 8  # a conditioned model's samples: its first this many labels, one stream each
# The default cadence: validation steps, but no more often than this. Measured (samplernn-tiny on
# one CPU thread, 0.17 s a step, validation every 100 steps): a set of 2 x 4 s costs ~2.6 CPU-s, so
# sampling at each of its validations made training 9-17% slower; every 500 steps, over 3000 steps, the
# sets took 1.7% of the run and the total CPU time did not move (docs/BENCHMARKS.md).
DEFAULT_MIN_STEPS = 500
# The samples are drawn this much audio at a time: a signal is answered between two draws, not once the set is
# drawn (numba's engine holds the interpreter for a whole call: a 4 s set of samplernn-3tier on one CPU core, one
# call of 88 s, left a Ctrl-C unanswered that long, and a second Ctrl-C meanwhile was lost, taken with the first)
DRAW_SECONDS = 0.25


class TrainingSamples:
    """The samples of one run. ``due(step)`` is the same answer on every process (it gates a block
    with collectives); ``write(step, model)`` renders on the main process only."""

    def __init__(self, run_dir: Path, train_cfg, device, sample_rate: int, main: bool, log=None,
                 album: dict | None = None, run: str | None = None, start_step: int = 0):
        """``run``: :func:`run_key` of the run's config (recorded in samples.json); ``start_step``: the step
        of the checkpoint the run resumes from (0: it starts anew), past which every step folder here is
        a stopped session's and goes (:meth:`_discard`)."""
        self.dir = Path(run_dir) / SAMPLES_DIR
        self.cfg, self.device, self.sample_rate, self.main = train_cfg, device, int(sample_rate), main
        self.log, self.album, self.run = log, album, run
        # RUN/samples unusable: said once here, not after rendering each set to fail writing it (due() stays as
        # it is on every process, since it gates collectives)
        self.blocked = main and self.interval() is not None and not self._ready()
        if main and not self.blocked and _is_dir(self.dir):
            for stale in self.dir.glob(".tmp_step_*"):  # a kill mid-sample
                shutil.rmtree(stale, ignore_errors=True)
            stopped = [step for step in _step_folders(self.dir) if step > start_step]
            for step in stopped:
                try:
                    self._discard(self.dir / f"step_{step}")
                except OSError as err:  # samples are for people: a failure must not stop the training
                    logger.warning("%s: samples of a stopped session, not cleared (%s); they are drawn again when "
                                   "this run reaches step %d", self.dir / f"step_{step}", err, step)
            if stopped:
                logger.info("cleared the samples of %s past step %d (%s, whose weights are gone) from %s; "
                            "they are drawn again as the run gets there", counted(len(stopped), "step"), start_step,
                            "an earlier start" if start_step == 0 else "of a session stopped before its checkpoint, "
                            "or of a later checkpoint removed or found damaged", self.dir)

    def _ready(self) -> bool:
        """Make RUN/samples and write in it; False (warned, once) where it cannot hold samples: a file in the
        way, a link to nowhere or to a name too long, a folder that cannot be made or written. Samples are for
        people: this never stops the training."""
        try:
            if self.dir.exists() and not self.dir.is_dir():
                logger.warning("%s: not a folder (the run's training samples go there): no samples are drawn, "
                               "training goes on; move it away (or turn samples off with train.sample_interval=-1)",
                               self.dir)
                return False
            # through a link: the folder it names (a link to a folder not made yet is made, not refused)
            Path(os.path.realpath(self.dir)).mkdir(parents=True, exist_ok=True)
            # a file made there and removed (as wavegen.cli.options.check_output_file's): folders.check_writable's
            # error advises another --run folder, wrong here, where the run goes on in this one
            with tempfile.NamedTemporaryFile(dir=self.dir, prefix=".wavegen-probe-"):
                pass
        except OSError as err:
            link = f" (a link to {os.readlink(self.dir)})" if _is_link(self.dir) else ""
            logger.warning("%s%s: the run's training samples cannot be written there (%s): no samples are drawn, "
                           "training goes on; make %s a folder this user can write in (or a link to one), or turn "
                           "samples off with train.sample_interval=-1", self.dir, link, err.strerror or err, self.dir)
            return False
        return True

    def interval(self) -> int | None:
        """Steps between samples: ``train.sample_interval``, or for 0 the first multiple of
        ``train.val_interval`` that is at least DEFAULT_MIN_STEPS; None when samples are off."""
        if self.cfg.sample_interval < 0:
            return None
        if self.cfg.sample_interval > 0:
            return self.cfg.sample_interval
        val = self.cfg.val_interval
        return val * -(-DEFAULT_MIN_STEPS // val)

    def due(self, step: int) -> bool:
        interval = self.interval()
        return interval is not None and (step % interval == 0 or step == self.cfg.max_steps)

    def write(self, step: int, model) -> Path | None:
        """Render and write step ``step``'s samples from ``model`` (the plain nn.Module). → the folder,
        or None (not the main process, or a failure: warned, never raised)."""
        if not self.main or self.blocked:
            return None
        final = self.dir / f"step_{step}"
        tmp = self.dir / f".tmp_step_{step}"
        try:
            if final.exists():  # a stopped session's, not cleared at the start: never shown as this one's
                logger.info("%s: samples of a stopped session; drawing them again", final)
                self._discard(final)
            return self._write(step, model, tmp, final)
        except Exception as err:  # noqa: BLE001 - samples are for people: a failure must not stop the training
            logger.warning("samples of step %d failed (%s: %s); training goes on", step, type(err).__name__, err)
            logger.debug("samples of step %d", step, exc_info=True)
            shutil.rmtree(tmp, ignore_errors=True)
            return None

    def _write(self, step: int, model, tmp: Path, final: Path) -> Path:
        from wavegen.audio import float_to_int16
        from wavegen.render.album import window_features
        from wavegen.render.settings import stream_paths
        from wavegen.render.writers import PCMWriter

        tick = time.perf_counter()
        audio, labels, backend = self.render(model)
        render_seconds = time.perf_counter() - tick
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        streams = []
        for k, path in enumerate(stream_paths(tmp, len(audio), "wav")):
            writer = PCMWriter(path, self.sample_rate)
            writer.write(float_to_int16(audio[k]))
            writer.close()
            features = window_features(audio[k], self.sample_rate)
            streams.append({"file": path.name, "label": labels[k] if labels else None,
                            "spectrogram": _spectrogram(path),
                            **{key: features[key] for key in ("rms_db", "flatness", "periodic_fraction", "change")}})
        record = {"step": step, "run": self.run, "seed": self.cfg.seed, "backend": backend,
                  "sample_rate": self.sample_rate, "seconds": self.cfg.sample_seconds,
                  "render_seconds": render_seconds, "streams": streams}
        write_json(tmp / SAMPLES_FILE, record)
        fsync_dir(tmp)
        tmp.rename(final)
        fsync_dir(self.dir)
        self._report(step, final, record, time.perf_counter() - tick)
        self._log(step, final, record, float_to_int16(audio) / 32768.0)  # as the WAV files hold it
        return final

    def _discard(self, folder: Path) -> None:
        """Step ``folder`` out of the way of this run's samples: removed when it holds wavegen's files only
        (samples.json and the files it lists), else moved aside to ``step_N.earlier`` (``.earlier2``, ...)."""
        if _own_files_only(folder):
            shutil.rmtree(folder)
            return
        target = free_name(folder.with_name(folder.name + ".earlier"))
        folder.rename(target)
        logger.warning("%s holds files wavegen did not write: moved aside to %s (delete it once you no longer need "
                       "it)", folder, target)

    def render(self, model) -> tuple[np.ndarray, list[str] | None, str]:
        """The current weights → (audio [B, n] float32 in [-1, 1], the label of each stream or None,
        the backend used)."""
        from wavegen.audio import dequantize
        from wavegen.generate import make_engine, uniforms

        labels = list(getattr(model.config, "labels", []) or [])[:LABEL_STREAMS]
        streams = len(labels) or self.cfg.sample_streams
        n = max(1, int(round(self.cfg.sample_seconds * self.sample_rate)))
        with torch.no_grad():
            engine = make_engine(model, streams, "auto", self.device)
        engine.reset(label_weights=np.eye(len(engine.labels), dtype=np.float32)[:streams] if labels else None)
        step = max(1, int(round(DRAW_SECONDS * self.sample_rate)))  # (the engine goes on where its last draw ended)
        codes = np.concatenate([engine.generate(uniforms(self.cfg.seed, range(streams), start, min(step, n - start)),
                                                np.ones(streams, dtype=np.float32)) for start in range(0, n, step)],
                               axis=1)
        audio = dequantize(codes, engine.q_levels, engine.spec["quantization"])
        return audio, labels or None, engine.backend

    def _report(self, step: int, folder: Path, record: dict, seconds: float) -> None:
        periodic, flatness = _summary(record)
        album = (self.album or {}).get("features", {})
        vs = lambda name: f" (album {album[name]['p50']:.3g})" if album.get(name) else ""  # noqa: E731
        logger.info("step %d: %s x %.1f s in %.1f s (%s) → %s; periodic %.2f%s, flatness %s%s", step,
                    counted(len(record["streams"]), "sample"), record["seconds"], seconds, record["backend"], folder,
                    periodic, vs("periodic_fraction"), "-" if flatness is None else f"{flatness:.3g}", vs("flatness"))

    def _log(self, step: int, folder: Path, record: dict, audio: np.ndarray) -> None:
        """The samples in TensorBoard: audio [B, n] float, the spectrograms, the summary scalars."""
        if self.log is None:
            return
        periodic, flatness = _summary(record)
        self.log.samples(step, audio, self.sample_rate, [folder / s["spectrogram"] if s["spectrogram"] else None
                                                         for s in record["streams"]],
                         {"periodic_fraction": periodic, "flatness": flatness})


def _summary(record: dict) -> tuple[float, float | None]:
    """A samples.json record → (mean periodic fraction, median flatness or None) over its streams."""
    streams = record["streams"]
    flat = [s["flatness"] for s in streams if s["flatness"] is not None]
    return float(np.mean([s["periodic_fraction"] for s in streams])), float(np.median(flat)) if flat else None


def _spectrogram(wav: Path) -> str | None:
    """The spectrogram PNG of ``wav`` beside it → its file name; None where it cannot be drawn here."""
    from wavegen.plotting import spectrogram_png

    try:
        png = spectrogram_png(wav, wav.with_suffix(".png"))
    except ImportError as err:  # soundfile missing (e.g. a GPU machine): the audio is what matters
        logger.debug("no spectrogram: %s", err)
        return None
    return png.name if png is not None else None


def run_key(config: dict) -> str:
    """What makes a run's samples its own, apart from the weights: a hash of its model, its corpus
    (content id) and the train settings it may not change on a resume (trainstate.RESUMABLE_CHANGES)."""
    from wavegen.trainstate import RESUMABLE_CHANGES

    data = config.get("data", {})
    fixed = {"model_type": config.get("model_type"), "model": config.get("model"),
             "corpus": data.get("corpus_id", data.get("corpus")),
             "train": {k: v for k, v in config.get("train", {}).items() if k not in RESUMABLE_CHANGES}}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]


def _is_link(path: Path) -> bool:
    try:
        return path.is_symlink()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where it cannot even be looked at (a name too long, no permission)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _step_folders(folder: Path) -> list[int]:
    """The steps of the ``step_N`` folders in ``folder`` (samples folder), in order."""
    steps = []
    for child in folder.glob("step_*") if _is_dir(folder) else []:
        suffix = child.name[len("step_"):]
        if suffix.isdigit() and child.is_dir():
            steps.append(int(suffix))
    return sorted(steps)


def _record(folder: Path) -> dict | None:
    """Step ``folder``'s samples.json; None where it cannot be read or holds no JSON object."""
    try:
        return read_json_object(folder / SAMPLES_FILE)
    except (OSError, ValueError):
        return None


def _own_files_only(folder: Path) -> bool:
    """Whether ``folder`` holds nothing but samples.json and the files it lists (wavegen's own)."""
    try:
        streams = _record(folder)["streams"]
        listed = {SAMPLES_FILE} | {name for s in streams for name in (s["file"], s.get("spectrogram")) if name}
        return all(child.is_file() and child.name in listed for child in folder.iterdir())
    except (OSError, KeyError, TypeError, AttributeError):
        return False


def sample_steps(run_dir: str | Path) -> list[int]:
    """The steps whose samples a run folder holds, in order."""
    folder = Path(run_dir) / SAMPLES_DIR
    return [step for step in _step_folders(folder) if (folder / f"step_{step}" / SAMPLES_FILE).is_file()]


def read_samples(run_dir: str | Path, step: int) -> dict:
    """``RUN/samples/step_N/samples.json`` as a dict."""
    return json.loads((Path(run_dir) / SAMPLES_DIR / f"step_{step}" / SAMPLES_FILE).read_text())
