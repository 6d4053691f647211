"""`lungview models export`: TorchScript, ONNX and OpenVINO IR, each read back by its own runtime
(not by LungView's code), run on the same input as the original checkpoint and compared, as the
book's chapter 15 checks its exports; the model card travels inside; ONNX takes any batch (and the
U-Net any slice size)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from lungview.cli import main
from lungview.models.checkpoint import load_checkpoint
from lungview.models.export import export
from lungview.models.registry import resolve_models

ROLES = ("segmentation", "nodule")


@pytest.fixture(scope="module")
def demo():
    models = resolve_models(use_user_dir=False)
    return {r: load_checkpoint(models[r].path, r) for r in ROLES}


def _input(model, batch, size=(64, 96)):
    rng = np.random.default_rng(7)
    card = model.card
    shape = (batch, 2 * card.context + 1, *size) if card.role == "segmentation" else (batch, 1, *card.crop)
    return np.clip(rng.normal(-300, 500, shape), -1000, 1000).astype(np.float32)


def _original(model, x):
    with torch.inference_mode():
        out = model.module(torch.from_numpy(x))
    return (out[1] if isinstance(out, tuple) else out).numpy()


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("role", ROLES)
def test_every_format_read_back_by_its_runtime_gives_the_original_outputs(role, demo, tmp_path):
    import onnx
    import onnxruntime
    import openvino

    model = demo[role]
    card = json.loads(json.dumps(dataclasses.asdict(model.card)))  # as JSON holds it
    # TorchScript: torch.jit alone, the card as an extra file
    path = export(model, "torchscript", tmp_path / "m.pt").path
    files = {"lungview_card.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    x = _input(model, 3)
    with torch.inference_mode():
        got = scripted(torch.from_numpy(x))
    got = (got[1] if isinstance(got, tuple) else got).numpy()
    assert np.allclose(got, _original(model, x), atol=1e-6)
    assert json.loads(files["lungview_card.json"])["source_sha256"] == model.sha256
    # ONNX: onnx's checker, its metadata, symbolic batch (and height, width), ONNX Runtime at two batch sizes
    path = export(model, "onnx", tmp_path / "m.onnx").path
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["lungview_card"])
    assert {k: meta[k] for k in card} == card and meta["source_sha256"] == model.sha256
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] == "batch" and (dims[2:] == ["height", "width"] if role == "segmentation" else dims[2:] == [32, 48, 48])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch, size in ((1, (64, 64)), (5, (96, 160))):
        x = _input(model, batch, size)
        assert np.allclose(session.run(None, {session.get_inputs()[0].name: x})[-1], _original(model, x), atol=1e-5)
    # OpenVINO IR: .xml and .bin, its rt_info, OpenVINO's runtime in full precision
    path = export(model, "openvino", tmp_path / "ir" / "m").path
    assert path.suffix == ".xml" and path.with_suffix(".bin").exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.bin", "m.xml"]  # nothing half-written left
    core = openvino.Core()
    ir = core.read_model(str(path))
    assert json.loads(ir.get_rt_info()["lungview_card"].astype(str))["source_sha256"] == model.sha256
    compiled = core.compile_model(ir, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = _input(model, 2)
    assert np.allclose(compiled(x)[compiled.outputs[-1]], _original(model, x), atol=1e-5)


def test_the_command_line_export(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    out = tmp_path / "seg.onnx"
    assert main(["models", "export", "demo-segmentation", "--format", "onnx", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["path"] == str(out) and out.exists() and report["role"] == "segmentation"
    assert report["source_sha256"] == demo["segmentation"].sha256 and report["max_abs_diff"] < 1e-4
    assert report["checked_with"].startswith("ONNX Runtime")
    # a checkpoint file, as TorchScript; a line without --json
    assert main(["models", "export", demo["nodule"].path, "--format", "torchscript", "--out",
                 str(tmp_path / "cls.pt")]) == 0
    assert "checked with PyTorch" in capsys.readouterr().out
    # errors: one line, exit 2
    assert main(["models", "export", "no-such-model", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "no model 'no-such-model'" in err and err.count("\n") == 1
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # as if it were not installed
    assert main(["models", "export", "demo-nodule", "--format", "openvino", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "needs the openvino package: pip install 'lungview[openvino]'" in err and err.count("\n") == 1
