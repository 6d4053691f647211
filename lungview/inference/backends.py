"""Inference backends on the CPU: the models exported to ONNX (models.export) and run by OpenVINO
or ONNX Runtime instead of PyTorch, the book's chapter 15 route to deployment.

`auto` takes OpenVINO where it is installed and the device is the CPU, else PyTorch. (On the
project's CPU, scripts/bench_detect.py: in a warm process OpenVINO is as fast as PyTorch or slightly
faster, from run to run; on a single scan in a fresh process, slower.) Both runtimes are optional extras
(`pip install 'lungview[openvino]'`, `'lungview[onnx]'`), never required; on GPUs PyTorch runs.
The export is made on first use (on the worker that runs detection) into the user data folder's
cache/exports, named by the checkpoint's digest: a retrained checkpoint gets a new export, never
a stale one. Each model runs at the precision PyTorch would give it here: the U-Net in bf16 where
the CPU has native bf16 (OpenVINO; ONNX Runtime runs fp32), the classifiers in fp32.

Plain Python (no Qt).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import torch

from lungview.core import LungViewError
from lungview.core.jobs import ProgressCallback, no_progress
from lungview.inference.device import DeviceInfo
from lungview.models.checkpoint import LoadedModel
from lungview.models.export import ExportedNet, install_hint, write_onnx

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
LABELS = {"torch": "PyTorch", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
KEEP_COMPILED = 8  # compiled networks kept per process
_COMPILED: dict[tuple, "ExportedNet"] = {}
_LOCK = threading.Lock()


def installed(backend: str) -> bool:
    """Whether a backend's runtime (and the onnx package its export needs) can be imported."""
    if backend == "torch":
        return True
    return importlib.util.find_spec(backend) is not None and importlib.util.find_spec("onnx") is not None


def resolve_backend(choice: str | None, device: DeviceInfo) -> str:
    """The backend to run: `auto` is OpenVINO on the CPU when installed, else PyTorch; an explicit
    runtime that is missing, or asked for on a GPU, is a one-line error."""
    choice = (choice or "auto").lower()
    if choice not in BACKENDS:
        raise LungViewError(f"unknown backend {choice!r}; choose from {', '.join(BACKENDS)}")
    if choice == "auto":
        return "openvino" if device.is_cpu and installed("openvino") else "torch"
    if choice != "torch":
        if not device.is_cpu:
            raise LungViewError(f"the {choice} backend runs on the CPU, not on {device.name}: use --backend torch "
                                "(or auto) there")
        if not installed(choice):
            raise LungViewError(f"{LABELS[choice]} is not installed: {install_hint(choice)} (or --backend torch)")
    return choice


def describe(backend: str) -> str:
    """'OpenVINO 2026.4.1' / 'PyTorch 2.13.0+cpu': what runs the networks, for outputs and badges
    (from the installed package's metadata: importing a runtime starts its threads)."""
    if backend == "torch":
        return f"PyTorch {torch.__version__}"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{LABELS[backend]} {version(backend).split('-')[0]}"
    except PackageNotFoundError:
        return LABELS[backend]


def export_path(model: LoadedModel) -> Path:
    from lungview.models.registry import user_data_dir

    return user_data_dir() / "cache" / "exports" / f"{model.card.role}-{model.sha256[:16]}.onnx"


def exported(model: LoadedModel, backend: str, device: DeviceInfo,
             progress: ProgressCallback = no_progress) -> ExportedNet:
    """`model` ready to run on `backend`: exported on first use (progress says so), compiled once
    per process and precision."""
    bf16 = device.bf16 and backend == "openvino" and model.card.role == "segmentation"
    path = export_path(model)
    threads = torch.get_num_threads()
    key = (str(path), backend, bf16, threads)
    with _LOCK:
        net = _COMPILED.get(key)
    if net is not None and path.exists():
        return net
    for _ in range(2):  # a cached export the runtime cannot read is made again, once
        made = not path.exists()
        if made:
            progress(0, 1, f"exporting the {model.card.role} model for {LABELS[backend]} (once)")
            write_onnx(model, path)
        try:
            net = ExportedNet(path, backend, bf16, threads, getattr(model.module, "size_multiple", 4))
            break
        except (ImportError, RuntimeError, OSError, ValueError) as exc:  # a broken install, a damaged file
            if not made:
                path.unlink(missing_ok=True)
                continue
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise LungViewError(f"{path}: {LABELS[backend]} cannot run it ({first}); --backend torch runs "
                                "PyTorch instead") from None
    with _LOCK:
        _COMPILED[key] = net
        while len(_COMPILED) > KEEP_COMPILED:  # a long session's retrained models: the oldest go
            _COMPILED.pop(next(iter(_COMPILED)))
    return net
