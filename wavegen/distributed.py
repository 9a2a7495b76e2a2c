"""What every multi-process part of wavegen (render under torchrun, DDP training through
accelerate) does before its process group exists, how a training's accelerator (and group)
starts, and how it ends."""

from __future__ import annotations

import gc
import os

import torch


def before_process_group() -> None:
    """Import torch.distributed.nn.functional while no process group exists.

    That module takes the default group as a default argument when it is first imported (building
    a model imports it, through torch._dynamo). Imported after the group exists, it keeps the group
    alive past destroy_process_group, so gloo's worker threads end during interpreter exit, racing
    it: "terminate called without an active exception" (SIGABRT), now and then, under load. Imported
    first, it holds None, and the group (and its threads) really ends when it is destroyed, as
    long as nothing else holds it (see end_accelerator).
    """
    import torch.distributed.nn.functional  # noqa: F401


def end_accelerator(accelerator) -> None:
    """End a training's accelerator, and its process group, once the caller has dropped its own
    references to the prepared (DDP) model and optimizer.

    gloo's worker threads need the GIL to let go of a finished collective's tensors, so the group
    must end inside destroy_process_group, which waits for them with the GIL released. Ended by the
    release of a DDP reducer holding its last reference instead, it deadlocks (the reducer joins the
    workers with the GIL held); ended at interpreter exit, it can abort.
    """
    accelerator.free_memory()  # the accelerator's own references to the prepared objects
    gc.collect()
    accelerator.end_training()


def make_accelerator(mixed_precision: str, cpu: bool = False):
    """The run's Accelerator; picks up ``accelerate launch`` / ``torchrun`` from the environment.

    ``mixed_precision``: auto (bf16 on CUDA, else none) | no | bf16 | fp16. ``cpu``: stay on the
    CPU even where there is a GPU. Several processes without CUDA run on CPU with gloo:
    accelerate takes that path only when told ``cpu=True`` (otherwise each process would train
    alone, unaware of the others).
    """
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and not cpu
    if mixed_precision == "auto":
        mixed_precision = "bf16" if cuda else "no"
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several:
        before_process_group()
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda and (cpu or several))
