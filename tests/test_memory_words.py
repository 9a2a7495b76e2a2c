"""The memory checks' refusals count with their nouns agreeing: "1 stream x 1024 samples per micro-batch",
"1 tensor differs" (were "1 stream(s)", "1 tensor(s) differ")."""

import pytest
from torch import nn

from wavegen import memory
from wavegen.config import ConfigError, TrainConfig
from wavegen.models import resolve_preset


@pytest.mark.parametrize("batch, said", [(1, "for 1 stream x 1024 samples per micro-batch"),
                                         (2, "for 2 streams x 1024 samples per micro-batch")])
def test_a_training_too_large_counts_its_streams_agreeing(monkeypatch, batch, said):
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (1, "free here"))
    with pytest.raises(memory.OutOfMemoryError) as caught:
        memory.check_training_memory(resolve_preset("samplernn-tiny"), TrainConfig(batch_size=batch, seq_len=1024),
                                     "cpu", False)
    assert said in str(caught.value), caught.value


@pytest.mark.parametrize("stored, said", [({"weight": (3, 2), "bias": (2,)}, "; 1 tensor differs: weight: file"),
                                          ({"weight": (3, 2), "bias": (3,)}, "; 2 tensors differ: bias: file")])
def test_a_weights_file_that_does_not_match_counts_its_tensors_agreeing(tmp_path, monkeypatch, stored, said):
    import wavegen.weights_file

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"x" * 64)
    monkeypatch.setattr(wavegen.weights_file, "weights_shapes", lambda path: stored)
    with pytest.raises(ConfigError) as caught:
        memory._check_weights_match(nn.Linear(2, 2), weights, 24)
    assert said in str(caught.value), caught.value


def test_a_batch_smaller_than_its_accumulation_steps_is_not_said_as_0_streams(monkeypatch):
    """train.batch_size=1 with train.grad_accum=2 is estimated on 1 stream per micro-batch (its split refused later),
    and was said "for 0 streams x 1024 samples per micro-batch"."""
    monkeypatch.setattr(memory, "available_memory", lambda device="cpu": (1, "free here"))
    with pytest.raises(memory.OutOfMemoryError) as caught:
        memory.check_training_memory(resolve_preset("samplernn-tiny"),
                                     TrainConfig(batch_size=1, grad_accum=2, seq_len=1024), "cpu", False)
    assert "for 1 stream x 1024 samples per micro-batch" in str(caught.value), caught.value
