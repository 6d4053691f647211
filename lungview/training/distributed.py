"""Several processes, as torchrun launches them (one per GPU, or several on CPUs), for training
and for detection over many scans: the process group from torchrun's environment (gloo on CPUs,
NCCL on GPUs; gloo for detection, whose processes only exchange results), each process's rank,
gathering results on process 0, and the launcher behind `lungview train|detect --nproc N`.

The recipe stays the one of training.finetune: every process draws the same balanced global batch
from the same seeded generator and trains on its own share of it; DistributedDataParallel averages
the gradients, so N processes take the steps one process takes with the whole batch (the same
weights within float rounding). Process 0 alone builds the crop cache, validates, logs and writes.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from lungview.core import LungViewError


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of processes): (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device, gather_only: bool = False):
    """Joins the process group torchrun describes (gloo on CPUs, NCCL on GPUs; gloo alone with
    `gather_only`, for processes that only exchange results) and returns the device this process
    uses (a GPU's processes: cuda:LOCAL_RANK)."""
    if not launched() or dist.is_initialized():
        return device
    if device.device.type == "cuda":
        from dataclasses import replace

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise LungViewError(f"process {local} has no GPU of its own ({torch.cuda.device_count()} GPU(s) here): "
                                "one process per GPU, or --device cpu")
        torch.cuda.set_device(local)
        device = replace(device, device=torch.device("cuda", local))
        dist.init_process_group("gloo" if gather_only else "nccl")
    elif device.device.type == "cpu" or gather_only:
        dist.init_process_group("gloo")
    else:
        raise LungViewError(f"distributed training needs CPUs (gloo) or CUDA GPUs (NCCL), not {device.name}")
    return device


def gather_to_first(part: dict) -> dict:
    """Every process's dict merged on process 0 (the others get theirs back): results keyed by
    index, so that process 0 can put them in order."""
    rank, size = rank_and_size()
    if size == 1:
        return part
    parts = [None] * size if rank == 0 else None
    dist.gather_object(part, parts, dst=0)
    if rank != 0:
        return part
    merged: dict = {}
    for p in parts:
        merged.update(p)
    return merged


def batch_sum(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over the processes, differentiably (a loss over the whole global batch, such as
    the U-Net's Dice, from each process's share); `t` itself in one process."""
    if rank_and_size()[1] == 1:
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    """Leaves the process group, every process at the same point. What used it first goes
    (DistributedDataParallel's reducer keeps pending work objects; met at interpreter exit after
    the group, they end the process with "terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        import gc

        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """`lungview ARGV` (without its --nproc) again under torchrun with `nproc` processes on this
    machine."""
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise LungViewError(f"--nproc must be at least 1, not {nproc}")
    args = [f"--nproc_per_node={nproc}", "--standalone", "-m", "lungview", *_without_option(argv, "--nproc")]
    import logging

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # our processes say what failed
    try:
        torchrun(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - torchrun's ChildFailedError, or its own failure
        if not getattr(exc, "failures", None):
            print(f"lungview: error: torchrun failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        # the first process to fail is the cause: torchrun stops the others, which then fail too
        rank, first = exc.get_first_failure()
        if first.exitcode == 2:  # a LungViewError or failed scans, said in one line by that process
            return 2
        print(f"lungview: error: process {rank} of the run exited with code {first.exitcode}", file=sys.stderr)
        return 1
    return 0


def _without_option(argv: list[str], option: str) -> list[str]:
    """`argv` without `option VALUE` (or `option=VALUE`)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(option + "="):
            out.append(a)
    return out
