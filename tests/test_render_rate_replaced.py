"""A render whose model folder is replaced between its resolution and its load by a model at another sample rate (a
run folder trained again at another rate) is refused in one line: the model built from the new folder was rendered
and labelled at the old rate."""

from __future__ import annotations

import shutil

import pytest
from conftest import save_tiny_model

import wavegen.render.loop as loop
from wavegen.config import ConfigError
from wavegen.fileio import replace_dir
from wavegen.render import RenderSettings, render


def test_a_model_replaced_at_another_rate_before_its_load_is_refused(tmp_path, monkeypatch):
    run = tmp_path / "run"
    save_tiny_model(run / "best", seed=0, sample_rate=8000)
    shutil.copy(run / "best" / "config.json", run / "config.json")
    (run / "checkpoints").mkdir()
    real = loop.RenderJob._prime_gone

    def replaced_meanwhile(self, restart):  # after the rate is taken from the resolved config, before the load
        save_tiny_model(run / ".tmp_best", seed=1, sample_rate=16000)
        replace_dir(run / ".tmp_best", run / "best")
        return real(self, restart)

    monkeypatch.setattr(loop.RenderJob, "_prime_gone", replaced_meanwhile)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"best: replaced by a model at 16000 Hz while the render started \(it was "
                                          r"resolved at 8000 Hz\)"):
        render(run, out, RenderSettings(seconds=0.5, streams=1, seed=0, guard=False, spectrogram=False), progress=False)
    assert not list(out.glob("*.wav"))
