"""Long-form rendering: hours of audio, many streams, resumable, guarded.

``render(model, out_dir, RenderSettings(seconds=..., streams=N))`` writes
``out_dir/stream_000.wav`` ... block by block from one batched engine, so memory stays flat
however long the render. Uniforms come from :func:`wavegen.generate.uniforms` keyed by
(seed, stream id, position, attempt): the same command gives byte-identical files whatever
the block size, the number of processes, or how often the render was interrupted.

The package, one job per module:

- :mod:`~wavegen.render.settings`: RenderSettings and its checks (lengths each format can
  hold), the inputs (label blend, prime), stream sharding; the render's error classes.
- :mod:`~wavegen.render.folder`: the output folder: its lock (one render at a time), the
  recorded parameters, ``--restart``, the report file.
- :mod:`~wavegen.render.params_check`: the rerun check: recorded parameters against this command's,
  the first that differs named as typed.
- :mod:`~wavegen.render.model_change`: whether a resume renders the model the render began with (the
  same tensors, in best/ or a checkpoint); a resume whose model changed or is gone (a run's best/
  replaced or deleted): the refusal, naming the kept checkpoint of the weights the render began with.
- :mod:`~wavegen.render.writers`: the PCM writer, snapshots, FLAC encoded at the end.
- :mod:`~wavegen.render.guard`: the criteria of a failed window, the verdict, the rewind and
  redraw of failing streams.
- :mod:`~wavegen.render.pitchsync`: pitch-synchronous draws (``--pitch-sync``) and their state, rewound with
  a window and kept in the snapshot beside the engine's.
- :mod:`~wavegen.render.postfilter`: the pitch postfilter on the written audio (``--postfilter``), its history kept
  in the snapshot.
- :mod:`~wavegen.render.processes`: rank and world size under torchrun / accelerate, word of a
  process that stopped mid-render (read by the others at each window), and one
  outcome for every process (an error in one reaches all).
- :mod:`~wavegen.render.shard`: one process's streams, window by window: generated in chunks
  that answer a stop promptly, guarded, written, snapshotted; then its files finished.
- :mod:`~wavegen.render.loop`: :func:`render`, which prepares each process's job and ties
  them together.

Resuming. Under ``out_dir/.state/`` the render keeps ``params.json`` (everything that decides
the audio, the numba engine's thread count included: its sums round by it) and, per process, ``rank{r}.npz``: engine state, samples written, guard events,
written atomically every ``snapshot_seconds`` of audio, after the audio files were flushed
and fsynced up to that point (the snapshot before it stays as ``rank{r}.prev.npz``, the
fallback when the newest is damaged; a FLAC render's process also leaves ``rank{r}.snapshotted`` once it
saved one, as its raw PCM has no header to count what a snapshot holds). Rerunning the same command after a crash, Ctrl-C or
``kill -9`` cuts each file back to the snapshot and continues (and removes what a write cut
short left: a FLAC or PNG half encoded). The first Ctrl-C or SIGTERM rewinds to the start of
the current window, saves a snapshot and exits (130); one that comes once the last window is
made lets the render finish (FLAC encoding, spectrograms, report), says so, and exits 0. A
second stops at once (130), and the last snapshot stays valid: a rerun resumes, or only
finishes the files. A render begun with ``--prime`` resumes without its file (the snapshot carries
what the prime did, params.json its sha256; a file there that differs is refused); starting needs it.

Guard (on by default). Every ``guard_seconds`` window of each stream is checked before it is
written (:func:`guard_verdict`): clipping, silence or runaway noise rewinds that stream to the
window's start and redraws it with ``attempt + 1``; after ``guard_attempts`` redraws the last
one is kept and "gave up" is logged. Every event goes to ``render_report.json``.

Several processes (``torchrun``/``accelerate launch``: WORLD_SIZE, RANK set): process r renders
streams r, r + world, ... (:func:`shard_streams`) with the global stream ids as uniform keys;
process 0 holds the folder's lock and writes the report.
"""

from wavegen.plotting import spectrogram_png, spectrogram_summary
from wavegen.render.folder import PARAMS_FILE, REPORT_FILE, STATE_DIR, RenderFolder
from wavegen.render.guard import LOGGED_EVENTS, Guard, GuardCriteria, GuardLog, guard_verdict, spectral_flatness
from wavegen.render.loop import render, render_params, resolve_render_model
from wavegen.render.params_check import NON_BINDING, check_params
from wavegen.render.settings import (FLAC_MAX_SAMPLES, FORMATS, PRECISIONS, RenderSettings, RenderStateError,
                                     RenderWriteError, check_length, estimate_bytes, parse_label, prime_codes,
                                     shard_streams, stream_paths)
from wavegen.render.writers import PCMWriter, StreamWriters, encode_flac, load_snapshot, save_snapshot

__all__ = [
    "FLAC_MAX_SAMPLES", "FORMATS", "LOGGED_EVENTS", "NON_BINDING", "PARAMS_FILE", "PRECISIONS", "REPORT_FILE",
    "STATE_DIR", "Guard", "GuardCriteria", "GuardLog", "PCMWriter", "RenderFolder", "RenderSettings",
    "RenderStateError", "RenderWriteError", "StreamWriters", "check_length", "check_params", "encode_flac",
    "estimate_bytes", "guard_verdict", "load_snapshot", "parse_label", "prime_codes", "render", "render_params",
    "resolve_render_model", "save_snapshot", "shard_streams", "spectral_flatness", "spectrogram_png",
    "spectrogram_summary", "stream_paths",
]
