"""Small runs of the persistent WaveNet kernel, for compute-sanitizer: a 4-layer model, 2
streams, 8 teacher-forced and 8 sampled steps on the GPU, with one layer a block and with two
(the residual stream passed between a block's layers in shared memory); checks nothing itself."""

import numpy as np
import torch

from wavegen.generate import uniforms
from wavegen.kernels.cuda.wavenet import CudaWaveNetEngine
from wavegen.models.wavenet import WaveNet, WaveNetConfig

torch.manual_seed(0)
model = WaveNet(WaveNetConfig(layers=4, max_dilation=8, residual_channels=32, skip_channels=32,
                              end_channels=32, q_levels=64)).eval()
for per_block in (1, 2):
    engine = CudaWaveNetEngine(model.inference_spec(), 2, device="cuda", path="small", layers_per_block=per_block)
    engine.teacher_force(np.random.default_rng(0).integers(0, 64, (2, 8)))
    print(per_block, engine.generate(uniforms(0, range(2), 8, 8)))
