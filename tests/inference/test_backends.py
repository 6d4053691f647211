"""CPU inference backends: the models exported to ONNX and run by OpenVINO or ONNX Runtime give
PyTorch's findings (the same nodules, p_nodule within 0.01) on a phantom and on LIDC-IDRI-0001;
`auto` picks OpenVINO on the CPU when it is installed; the export is made once per checkpoint
digest and a missing runtime is one clear line."""

import numpy as np
import pytest
import torch

from lungview.core import LungViewError
from lungview.inference import backends
from lungview.inference.backends import export_path, exported, resolve_backend
from lungview.inference.device import DeviceInfo, resolve_device
from lungview.inference.pipeline import Pipeline
from lungview.io import open_volume
from lungview.models import load_checkpoint
from lungview.models.registry import resolve_models
from tests.conftest import BOOK_MODELS, LIDC, need_shared
from tests.models.test_checkpoints import CLS, SEG

CPU = resolve_device("cpu")
RUNTIMES = ("onnxruntime", "openvino")


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))


def _same_findings(ref, got, tolerance=0.01) -> int:
    """Every finding at p >= 0.5 of one run is in the other within its radius, p_nodule within
    `tolerance` where the classifier saw the same crop (its centre rounds to the same voxel).
    Returns how many did not: a centre that moved by a fraction of a voxel across a rounding
    boundary shifts the book's crop by a whole voxel, which moves its p_nodule much more."""
    a, b = ref.above(0.5), got.above(0.5)
    assert len(a) == len(b) and a
    moved = 0
    for d in a:
        match = min(b, key=lambda e: np.linalg.norm(np.subtract(d.center_xyz, e.center_xyz)))
        assert np.linalg.norm(np.subtract(d.center_xyz, match.center_xyz)) < max(d.diameter_mm / 2, 1.0)
        if np.array_equal(np.rint(d.center_irc), np.rint(match.center_irc)):
            assert abs(d.p_nodule - match.p_nodule) <= tolerance
        else:
            assert np.abs(np.subtract(d.center_irc, match.center_irc)).max() < 0.25  # a rounding, not a move
            moved += 1
    return moved


def test_auto_picks_openvino_on_the_cpu_and_explains_what_is_missing(monkeypatch):
    assert resolve_backend("auto", CPU) == "openvino"
    gpu = DeviceInfo(torch.device("cuda", 0), "some GPU (CUDA)", True)
    assert resolve_backend("auto", gpu) == "torch"
    with pytest.raises(LungViewError, match="runs on the CPU"):
        resolve_backend("openvino", gpu)
    with pytest.raises(LungViewError, match="unknown backend"):
        resolve_backend("tensorrt", CPU)
    monkeypatch.setattr(backends.importlib.util, "find_spec", lambda name: None)  # as without the extras
    assert resolve_backend("auto", CPU) == "torch"
    with pytest.raises(LungViewError, match=r"OpenVINO is not installed: pip install 'lungview\[openvino\]'"):
        resolve_backend("openvino", CPU)
    with pytest.raises(LungViewError, match=r"pip install 'lungview\[onnx\]'"):
        resolve_backend("onnxruntime", CPU)


def test_each_backend_finds_what_pytorch_finds_on_a_phantom(small_phantom):
    models = resolve_models(use_user_dir=False)
    seg, cls = (load_checkpoint(models[r].path, r) for r in ("segmentation", "nodule"))
    fp32 = resolve_device("cpu", "fp32")
    ref = Pipeline(seg, cls, fp32).run(small_phantom.volume)
    assert ref.backend.startswith("PyTorch")
    for runtime in RUNTIMES:
        messages = []
        got = Pipeline(seg, cls, fp32, backend=runtime).run(small_phantom.volume,
                                                            progress=lambda d, t, m: messages.append(m))
        assert got.backend.split()[0] in ("ONNX", "OpenVINO") and got.timings_s["export"] > 0  # made, compiled
        # the first runtime's run exported (and said so); the second one compiles the same files
        assert any(m.startswith("exporting the nodule model") for m in messages) == (runtime == RUNTIMES[0])
        assert _same_findings(ref, got, tolerance=1e-4) == 0  # fp32 on both sides: the same numbers but for rounding
        assert np.abs(got.prob.astype(int) - ref.prob).max() <= 1  # the U-Net's map, in 1/255 steps


def test_the_export_is_made_once_per_checkpoint_digest(tmp_path, monkeypatch):
    models = resolve_models(use_user_dir=False)
    cls = load_checkpoint(models["nodule"].path, "nodule")
    net = exported(cls, "onnxruntime", CPU)
    path = export_path(cls)
    assert path.exists() and path.name == f"nodule-{cls.sha256[:16]}.onnx"
    stamp = path.stat().st_mtime_ns
    assert exported(cls, "onnxruntime", CPU) is net and path.stat().st_mtime_ns == stamp  # kept, not redone
    # a retrained checkpoint (other weights, other digest) gets its own export, never the stale one
    from lungview.models.checkpoint import save_checkpoint

    with torch.no_grad():
        cls.module.head_linear.bias[1] += 2.0  # (adding to both logits would change no probability)
    save_checkpoint(tmp_path / "retrained.pt", cls.module, cls.card, cls.kwargs)
    retrained = load_checkpoint(tmp_path / "retrained.pt", "nodule")
    other = exported(retrained, "onnxruntime", CPU)
    assert export_path(retrained) != path and other is not net
    x = np.random.default_rng(0).normal(-500, 300, (4, 1, *cls.card.crop)).astype(np.float32)
    with torch.inference_mode():
        want = retrained.module(torch.from_numpy(x))[1].numpy()
    assert np.allclose(other(x), want, atol=1e-5) and not np.allclose(net(x), want, atol=1e-3)
    # a damaged export in the cache (in another process: nothing compiled yet) is made again, once
    backends._COMPILED.clear()
    export_path(retrained).write_bytes(b"not an onnx file")
    messages = []
    again = exported(retrained, "openvino", CPU, lambda d, t, m: messages.append(m))
    assert np.allclose(again(x), want, atol=1e-5) and messages == ["exporting the nodule model for OpenVINO (once)"]
    # a runtime that cannot run even a fresh export: one line that names the file and the way out
    backends._COMPILED.clear()

    class Broken:
        def __init__(self, *a):
            raise RuntimeError("Exception from src/inference/src/cpp/core.cpp:112:\nno CPU plugin")

    monkeypatch.setattr(backends, "ExportedNet", Broken)
    with pytest.raises(LungViewError, match=r"OpenVINO cannot run it \(Exception from .*core.cpp:112:\); "
                                            r"--backend torch runs PyTorch instead"):
        exported(retrained, "openvino", CPU)


@pytest.mark.slow
def test_lidc_idri_0001_same_findings_with_every_backend():
    vol = open_volume(need_shared(LIDC) / "dicom")
    need_shared(BOOK_MODELS)
    seg, cls = load_checkpoint(BOOK_MODELS / SEG, "segmentation"), load_checkpoint(BOOK_MODELS / CLS, "nodule")
    moved = []
    for device in {resolve_device("cpu", "fp32"), CPU}:  # and bf16 where this CPU has it natively
        ref = Pipeline(seg, cls, device).run(vol)
        for runtime in RUNTIMES:
            moved.append(_same_findings(ref, Pipeline(seg, cls, device, backend=runtime).run(vol)))
    assert sum(moved) <= len(moved)  # at most one finding a run on a rounding boundary
