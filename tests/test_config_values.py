"""Numbers a setting cannot take (NaN, infinities, out of range, beyond 64 bits) are refused up front, by
name, as one line with exit code 2, before anything is written to the run folder: by ``--set``, and by
:func:`wavegen.train.train` given a config dict that did not pass through ``resolve_run_config``."""

import dataclasses
import math
import typing

import pytest
from conftest import TINY_SAMPLERNN, prepared_corpus
from conftest import tiny_run_config as config_for

from wavegen.cli import main
from wavegen.config import NUMBER_RANGES, ConfigError, TrainConfig, check_number, parse_value
from wavegen.train import train


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """One tiny corpus for every case here (nothing trains on it: every run is refused)."""
    return prepared_corpus(tmp_path_factory.mktemp("values"), files=3, seconds=2.0, val_fraction=0.34,
                           test_fraction=0.0)


REFUSED = [  # (--set, the start of the one-line error)
    ("train.lr=NaN", "train.lr=nan: must be a finite number"),
    ("train.lr=Infinity", "train.lr=inf: must be a finite number"),
    ("train.lr=1e400", "train.lr=inf: must be a finite number"),  # JSON reads it as inf
    ("train.lr=1" + "0" * 400, "train.lr=100000000000... (401 characters): must be a finite number"),
    ("train.lr=1e31", "train.lr=1e+31: give 0 < lr <= 1e+30"),
    ("train.lr=-1", "train.lr=-1.0: give 0 < lr"),
    ("train.weight_decay=-1", "train.weight_decay=-1.0: give 0 <= decay"),
    ("train.weight_decay=NaN", "train.weight_decay=nan: must be a finite number"),
    ("seed=-1", "train.seed=-1: give 0 <= seed <= 4294967295"),
    ("seed=4294967296", "train.seed=4294967296: give 0 <= seed <= 4294967295"),
    ("train.warmup_steps=NaN", "train.warmup_steps=nan: must be a finite number"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1: must be at least 0"),
    ("train.batch_size=Infinity", "train.batch_size=inf: must be a finite number"),
    # beyond 64 bits: the setting's own range, not the range of any whole number
    ("train.batch_size=1e300", "train.batch_size=1e+300: too large; give a whole number from 1 to 9223372036854775807"),
    ("train.batch_size=1e20", "train.batch_size=1e+20: too large; give a whole number from 1 to 9223372036854775807"),
    ("train.warmup_steps=-1e19", "train.warmup_steps=-1e+19: too small; give a whole number from 0 to "
                                 "9223372036854775807"),
    ("train.seed=1e20", "train.seed=1e+20: too large; give a whole number from 0 to 4294967295"),
    ("train.sample_streams=1e30", "train.sample_streams=1e+30: too large; give a whole number from 1 to 64 (turn "
                                  "samples off with train.sample_interval=-1)"),
    ("model.dim=1e20", "model.dim=1e+20: too large (a whole-number setting is at most 9223372036854775807)"),
    ("model.dim=-1e20", "model.dim=-1e+20: too small (a whole-number setting is at least -9223372036854775807)"),
    ("train.sample_interval=-2", "train.sample_interval=-2: must be at least -1 (-1 turns samples off; 0 samples at "
                                 "validation steps)"),
    ("train.batch_size=1" + "0" * 5000, "train.batch_size='10000000000... (5003 characters): expected a whole"),
    ("train.max_steps=-Infinity", "train.max_steps=-inf: must be a finite number"),
    ("model.dim=1e400", "model.dim=inf: must be a finite number"),
    ("model.dim=NaN", "model.dim=nan: must be a finite number"),
    ("model.frame_sizes=8,NaN", "model.frame_sizes=nan: must be a finite number"),
    ("train.val_seconds=NaN", "train.val_seconds=nan: must be a finite number"),
    ("train.val_seconds=Infinity", "train.val_seconds=inf: must be a finite number"),
    ("train.val_seconds=0", "train.val_seconds=0.0: must be positive"),
    ("train.grad_clip=NaN", "train.grad_clip=nan: must be a finite number"),
    ("train.grad_clip=-1", "train.grad_clip=-1.0: give 0 <= norm <= 1e+30 (0 turns clipping off)"),
    ("train.ema_decay=NaN", "train.ema_decay=nan: must be a finite number"),
    ("train.ema_decay=1", "train.ema_decay=1.0: give 0 <= decay < 1"),
    ("train.sample_seconds=Infinity", "train.sample_seconds=inf: must be a finite number"),
    ("train.sample_streams=1000000000", "train.sample_streams=1000000000: give 1 <= streams <= 64"),
    ("train.num_workers=-1", "train.num_workers=-1: give 0 <= threads <= 64"),
    ("train.label_balance=2", "train.label_balance=2.0: give 0 <= balance <= 1 (0 draws each label as often as its "
                              "audio; 1 every label equally often)"),
    ("train.label_balance=equal", "train.label_balance='equal': expected a number"),
    ("train.num_workers=1000000", "train.num_workers=1000000: give 0 <= threads <= 64"),
    ("data.corpus=NaN", "data.corpus=nan: the corpus is the one --data names"),
    ("model.n_rnn=1e12", "model.n_rnn=1000000000000: at most 4096 recurrent layers per tier"),  # not built
    ("model.dim=1e18", "the model's sizes are too large to build (Storage size calculation overflowed"),
    ("model.q_levels=1e18", "the model's sizes are too large to build"),
]


@pytest.mark.parametrize("setting,error", REFUSED, ids=[s[:40] for s, _ in REFUSED])
def test_a_bad_number_is_refused_by_name_before_anything_is_written(corpus, tmp_path, capsys, setting, error):
    run = tmp_path / "run"
    args = ["-q", "train", "--data", str(corpus), "--model", "samplernn-tiny", "--run", str(run), "--threads", "1"]
    args += [a for s in TINY_SAMPLERNN + ["train.max_steps=2", setting] for a in ("--set", s)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"wavegen train: error: {error}"), err
    assert not (run / "config.json").exists()


@pytest.mark.parametrize("section,key,value", [
    ("train", "val_seconds", math.nan), ("train", "val_seconds", math.inf), ("train", "lr", math.inf),
    ("train", "grad_clip", math.nan), ("train", "seed", 2**32), ("model", "dim", math.nan),
    ("model", "dim", 2**70)])
def test_train_refuses_a_bad_number_in_a_config_it_is_given(corpus, tmp_path, section, key, value):
    """A config dict that did not pass through resolve_run_config: train() checks it before it writes."""
    config = config_for(corpus, "train.max_steps=2")
    config[section][key] = value
    with pytest.raises(ConfigError, match=rf"^{section}\.{key}="):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_every_number_of_the_train_config_has_a_range():
    hints = typing.get_type_hints(TrainConfig)
    numbers = {f.name for f in dataclasses.fields(TrainConfig) if hints[f.name] in (int, float)}
    assert numbers == set(NUMBER_RANGES)
    TrainConfig().validate()  # the defaults are in range
    for interval in (-1, 0, 7):  # off, at validation steps, every 7 steps: what the docs name
        TrainConfig(sample_interval=interval).validate()


def test_check_number_bounds_and_messages():
    check_number("x", 0, low=0)
    check_number("x", 2**80)  # no bound: any whole number
    check_number("x", 0.5, low=0, high=1, high_open=True)
    for value, bounds, message in [
            (math.nan, {}, "x=nan: must be a finite number"),
            (-math.inf, {"low": 0}, "x=-inf: must be a finite number"),
            (0.0, {"low": 0, "low_open": True}, "x=0.0: must be positive"),
            (1, {"low": 1, "low_open": True}, "x=1: must be above 1"),
            (0, {"low": 1}, "x=0: must be at least 1"),
            (5, {"high": 4}, "x=5: must be at most 4"),
            (1.0, {"low": 0, "high": 1, "high_open": True, "what": "d"}, "x=1.0: give 0 <= d < 1")]:
        with pytest.raises(ConfigError) as err:
            check_number("x", value, **bounds)
        assert str(err.value) == message


def test_parse_value_keeps_json_numbers_and_text():
    assert parse_value("3") == 3 and parse_value("3e-4") == 3e-4 and parse_value("8,2") == [8, 2]
    assert math.isnan(parse_value("NaN")) and parse_value("1e400") == math.inf  # refused where coerced
    assert parse_value("1" * 5000) == "1" * 5000  # more digits than Python converts: text, refused as a number


def test_load_json_reads_through_fileio_and_every_failure_is_a_config_error_naming_the_file(tmp_path):
    """load_json parsed beside fileio.read_json_object, the other reader: JSON nested deeper than the
    parser goes was a RecursionError traceback, and a FIFO named config.json was opened (waiting
    forever for a writer). One reader now; load_json keeps its words ("not valid JSON (...)")."""
    import os

    from wavegen.config import ConfigError, load_json

    path = tmp_path / "config.json"
    for content, message in ((b"[" * 100_000 + b"]" * 100_000, "not valid JSON (nested too deep to read)"),
                             (b'{"model_type": ', "not valid JSON (Expecting value"),
                             (b'{"name": "\xe9t\xe9"}', "not valid JSON ('utf-8' codec can't decode")):
        path.write_bytes(content)
        with pytest.raises(ConfigError) as info:
            load_json(path)
        assert str(info.value).startswith(f"{path}: {message}"), str(info.value)
    path.write_bytes(b"[1, 2]")
    assert load_json(path) == [1, 2]  # any JSON value: the caller judges its shape
    path.unlink()
    with pytest.raises(ConfigError, match=f"^{path}: no such file$"):
        load_json(path)
    os.mkfifo(path)
    with pytest.raises(ConfigError, match=f"^{path}: a FIFO, not a regular file$"):
        load_json(path)
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read \(Is a directory\)$"):
        load_json(tmp_path)
