"""The corpus reader: a prepared corpus folder (made by :func:`wavegen.prep.prepare`).

A prepared corpus folder holds:
  manifest.json                 sources, splits, skipped files, prep settings ("params"), fingerprint
  {train,val,test}.npy          int16 PCM [T] at the corpus rate, each split's segments end to end
  {train,val,test}_segments.npy int64 [N, 3] rows (start, length, file_index) into that array
  .wavegen-corpus               prep's mark: the files above are prep's to replace

Each file's manifest entry says what prep did to it: "gain_db" (below 0 when the file went
above full scale and was scaled down instead of clipped) and "partial" (true for a damaged
file of which the part that decodes was kept; "partial_reason" says what is missing).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from wavegen.errors import WavegenError
from wavegen.progress import counted
from wavegen.split import SPLITS

FORMAT_VERSION = 1  # what the reader needs; entries added since (gain_db, partial) are optional
MANIFEST = "manifest.json"


class CorpusError(WavegenError):
    """A corpus cannot be prepared or read; the message says what to do."""


class Corpus:
    """A prepared corpus folder: the manifest plus memory-mapped split arrays."""

    def __init__(self, corpus_dir: str | Path):
        self.dir = Path(corpus_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise CorpusError(
                f"{self.dir} is not a prepared corpus (no {MANIFEST}); "
                f"run `wavegen prep` to make one"
            )
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CorpusError(f"{path}: cannot read the manifest ({e}); run `wavegen prep` again")
        version = manifest.get("format_version") if isinstance(manifest, dict) else None
        if version != FORMAT_VERSION:
            raise CorpusError(
                f"{path}: corpus format_version {version!r} is not supported (this wavegen "
                f"reads {FORMAT_VERSION}); prepare the corpus again with `wavegen prep`"
            )
        self._manifest = manifest
        self._cache: dict[str, np.ndarray] = {}

    def __repr__(self) -> str:
        parts = ", ".join(f"{s}={self.seconds(s) / 3600:.2f}h" for s in SPLITS)
        return f"Corpus({str(self.dir)!r}, {self.sample_rate} Hz, {parts})"

    @property
    def manifest(self) -> dict:
        return self._manifest

    @property
    def content_id(self) -> str:
        """What the corpus holds, in 16 hex digits: the same for every prep of the same recordings
        with the same settings (wherever they lie, whenever they were touched), another for any
        other. A training run records it and resumes only on the same corpus."""
        return content_id(self._manifest)

    @property
    def sample_rate(self) -> int:
        return int(self._manifest["sample_rate"])

    @property
    def labels(self) -> list[str]:
        return list(self._manifest["labels"])

    def _load(self, filename: str, mmap: bool) -> np.ndarray:
        if filename not in self._cache:
            path = self.dir / filename
            try:
                self._cache[filename] = np.load(path, mmap_mode="r" if mmap else None)
            except (OSError, ValueError) as e:
                raise CorpusError(f"{path}: cannot load ({e}); run `wavegen prep` again") from e
        return self._cache[filename]

    @staticmethod
    def _check(name: str) -> None:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of: {', '.join(SPLITS)}")

    def split(self, name: str) -> np.ndarray:
        """The split's audio: int16 [T] PCM at sample_rate, memory-mapped read-only."""
        self._check(name)
        return self._load(f"{name}.npy", mmap=True)

    def segments(self, name: str) -> np.ndarray:
        """The split's segments: int64 [N, 3] rows (start, length, file_index)."""
        self._check(name)
        return self._load(f"{name}_segments.npy", mmap=False)

    def segment_labels(self, name: str) -> np.ndarray:
        """Label index (into .labels) of each segment: int64 [N]; all -1 without labels."""
        labels = self.labels
        file_labels = np.array(
            [labels.index(f["label"]) if f["label"] is not None else -1
             for f in self._manifest["files"]],
            dtype=np.int64,
        )
        return file_labels[self.segments(name)[:, 2]]

    def hold(self, *names: str) -> None:
        """Map the splits ``names`` now, checked against the manifest read at open: a corpus prepared again
        later (prep replaces its files) leaves this reader on the audio it began with (a training's validation
        would read a new val.npy through the old segments). CorpusError where a file already differs."""
        for name in names:
            audio, segments, want = self.split(name), self.segments(name), self._manifest["splits"][name]
            if len(audio) != want["samples"] or len(segments) != want["segments"]:
                raise CorpusError(f"{self.dir / (name + '.npy')}: {counted(len(audio), 'sample')} in "
                                  f"{counted(len(segments), 'segment')}, its manifest says {want['samples']} in "
                                  f"{want['segments']} (the corpus was being prepared again?): rerun once "
                                  "`wavegen prep` is done")

    def seconds(self, name: str) -> float:
        """Duration of the split in seconds."""
        self._check(name)
        return float(self._manifest["splits"][name]["samples"]) / self.sample_rate


def content_id(manifest: dict) -> str:
    """:attr:`Corpus.content_id` of a manifest: its settings (less the input paths), its sources'
    sha256 in order with what prep made of each, and the splits."""
    m = manifest
    params = {k: v for k, v in m.get("params", {}).items() if k != "inputs"}
    files = [[f.get(k) for k in ("sha256", "split", "kept_seconds", "label", "gain_db", "partial")]
             for f in m.get("files", [])]
    payload = {"format_version": m.get("format_version"), "sample_rate": m.get("sample_rate"), "params": params,
               "split_mode": m.get("split_mode"), "labels": m.get("labels"), "files": files, "splits": m.get("splits")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def damaged_array(corpus_dir: Path, manifest: dict) -> str | None:
    """The name of the first array that is not the whole file the manifest describes (a truncated,
    replaced or missing one; its header's shape and dtype, and the file's length, are checked),
    MANIFEST when the manifest does not describe them; None when every array is whole."""
    try:
        for name in SPLITS:
            split = manifest["splits"][name]
            for array, shape, dtype in ((f"{name}.npy", (split["samples"],), np.int16),
                                        (f"{name}_segments.npy", (split["segments"], 3), np.int64)):
                if not npy_is(corpus_dir / array, shape, dtype):
                    return array
    except (KeyError, TypeError):
        return MANIFEST
    return None


def npy_is(path: Path, shape: tuple, dtype) -> bool:
    """Whether the .npy file at path holds an array of this shape and dtype, and nothing less."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            found_shape, _, found_dtype = read_header(f)
            data_at = f.tell()
        size = path.stat().st_size
    except (OSError, ValueError):
        return False
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return found_shape == tuple(shape) and found_dtype == np.dtype(dtype) and size == data_at + nbytes
