"""What every multi-process part of wavegen (render under torchrun, DDP training through
accelerate) does before its process group exists."""

from __future__ import annotations


def before_process_group() -> None:
    """Import torch.distributed.nn.functional while no process group exists.

    That module takes the default group as a default argument when it is first imported (building
    a model imports it, through torch._dynamo). Imported after the group exists, it keeps the group
    alive past destroy_process_group, so gloo's worker threads end during interpreter exit, racing
    it: "terminate called without an active exception" (SIGABRT), now and then, under load. Imported
    first, it holds None, and the group (and its threads) really ends when it is destroyed, as
    long as nothing else holds it: DDP's reducer does (wavegen.train drops the model first).
    """
    import torch.distributed.nn.functional  # noqa: F401
