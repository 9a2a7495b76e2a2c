"""What every multi-process part of wavegen (render under torchrun, DDP training through
accelerate) does before its process group exists, and how a training's group ends."""

from __future__ import annotations

import gc


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
