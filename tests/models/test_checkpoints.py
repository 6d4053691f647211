import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lungview.models import CheckpointError, ModelCard, load_checkpoint, save_checkpoint
from lungview.models.checkpoint import BOOK_KWARGS
from lungview.models.nets import LunaModel, UNetWrapper
from lungview.models.registry import ModelCache, resolve_models
from tests.conftest import BOOK_MODELS, need_shared

SEG = "seg_2020-01-26_19.45.12_w4d3c1-bal_1_nodupe-label_pos-d1_fn8-adam.best.state"
CLS = "cls_2020-02-06_14.16.55_final-nodule-nonnodule.best.state"


def book(name):
    return need_shared(BOOK_MODELS / name)


def _bn(x, sd, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)


def reference_unet(sd, x):
    """The book's U-Net written out with torch.nn.functional straight from the state dict."""
    def block(x, p):
        x = _bn(F.relu(F.conv2d(x, sd[p + ".0.weight"], sd[p + ".0.bias"], padding=1)), sd, p + ".2")
        return _bn(F.relu(F.conv2d(x, sd[p + ".3.weight"], sd[p + ".3.bias"], padding=1)), sd, p + ".5")

    x = _bn(x, sd, "input_batchnorm")
    skips = []
    for i in range(3):
        x = block(x, f"unet.down_path.{i}.block")
        if i < 2:
            skips.append(x)
            x = F.avg_pool2d(x, 2)
    for i in range(2):
        p = f"unet.up_path.{i}"
        x = F.conv_transpose2d(x, sd[p + ".up.weight"], sd[p + ".up.bias"], stride=2)
        x = block(torch.cat([x, skips[-1 - i]], 1), p + ".conv_block.block")
    return torch.sigmoid(F.conv2d(x, sd["unet.last.weight"], sd["unet.last.bias"]))


def reference_luna(sd, x):
    x = _bn(x, sd, "tail_batchnorm")
    for b in range(1, 5):
        p = f"block{b}"
        x = F.relu(F.conv3d(x, sd[p + ".conv1.weight"], sd[p + ".conv1.bias"], padding=1))
        x = F.relu(F.conv3d(x, sd[p + ".conv2.weight"], sd[p + ".conv2.bias"], padding=1))
        x = F.max_pool3d(x, 2)
    return F.linear(x.flatten(1), sd["head_linear.weight"], sd["head_linear.bias"])


def test_book_segmentation_loads_strictly_and_matches_reference():
    m = load_checkpoint(book(SEG), "segmentation")
    assert m.source == "book" and m.card.role == "segmentation"
    raw = torch.load(book(SEG), weights_only=True, map_location="cpu")["model_state"]
    assert set(m.module.state_dict()) == set(raw)
    assert sum(p.numel() for p in m.module.parameters()) == 118_271
    x = torch.randn(2, 7, 64, 96) * 400
    with torch.no_grad():
        torch.testing.assert_close(m.module(x), reference_unet(raw, x), atol=1e-5, rtol=1e-4)
    assert m.sha256 == "cb3291697a78d99d347054d9236f43e6acd79646861864b03fc109af38ba88fb"


def test_book_classifier_loads_strictly_and_matches_reference():
    m = load_checkpoint(book(CLS), "nodule")
    raw = torch.load(book(CLS), weights_only=True, map_location="cpu")["model_state"]
    assert sum(p.numel() for p in m.module.parameters()) == 222_220
    x = torch.randn(3, 1, 32, 48, 48) * 400
    with torch.no_grad():
        logits, probs = m.module(x)
        torch.testing.assert_close(logits, reference_luna(raw, x), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(probs.sum(1), torch.ones(3))


def test_own_format_round_trip(tmp_path):
    net = UNetWrapper(**BOOK_KWARGS["UNetWrapper"])
    card = ModelCard(name="test seg", role="segmentation", context_slices=3, metrics={"dice": 0.5})
    path = save_checkpoint(tmp_path / "seg.pt", net, card, BOOK_KWARGS["UNetWrapper"])
    m = load_checkpoint(path, "segmentation")
    assert m.source == "lungview" and m.card.metrics == {"dice": 0.5} and m.card.created
    for k, v in net.state_dict().items():
        torch.testing.assert_close(m.module.state_dict()[k], v)
    assert not list(tmp_path.glob(".seg.pt*")), "no temporary file left behind"


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("case, pattern", [
    ("missing", "no such checkpoint file"),
    ("empty", "empty file"),
    ("random", "not a PyTorch checkpoint"),
    ("code", "refused: the file holds Python objects"),
    ("tensor", "holds a Tensor, not a checkpoint dict"),
    ("foreign", "not a LungView or book checkpoint"),
    ("wrong_keys", "weights do not fit UNetWrapper: 1 missing key"),
])
def test_bad_checkpoint_files(tmp_path, case, pattern):
    path = tmp_path / f"{case}.pt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif case == "code":
        torch.save({"model_state": Evil()}, path)
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    elif case == "foreign":
        torch.save({"state_dict": {}}, path)
    elif case == "wrong_keys":
        sd = UNetWrapper(**BOOK_KWARGS["UNetWrapper"]).state_dict()
        sd.pop("unet.last.bias")
        torch.save({"model_state": sd, "model_name": "UNetWrapper"}, path)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path, "segmentation")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_garbage_always_gives_one_clear_line(tmp_path):
    """Random bytes, and random bytes after a pickle header (deep into the unpickler, where
    garbage raises IndexError, KeyError, ...): never a traceback, always the file and the problem."""
    rng = np.random.default_rng(1)
    path = tmp_path / "garbage.pt"
    for k in range(300):
        head = (b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04", b"")[k % 4]
        path.write_bytes(head + rng.bytes(int(rng.integers(1, 600))))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path, "segmentation")
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_wrong_role_is_refused():
    with pytest.raises(CheckpointError, match="is a LunaModel .* not a segmentation model"):
        load_checkpoint(book(CLS), "segmentation")


def test_resolution_order_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    cls_path = save_checkpoint(models / "cls_mine.pt", LunaModel(), ModelCard("mine", "nodule"), {})
    explicit = save_checkpoint(tmp_path / "seg_x.pt", UNetWrapper(), ModelCard("x", "segmentation"),
                               BOOK_KWARGS["UNetWrapper"])
    choice = resolve_models(seg=str(explicit))
    assert choice["segmentation"].origin == "option"
    assert choice["nodule"].origin == "user" and choice["nodule"].path == cls_path
    cache = ModelCache()
    a = cache.get(cls_path, "nodule")
    assert cache.get(cls_path, "nodule") is a
    time.sleep(0.01)
    save_checkpoint(cls_path, LunaModel(), ModelCard("mine v2", "nodule"), {})
    b = cache.get(cls_path, "nodule")
    assert b is not a and b.card.name == "mine v2"


def test_fused_unet_equals_the_book_network_away_from_the_border():
    from lungview.models.fused import FusedUNet

    m = load_checkpoint(book(SEG), "segmentation").module
    fused = FusedUNet(m).eval()
    x = torch.randn(2, 7, 128, 160) * 400 - 300
    with torch.no_grad():
        a, b = m(x), fused(x)
    torch.testing.assert_close(b[..., 32:-32, 32:-32], a[..., 32:-32, 32:-32], atol=1e-5, rtol=1e-4)


def test_demo_malignancy_model_only_beside_the_demo_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "empty"))
    demo = resolve_models()
    assert demo["nodule"].origin == "demo" and demo["malignancy"].origin == "demo"
    mixed = resolve_models(cls=str(book(CLS)))
    assert mixed["nodule"].origin == "option" and mixed["malignancy"] is None
