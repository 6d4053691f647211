"""Device choice and precision: CUDA, then Apple MPS, then CPU; bf16 where it is safe."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from lungview.core import LungViewError


@dataclass(frozen=True)
class DeviceInfo:
    device: torch.device
    name: str  # "NVIDIA H100 80GB HBM3 (CUDA)", "CPU (2 threads)"
    bf16: bool  # whether bf16 autocast is used for the networks

    @property
    def is_cpu(self) -> bool:
        return self.device.type == "cpu"


def cpu_has_fast_bf16() -> bool:
    """bf16 pays off on the CPU only with native support (AVX512-BF16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_device(spec: str = "auto", precision: str = "auto") -> DeviceInfo:
    """spec: auto, cpu, cuda, cuda:N, mps. precision: auto (bf16 where supported), fp32, bf16."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            spec = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            spec = "mps"
        else:
            spec = "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise LungViewError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LungViewError("CUDA was asked for but no CUDA GPU is available to PyTorch")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise LungViewError(f"there is no CUDA device {index}")
        device = torch.device("cuda", index)
        name = f"{torch.cuda.get_device_name(index)} (CUDA)"
        native = torch.cuda.is_bf16_supported()
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise LungViewError("MPS was asked for but is not available")
        name, native = "Apple GPU (MPS)", False
    elif device.type == "cpu":
        name, native = f"CPU ({torch.get_num_threads()} threads)", cpu_has_fast_bf16()
    else:
        raise LungViewError(f"unsupported device {spec!r}")
    if precision not in ("auto", "fp32", "bf16"):
        raise LungViewError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    bf16 = native if precision == "auto" else precision == "bf16"
    return DeviceInfo(device=device, name=name, bf16=bf16)


def autocast(info: DeviceInfo):
    if not info.bf16:
        return contextlib.nullcontext()
    return torch.autocast(info.device.type, dtype=torch.bfloat16)


def autocast_gpu(info: DeviceInfo):
    """bf16 autocast on GPUs only: the classifier's bf16 3D convolutions are slower than fp32 ones
    on CPUs (measured), so CPUs run them in fp32 whatever their bf16 support."""
    return autocast(info) if info.device.type != "cpu" else contextlib.nullcontext()


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def smaller_batch(exc: BaseException, info: DeviceInfo, batch_size: int) -> int | None:
    """After a failed forward pass: the halved batch size to retry with on CUDA out-of-memory,
    or None when the error is something else (re-raise it)."""
    if info.device.type == "cuda" and is_out_of_memory(exc) and batch_size > 1:
        torch.cuda.empty_cache()
        return max(1, batch_size // 2)
    return None
