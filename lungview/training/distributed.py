"""Training in several processes, as torchrun launches them (one per GPU, or several on CPUs):
the process group from torchrun's environment (gloo on CPUs, NCCL on GPUs), each process's rank,
and the launcher behind `lungview train --nproc N`.

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


def init_from_env(device):
    """Joins the process group torchrun describes (gloo on CPUs, NCCL on GPUs) and returns the
    device this process uses (a GPU's processes: cuda:LOCAL_RANK)."""
    if not launched() or dist.is_initialized():
        return device
    if device.device.type == "cuda":
        from dataclasses import replace

        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = replace(device, device=torch.device("cuda", local))
        dist.init_process_group("nccl")
    elif device.device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise LungViewError(f"distributed training needs CPUs (gloo) or CUDA GPUs (NCCL), not {device.name}")
    return device


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str]) -> int:
    """`lungview ARGV` again under torchrun with `nproc` processes on this machine."""
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise LungViewError(f"--nproc must be at least 1, not {nproc}")
    args = [f"--nproc_per_node={nproc}", "--standalone", "-m", "lungview", *argv]
    try:
        torchrun(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # torchrun's ChildFailedError: the failing rank has printed its line
        print(f"lungview: error: distributed training failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    return 0
