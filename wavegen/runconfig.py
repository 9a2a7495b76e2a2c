"""A training run's config: a model's settings + the corpus + ``--set`` overrides, resolved and validated
once (:func:`resolve_run_config`); what ``wavegen train`` hands to :func:`wavegen.train.train`."""

from __future__ import annotations

import json
from pathlib import Path

from wavegen.config import ConfigError, TrainConfig, from_dict, train_settings
from wavegen.corpus import Corpus
from wavegen.models import model_config


def resolve_run_config(base: dict, corpus_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """A model's config (a preset's, a config file's, a model folder's) + corpus + ``--set`` overrides →
    the validated run config dict. The data section comes from the corpus; ``preset`` is kept and
    ``overrides`` records every override on top of it (the base's own first); ``data.corpus_id`` what the
    corpus holds (:attr:`wavegen.corpus.Corpus.content_id`: a run resumes on no other). ``model.labels`` are
    the corpus's unless a preset or config file names some, or ``overrides`` set them
    (:func:`_labels_from_corpus`)."""
    from wavegen.config import apply_overrides

    corpus = Corpus(corpus_dir)
    config = json.loads(json.dumps(base))
    config["train"] = train_settings(base)
    config["data"] = {"corpus": str(Path(corpus_dir).resolve()), "sample_rate": corpus.sample_rate}
    if _labels_from_corpus(base, config["model"], corpus):
        config["model"]["labels"] = list(corpus.labels)
    config = apply_overrides(config, overrides or [])
    if config["data"]["corpus"] != str(Path(corpus_dir).resolve()):
        raise ConfigError(f"data.corpus={config['data']['corpus']!r}: the corpus is the one --data names; "
                          "leave data.corpus to it")
    config["data"]["corpus_id"] = corpus.content_id  # after the overrides: what the corpus holds is not a setting
    config["data"]["split_ids"] = split_ids(corpus.manifest)  # eval tells a held-out split drawn again since
    config["overrides"] = list(base.get("overrides", [])) + list(overrides or [])
    train = from_dict(TrainConfig, config["train"], "train")
    train.validate()
    cfg = model_config(config)
    cfg.validate(train)
    if cfg.labels and list(cfg.labels) != list(corpus.labels):
        raise ConfigError(f"model.labels {cfg.labels} differ from the labels of corpus {corpus_dir}, "
                          f"{list(corpus.labels)}: a model trains on its corpus's labels; set them with "
                          f"--set 'model.labels={json.dumps(list(corpus.labels), separators=(',', ':'))}'")
    config["model"] = json.loads(json.dumps(cfg.__dict__))
    config["train"] = json.loads(json.dumps(train.__dict__))
    return config


def split_ids(manifest: dict) -> dict[str, str]:
    """Which recordings the val and test splits of a corpus's manifest hold, 16 hex digits each: the sha256 of
    each file in the split, and of each file cut in time with its cut (the seconds kept, where it holds no cut).
    A run records them: a corpus prepared again keeps each earlier file's split (unless --seed, a fraction or
    the labels changed), and eval warns of recordings the model may have trained on only where the split it
    scores holds other recordings than it did then (wavegen.cli.evaluate)."""
    import hashlib

    def cut(f: dict) -> list:
        # recorded in the file's time, a cut is held when prep runs again, whatever it keeps of the file (another
        # --top-db): its kept seconds say nothing then; unrecorded (an older prep), it lies at fractions of them
        if f.get("split") != "time":
            return []
        return [f.get("time_cuts_seconds")] if f.get("time_cuts_seconds") is not None else [f.get("kept_seconds")]

    files = [f for f in manifest.get("files", []) if isinstance(f, dict)]
    ids = {}
    for name in ("val", "test"):
        held = sorted(json.dumps([f.get("sha256"), f.get("split")] + cut(f))
                      for f in files if f.get("split") in (name, "time"))
        ids[name] = hashlib.sha256(json.dumps(held).encode()).hexdigest()[:16]
    return ids


def _labels_from_corpus(base: dict, model: dict, corpus: Corpus) -> bool:
    """Whether the run's model.labels are the corpus's (before the ``--set`` overrides, which win): always
    when the base was trained on a corpus (a model or run folder: its labels were that corpus's data, not
    a setting); otherwise when the base names none and the corpus has some."""
    trained = isinstance(base.get("data"), dict) and "corpus" in base["data"]
    return trained or (bool(corpus.labels) and not model.get("labels"))


def check_run_folder(run_dir: str | Path, config: dict) -> None:
    """Refuse a ``--run`` folder that would mix a training run with other files (ConfigError naming it): the
    corpus folder of ``config`` (or one inside it), a folder inside what another command replaces or prunes (another
    run's best/ or checkpoints/, a model folder, a corpus: resolve_why.inside), a prepared corpus, or a folder of
    audio files that holds no
    run (recordings, a render): training writes its samples there as WAV files, which a ``wavegen prep`` of the
    folder would take for recordings. A new folder, a run, or one holding other files is fine."""
    from wavegen.corpus import MANIFEST
    from wavegen.errors import some_of
    from wavegen.prep_inputs import audio_names

    from wavegen.resolve_why import inside

    run, corpus = Path(run_dir).resolve(), Path(config["data"]["corpus"]).resolve()
    own = "give the run a folder of its own (runs/NAME)"
    if run == corpus or corpus in run.parents:
        where = "is the corpus folder" if run == corpus else "is inside the corpus folder"
        raise ConfigError(f"--run {run_dir} {where} {corpus} (--data): {own}")
    held = inside(run)  # another run's best/ (replaced as it trains) or checkpoints, a model folder, a corpus
    if held is not None:
        raise ConfigError(f"--run {run_dir}: {held}; {own}")
    if not run.is_dir() or (run / "config.json").is_file():
        return
    if (run / MANIFEST).is_file():
        raise ConfigError(f"--run {run_dir} is a prepared corpus (it holds {MANIFEST}): {own}")
    audio = audio_names(run)
    if audio:
        raise ConfigError(f"--run {run_dir} holds audio files ({some_of(audio)}) and no training run: its training "
                          f"samples (WAV) would mix with them, and a wavegen prep of the folder would take them for "
                          f"recordings; {own}")
