"""Exporting a checkpoint as the book's chapter 15 does: TorchScript and ONNX, and OpenVINO's own
format (IR: .xml + .bin) for its runtime. Every export carries the model card (with the digest of
the checkpoint it came from) and is checked as the book checks its exports: the exported model and
the original run on the same seeded input, and the largest difference between their outputs is
reported. ONNX has a dynamic batch (and, for the U-Net, dynamic height and width), so that one file
serves every slice crop and batch size.

TorchScript needs PyTorch alone; ONNX the `onnx` package; OpenVINO the `openvino` one
(`pip install 'lungview[onnx]'` or `'lungview[openvino]'`). Plain Python (no Qt).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungview.core import LungViewError
from lungview.core.atomic import atomic_path
from lungview.models.checkpoint import LoadedModel

FORMATS = ("torchscript", "onnx", "openvino")
CARD_KEY = "lungview_card"  # ONNX metadata / TorchScript extra file / OpenVINO rt_info
OPSET = 17
CHECK_TOLERANCE = 1e-4  # largest difference in a probability allowed between an export and its original (fp32)
EXTRAS = {"onnx": "onnx", "onnxruntime": "onnx", "openvino": "openvino"}


@dataclass(frozen=True)
class ExportReport:
    path: Path
    format: str
    max_abs_diff: float  # exported against original, probabilities, on the check input
    checked_with: str  # the runtime that ran the export for the check


def install_hint(module_name: str) -> str:
    """The pip command that installs an optional package with LungView's extra for it."""
    return f"pip install 'lungview[{EXTRAS.get(module_name, module_name)}]'"


def needs(module_name: str, feature: str):
    """Imports an optional package or says, in one line, how to install it."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise LungViewError(f"{feature} needs the {module_name} package: {install_hint(module_name)}") from None


def card_json(model: LoadedModel) -> str:
    """The model card and the digest of the checkpoint the export came from."""
    return json.dumps({**dataclasses.asdict(model.card), "source_sha256": model.sha256,
                       "source_path": str(model.path)}, sort_keys=True)


def example_input(model: LoadedModel, batch: int = 2, size: tuple[int, int] = (64, 64), seed: int = 0) -> np.ndarray:
    """A seeded float32 input the model takes, in HU inside its card's clip: the U-Net's slices
    (batch, 2 context + 1, *size), the classifier's crops (batch, 1, *crop)."""
    rng = np.random.default_rng(seed)
    card = model.card
    shape = (batch, 2 * card.context + 1, *size) if card.role == "segmentation" else (batch, 1, *card.crop)
    x = rng.normal(-400.0, 450.0, size=shape).astype(np.float32)
    return np.clip(x, *card.hu_clip)


def _names(role: str) -> tuple[list[str], list[str], dict]:
    if role == "segmentation":
        axes = {0: "batch", 2: "height", 3: "width"}
        return ["slices"], ["probability"], {"slices": axes, "probability": axes}
    return ["crops"], ["logits", "probability"], {"crops": {0: "batch"}, "logits": {0: "batch"},
                                                  "probability": {0: "batch"}}


def _probability(out) -> np.ndarray:
    """The probability output of a forward pass (the U-Net's only one; the classifier's second)."""
    if isinstance(out, (tuple, list)):
        out = out[-1]
    return out.detach().float().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float32)


def write_onnx(model: LoadedModel, path: str | os.PathLike) -> Path:
    """The model as ONNX (opset 17, dynamic batch; the U-Net's height and width dynamic too) with
    the card in its metadata, written atomically."""
    onnx = needs("onnx", "ONNX export")
    module = model.module.to("cpu", memory_format=torch.contiguous_format).eval()
    inputs, outputs, axes = _names(model.card.role)
    x = torch.from_numpy(example_input(model))
    path = Path(path)
    with atomic_path(path, ".onnx") as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
            torch.onnx.export(module, (x,), str(tmp), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=OPSET)
        proto = onnx.load(str(tmp))
        entry = proto.metadata_props.add()
        entry.key, entry.value = CARD_KEY, card_json(model)
        proto.producer_name = "LungView"
        onnx.save(proto, str(tmp))
    return path


def export(model: LoadedModel, fmt: str, out: str | os.PathLike) -> ExportReport:
    """Writes `model` in `fmt` to `out` (OpenVINO: out.xml and out.bin) and checks it against the
    original on a seeded input."""
    if fmt not in FORMATS:
        raise LungViewError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "torchscript":
        path = _write_torchscript(model, out)
    elif fmt == "onnx":
        path = write_onnx(model, out)
    else:
        path = _write_openvino(model, out)
    diff, runtime = check(model, fmt, path)
    return ExportReport(path, fmt, diff, runtime)


def _write_torchscript(model: LoadedModel, out: Path) -> Path:
    module = model.module.to("cpu", memory_format=torch.contiguous_format).eval()
    x = torch.from_numpy(example_input(model))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x,))
    with atomic_path(out, ".pt") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch deprecates TorchScript for torch.export; the book's format still
        torch.jit.save(traced, str(tmp), _extra_files={f"{CARD_KEY}.json": card_json(model)})
    return out


def _write_openvino(model: LoadedModel, out: Path) -> Path:
    """OpenVINO IR converted from the ONNX export, full precision, the card in its rt_info. The
    .bin is renamed into place before the .xml: an .xml is never there without its weights."""
    ov = needs("openvino", "OpenVINO export")
    needs("onnx", "OpenVINO export")
    xml = out if out.suffix == ".xml" else out.with_suffix(".xml")
    xml.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{xml.stem}.", dir=xml.parent) as tmp:
        onnx_path = write_onnx(model, Path(tmp) / "model.onnx")
        converted = ov.convert_model(str(onnx_path))
        converted.set_rt_info(card_json(model), [CARD_KEY])
        staged = Path(tmp) / "model.xml"
        ov.save_model(converted, str(staged), compress_to_fp16=False)
        for name in ("model.bin", "model.xml"):
            with open(Path(tmp) / name, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(Path(tmp) / "model.bin", xml.with_suffix(".bin"))
        os.replace(staged, xml)
    return xml


def read_card(path: str | os.PathLike) -> dict:
    """The card an export carries (with source_sha256), read back by the runtime of its format."""
    path = Path(path)
    if path.suffix == ".onnx":
        onnx = needs("onnx", "reading an ONNX export")
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        text = props.get(CARD_KEY)
    elif path.suffix == ".xml":
        ov = needs("openvino", "reading an OpenVINO export")
        info = ov.Core().read_model(str(path)).get_rt_info()
        text = info[CARD_KEY].astype(str) if CARD_KEY in info else None
    else:
        files = {f"{CARD_KEY}.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.load(str(path), map_location="cpu", _extra_files=files)
        text = files[f"{CARD_KEY}.json"] or None
    if not text:
        raise LungViewError(f"{path}: no LungView model card in it")
    return json.loads(text)


class ExportedNet:
    """A model's export compiled by a runtime (ONNX Runtime: .onnx; OpenVINO: .onnx or .xml): called
    with a float32 numpy batch, it gives the probabilities the module gives (the U-Net's map, the
    classifier's class probabilities). Detection runs these (inference.backends), and so does the
    check of an export."""

    def __init__(self, path: Path, backend: str, bf16: bool, threads: int, size_multiple: int = 4):
        self.path, self.backend, self.size_multiple = path, backend, size_multiple
        self.precision = "bf16" if bf16 else "fp32"
        if backend == "onnxruntime":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self._run = lambda x: session.run(None, {name: x})[-1]
        else:
            import openvino as ov

            # threads pinned to cores only in a process that has every core: the processes of `detect --nproc`
            # would each pin theirs to the same first cores (measured: 19.8 scans/min in 2 processes, 28.0 in 1)
            config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "INFERENCE_NUM_THREADS": threads,
                      "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": threads >= (os.cpu_count() or 1)}
            compiled = ov.Core().compile_model(str(path), "CPU", config)
            last = compiled.outputs[-1]
            self._run = lambda x: compiled(x)[last]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._run(np.ascontiguousarray(x, dtype=np.float32)))


def check(model: LoadedModel, fmt: str, path: Path) -> tuple[float, str]:
    """(largest difference between the export's probabilities and the original's, the runtime
    that ran the export) on a seeded input of another batch size (and for the U-Net, another
    slice size) than the export was traced with."""
    size = (96, 128)
    x = example_input(model, batch=3, size=size, seed=1)
    with torch.inference_mode():
        ref = _probability(model.module.to("cpu").eval()(torch.from_numpy(x)))
    if fmt == "torchscript":
        runtime = "PyTorch (torch.jit)"
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = _probability(torch.jit.load(str(path), map_location="cpu")(torch.from_numpy(x)))
    elif fmt == "onnx":
        ort = needs("onnxruntime", "checking an ONNX export")
        runtime = f"ONNX Runtime {ort.__version__}"
        got = ExportedNet(path, "onnxruntime", False, torch.get_num_threads())(x)
    else:
        ov = needs("openvino", "checking an OpenVINO export")
        runtime = f"OpenVINO {ov.__version__.split('-')[0]}"
        got = ExportedNet(path, "openvino", False, torch.get_num_threads())(x)
    diff = float(np.abs(got - ref).max())
    if not diff <= CHECK_TOLERANCE:
        raise LungViewError(f"{path}: the export differs from {model.path} by {diff:.2g} on the check input "
                            f"(at most {CHECK_TOLERANCE:g} allowed)")
    return diff, runtime
