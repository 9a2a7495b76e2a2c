"""The training estimate against a real training step's peak memory, measured in a fresh process."""

import json
import subprocess
import sys

import pytest

from wavegen.config import apply_overrides
from wavegen.memory import training_estimate
from wavegen.models import resolve_preset

# One process: the growth of its peak RSS (VmHWM) over 3 training steps, glibc's heap kept as training
# keeps it (memory.keep_freed_memory), one torch thread.
_MEASURE = """
import json, re, sys, torch
torch.set_num_threads(1)
from wavegen.config import apply_overrides
from wavegen.memory import keep_freed_memory
from wavegen.models import build_model, resolve_preset
def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
preset, batch, sets = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
config = apply_overrides(resolve_preset(preset), sets)
keep_freed_memory()
model = build_model(config)
optimizer = torch.optim.Adam(model.parameters())
codes = torch.randint(0, model.config.q_levels, (batch, model.context_samples + config["train"]["seq_len"]))
batch = {"codes": codes, "reset": torch.ones(batch, dtype=torch.bool)}
start = status("VmRSS")
for _ in range(3):
    loss, _ = model(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
print(json.dumps(status("VmHWM") - start))
"""


def measured_peaks(preset, batch, sets, runs=1):
    """The growth of peak RSS in each of ``runs`` fresh processes, run side by side (each measures only itself)."""
    procs = [subprocess.Popen([sys.executable, "-c", _MEASURE, preset, str(batch), *sets], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(runs)]
    peaks = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            peaks.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return peaks


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_wide_wavenet_end_layer_is_estimated_near_its_real_peak():
    """model.end_channels=30000 at batch 16 peaked at 5.4 GiB where the estimate said 2.55: the backward
    pass holds several tensors of the end layer's size beside what autograd saved. Here smaller (about
    0.5 GiB real), the same shape of use; before the fix the estimate was about half of it."""
    sets = ["model.end_channels=20000", "train.seq_len=512"]
    config = apply_overrides(resolve_preset("wavenet-tiny"), sets)
    estimate = training_estimate(config, 2, 512)["total"]
    (real,) = measured_peaks("wavenet-tiny", 2, sets)
    assert 0.8 * real <= estimate <= 1.5 * real, (estimate / 2**20, real / 2**20)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("preset, batch", [("samplernn-tiny", 2), ("samplernn-tiny", 64), ("wavenet-tiny", 2),
                                           ("wavenet-tiny", 16)])
def test_the_tiny_presets_are_estimated_at_or_above_their_real_peak(preset, batch):
    """The estimate said 0.37-0.71 of the real growth for these: it missed the first step's fixed
    allocations (about 15-30 MiB) and the logit-sized tensors the loss's backward holds beside what autograd
    saved (the larger share of a tiny model's activations). It may say more, not much more (the fixed part
    is rounded up: at 2 streams its share is the largest)."""
    config = resolve_preset(preset)
    estimate = training_estimate(config, batch, config["train"]["seq_len"])["total"]
    # the largest of three runs: the peak varies from run to run (samplernn-tiny at 2 streams: 26.4-29.1 MiB in
    # nine runs, against an estimate of 54.4: a single low run failed the upper bound now and then); the estimate
    # must cover the largest, and say at most twice it
    real = max(measured_peaks(preset, batch, [], runs=3))
    assert real <= estimate <= 2 * real, (estimate / 2**20, real / 2**20)
