"""wavegen bench with the cuda backend: every (backend, batch) row is checked against the engine's own
limits before any row is timed (the persistent kernels of the small-batch path run at most 64 streams,
and as many as fit a block's shared memory; options of one path refused where a batch takes the other).

Where no GPU is present the engines are built in numba-cuda's simulator (tests/cudasim.py), with the cuda
backend made available for the CPU device the simulator runs on; the refusals need no kernel to run."""

import cudasim  # noqa: F401  (first: enables the simulators where no GPU is present)
import pytest

from wavegen import generate
from wavegen.bench import bench_generation, check_backends, load_bench_model
from wavegen.engine import EngineError
from wavegen.kernels.cuda.engine import CudaEngine
from wavegen.kernels.cuda.samplernn import CudaSampleRNNEngine
from wavegen.kernels.cuda.samplernn_small import SmallPathDoesNotFit, small_path_fit

pytestmark = pytest.mark.cudasim


@pytest.fixture
def cuda_here(monkeypatch):
    """The cuda backend available on cudasim.DEVICE (the simulator's CPU where there is no GPU)."""
    generate.available_backends()
    for name in ("_ENGINES", "_CHECKS", "_LOADED", "_CHECKED", "_BROKEN"):
        value = getattr(generate, name)
        monkeypatch.setattr(generate, name, {k: dict(v) if isinstance(v, dict) else v for k, v in value.items()})
    generate.register_availability("cuda", lambda: None)
    monkeypatch.setattr(CudaEngine, "device_types", ("cuda", "cpu"))
    return cudasim.DEVICE


def refused(model, backends, batches, device):
    """The error bench_generation raises, and the rows it began measuring first (none, if it checks first)."""
    told = []
    with pytest.raises(EngineError) as caught:
        bench_generation(model, backends, batches, samples=16, repeats=1, device=device, progress=told.append)
    return str(caught.value), told


@pytest.mark.parametrize("model", ["samplernn-tiny", "wavenet-tiny"])
def test_a_batch_over_the_small_paths_streams_is_refused_before_any_row_is_timed(cuda_here, model):
    message, told = refused(model, ["numba", "cuda:path=small"], [1, 2, 65], cuda_here)
    assert told == []  # not the numba rows, nor cuda's batch 1 and 2, measured and then thrown away
    assert message.startswith("--backends cuda:path=small --batch 65: the persistent ")
    assert "at most 64 streams (65 asked)" in message


def test_a_small_path_option_is_refused_at_the_batch_that_takes_the_large_path(cuda_here):
    # wavenet's default path is small below 64 streams, large from 64: threads= is the small path's option
    message, told = refused("wavenet-tiny", ["cuda:threads=32"], [1, 64], cuda_here)
    assert told == [] and message.startswith("--backends cuda:threads=32 --batch 64: threads, head_blocks and "
                                             "layers_per_block are options of path='small'")


def test_the_shared_memory_of_the_small_path_is_checked_for_every_batch(cuda_here):
    spec, _ = load_bench_model("samplernn-tiny")
    engine = CudaSampleRNNEngine(spec, 1, device=cuda_here, path="small")
    one, four = (4 * small_path_fit(engine.packed, b, cuda_here)["end"] for b in (1, 4))
    assert one < four
    name = f"cuda:path=small:smem_bytes={one}"
    message, told = refused("samplernn-tiny", [name], [1, 4], cuda_here)
    assert told == [] and message.startswith(f"--backends {name} --batch 4: the persistent kernel needs {four} "
                                             "bytes of shared memory per block for 4 streams")
    with pytest.raises(SmallPathDoesNotFit):
        engine.check_streams(65)
    # the default path is not refused: a batch the small path cannot take runs on the large one (as the
    # engine's constructor does: samplernn takes the large path from 8 streams, or where the small does not fit)
    check_backends(spec, ["cuda"], [1, 4, 65], cuda_here)
    check_backends(spec, [f"cuda:smem_bytes={one}"], [1, 4], cuda_here)
    assert CudaSampleRNNEngine(spec, 4, device=cuda_here, smem_bytes=one).path == "large"
    engine.check_streams(2)


def test_an_option_of_the_large_path_is_taken_where_every_batch_takes_that_path(cuda_here):
    """One stream takes the small path, which refuses block_streams: the check builds its engine at the
    smallest batch instead, and refuses only a batch that takes the small path."""
    spec, _ = load_bench_model("samplernn-tiny")
    check_backends(spec, ["cuda:block_streams=16"], [16, 32], cuda_here)  # both on the large path
    with pytest.raises(EngineError, match=r"^--backends cuda:block_streams=16 --batch 4: block_streams and graph "
                                          "are options of path='large'"):
        check_backends(spec, ["cuda:block_streams=16"], [16, 4], cuda_here)
    with pytest.raises(EngineError, match=r"^--backends cuda:block_streams=16: block_streams and graph"):
        check_backends(spec, ["cuda:block_streams=16"], [1, 16], cuda_here)
