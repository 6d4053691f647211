"""Fine-tuning on the reader's corrections: labels from the review's statuses, validation scans
that never change side, the book's augmentation, seeded determinism on the CPU, a verdict that
refuses a worse model with its reason, and a cancelled run that leaves nothing behind."""

import shutil

import numpy as np
import pytest
import torch

from lungview.core import LungViewError
from lungview.core.jobs import Cancelled, CancelToken
from lungview.inference.device import resolve_device
from lungview.review.model import Review, sphere
from lungview.training.augment import BOOK_AUGMENTATION, EXACT_AUGMENTATION, augment, augment_exact
from lungview.training.examples import examples_of, split_scans, training_data
from lungview.training.finetune import Settings, augmentation_of
from lungview.training.runs import train_from_workspace
from tests.conftest import reviewed_workspace

CPU = resolve_device("cpu", "fp32")


def test_labels_come_from_the_statuses():
    r = Review("1.2.3")
    conf = r.add(sphere((0.0, 0.0, 0.0), 8.0, source="detector", status="confirmed", malignancy="malignant"))
    rej = r.add(sphere((30.0, 0.0, 0.0), 5.0, source="detector", status="rejected"))
    r.add(sphere((60.0, 0.0, 0.0), 5.0, source="detector", status="unsure"))
    r.add(sphere((90.0, 0.0, 0.0), 5.0, source="detector"))  # unreviewed: nothing
    added = r.add(sphere((0.0, 40.0, 0.0), 6.0, status="unreviewed"))  # the reader's own
    benign = r.add(sphere((0.0, 80.0, 0.0), 9.0, status="confirmed", malignancy="benign"))
    detections = {"detections": [
        {"center_xyz": [1.0, 1.0, 0.0], "diameter_mm": 8.0},  # on the confirmed one: covered
        {"center_xyz": [0.0, -50.0, 0.0], "diameter_mm": 4.0}]}  # nobody's: a negative in a reviewed scan
    got = {(e.center_xyz, e.label, e.why) for e in examples_of(r, detections, "nodule", reviewed=True)}
    assert got == {(conf.center_xyz, 1, "confirmed"), (rej.center_xyz, 0, "rejected"),
                   (added.center_xyz, 1, "added"), (benign.center_xyz, 1, "confirmed"),
                   ((0.0, -50.0, 0.0), 0, "candidate of a reviewed scan")}
    assert len(examples_of(r, detections, "nodule", reviewed=False)) == 4  # the candidates only when reviewed
    mal = {(e.center_xyz, e.label) for e in examples_of(r, detections, "malignancy", reviewed=True)}
    assert mal == {(conf.center_xyz, 1), (benign.center_xyz, 0)}


def test_validation_scans_never_change_side():
    scans = [f"1.2.{k}" for k in range(12)]
    first = split_scans(scans[:5], {})
    assert first == split_scans(scans[:5], {})  # deterministic
    assert "validation" in first.values() and "train" in first.values()
    # later runs with more scans: every earlier scan keeps its side
    later = split_scans(scans, first)
    assert all(later[u] == first[u] for u in first)
    assert 1 <= list(later.values()).count("validation") <= 6
    # asked for as validation: fine for a new scan, refused for one trained on before
    trained = next(u for u, side in first.items() if side == "train")
    with pytest.raises(LungViewError, match=f"scan {trained} was trained on before"):
        split_scans(scans, first, [trained])
    assert split_scans(scans + ["9.9"], later, ["9.9"])["9.9"] == "validation"
    # one scan alone: trained on, no validation
    assert split_scans(["5.5"], {}) == {"5.5": "train"}


def test_augmentation_as_the_book_does_it():
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 300, (2, 1, 8, 10, 12)).astype(np.float32))
    off = {k: False for k in BOOK_AUGMENTATION}
    assert torch.allclose(augment(x, np.random.default_rng(1), off), x, atol=1e-2)  # identity: the same voxels
    flipped = augment(x, np.random.default_rng(1), {**off, "flip": True})
    # each sample flipped along some axes: every one is one of the 8 flips of its input
    for k in range(2):
        flips = [torch.flip(x[k], dims) for dims in ((), (1,), (2,), (3,), (1, 2), (1, 3), (2, 3), (1, 2, 3))]
        assert any(torch.allclose(flipped[k], f, atol=1e-2) for f in flips)
    noisy = augment(torch.zeros(4, 1, 16, 16, 16), np.random.default_rng(2), {**off, "noise": 25.0})
    assert float(noisy.std()) == pytest.approx(25.0, rel=0.05)
    # a rotation by the book's matrix keeps a centred ball a ball
    ball = torch.zeros(1, 1, 9, 31, 31)
    zz, yy, xx = torch.meshgrid(torch.arange(9), torch.arange(31), torch.arange(31), indexing="ij")
    ball[0, 0][((yy - 15) ** 2 + (xx - 15) ** 2 <= 64) & (zz - 4).abs().le(2)] = 1000.0
    turned = augment(ball, np.random.default_rng(3), {**off, "rotate": True})
    assert abs(float(turned.sum()) - float(ball.sum())) < 0.03 * float(ball.sum())


def test_exact_augmentation_moves_whole_voxels():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 300, (16, 6, 9, 9)).astype(np.float32)  # crops with a margin of 2
    out = augment_exact(x, np.random.default_rng(1))
    assert out.shape == (16, 2, 5, 5)
    seen_shifts, seen_turns = set(), set()
    for k in range(16):
        # the output is one of the 5 x 5 x 5 windows of its input, flipped and turned in-plane:
        # the very voxel values (no interpolation), in one of the 8 symmetries of the square
        matches = []
        for dz in range(5):
            for dy in range(5):
                for dx in range(5):
                    w = x[k, dz:dz + 2, dy:dy + 5, dx:dx + 5]
                    for turn in range(4):
                        for flip in (False, True):
                            v = np.rot90(w[:, :, ::-1] if flip else w, turn, axes=(1, 2))
                            if np.array_equal(v, out[k]):
                                matches.append(((dz, dy, dx), (turn, flip)))
        assert matches, f"sample {k} is not a whole-voxel move of its crop"
        seen_shifts.add(matches[0][0])
        seen_turns.add(matches[0][1])
    assert len(seen_shifts) > 5 and len(seen_turns) > 3  # it does move them
    # the scan's noise stays as it was; the book's interpolation halves it
    book = augment(torch.from_numpy(x)[:, None], np.random.default_rng(1), {**BOOK_AUGMENTATION, "noise": 0.0})
    assert float(out.std()) == pytest.approx(300, rel=0.1) and float(book.std()) < 0.8 * 300


def test_the_augmentation_is_the_parents():
    from dataclasses import replace

    from lungview.models.checkpoint import book_card

    book = book_card("nodule", "book LunaModel")
    assert augmentation_of(book) == BOOK_AUGMENTATION  # the book's checkpoints learned with the book's
    demo = replace(book, trained_on_phantoms=True)
    assert augmentation_of(demo) == EXACT_AUGMENTATION  # the demo recipe's exact moves
    child = replace(book, recipe={"augmentation": EXACT_AUGMENTATION})
    assert augmentation_of(child) == EXACT_AUGMENTATION  # a fine-tuned model: what its recipe records
    assert augmentation_of(demo, "book") == BOOK_AUGMENTATION and augmentation_of(book, "exact") == EXACT_AUGMENTATION
    with pytest.raises(LungViewError, match="unknown augmentation"):
        augmentation_of(book, "mixup")


def test_same_seed_same_weights_and_a_registered_model(phantom_scans, tmp_path, monkeypatch):
    from lungview.models.versions import list_versions

    settings = Settings(epochs=1, steps_per_epoch=2, batch=8)
    runs = []
    for k in range(2):  # two users, each starting from the demo model
        monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / f"home{k}"))
        ws = reviewed_workspace(tmp_path / f"ws{k}", phantom_scans)
        data = training_data(ws, "nodule")
        result, version = train_from_workspace(ws, "nodule", CPU, settings)
        runs.append(result)
        ws.close()
        assert set(data.sides.values()) == {"train", "validation"}
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    trained = [v for v, _ in list_versions() if not v.builtin]
    assert len(trained) == 1 and trained[0].parent == "demo-nodule"
    from lungview.models.checkpoint import load_checkpoint

    card = load_checkpoint(trained[0].path, "nodule").card
    assert card.parent == "demo-nodule" and card.parent_sha256 and card.recipe["augmentation"] == EXACT_AUGMENTATION
    assert card.recipe["lr"] == 0.001 and card.device.startswith("CPU") and card.seconds > 0
    assert sum(s["positives"] for s in card.trained_on["scans"].values()) > 0
    # its own working threshold, and the before/after each at its model's
    assert card.working_threshold == runs[0].working_threshold == runs[0].after["threshold"]
    assert runs[0].before["threshold"] == 0.5 and 0.0 < card.threshold < 1.0


def test_working_threshold_worked_by_hand():
    from lungview.training.finetune import working_threshold

    labels = [1, 1, 1, 0, 0, 0, 0]
    parent = [0.7, 0.6, 0.1, 0.3, 0.55, 0.2, 0.1]  # 2 nodules found at 0.5, 1 false positive
    # the fine-tuned model may keep 1 false positive (0.95): the negative to leave out is the next one, 0.3;
    # above it lie the nodules at 0.99 and 0.9 (not the one at 0.25): half-way in log-odds between 0.3 and
    # 0.9, (ln(3/7) + ln 9) / 2 = 0.67496, 1 / (1 + e^-0.67496) = 0.66261, to 0.01: 0.66
    child = [0.99, 0.9, 0.25, 0.3, 0.95, 0.1, 0.2]
    assert working_threshold(child, labels, parent, 0.5) == 0.66
    # a model that ranks the third nodule above that negative finds it too: (ln(3/7) + ln(0.4/0.6)) / 2
    # = -0.62638 -> 0.34833, 0.35
    assert working_threshold([0.99, 0.9, 0.4, 0.3, 0.95, 0.1, 0.2], labels, parent, 0.5) == 0.35
    # where rounding would leave the interval, the exact half-way point: ln(0.5005/0.4995) / 2 -> 0.50025,
    # which rounds to 0.50, not above the negative at 0.5
    assert working_threshold([0.5005, 0.9, 0.5], [1, 1, 0], [0.6, 0.6, 0.2], 0.5) == pytest.approx(0.50025, abs=1e-6)
    # no nodule above the negatives it must leave out: the parent's threshold stays
    assert working_threshold([0.2, 0.1, 0.9], [1, 1, 0], [0.6, 0.6, 0.2], 0.6) == 0.6
    # the parent flagged every negative: so may the model, down to its lowest nodule (half-way to 1e-6)
    assert working_threshold([0.9, 0.6, 0.7], [1, 1, 0], [0.6, 0.6, 0.9], 0.5) == pytest.approx(
        1 / (1 + np.exp(-(np.log(1.5) + np.log(1e-6 / (1 - 1e-6))) / 2)), rel=1e-6)


def test_flipped_labels_are_refused_with_the_reason(phantom_scans, tmp_path, monkeypatch):
    from lungview.models.versions import active_version, list_versions

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    ws = reviewed_workspace(tmp_path / "ws", phantom_scans, flip=True)
    # validation is judged against the truth: the reviews of the validation scan as they should be
    data = training_data(ws, "nodule")
    val = data.scans("validation")
    good = reviewed_workspace(tmp_path / "good", phantom_scans)
    for uid in val:
        ws.save_review(uid, good.load_review(uid))
    good.close()
    # trained hard enough to learn the flipped labels (the book's small steps would barely move it)
    result, version = train_from_workspace(ws, "nodule", CPU, Settings(epochs=3, steps_per_epoch=10, batch=16,
                                                                       lr=0.02, momentum=0.9))
    ws.close()
    assert version.verdict == "refused"
    assert version.reason.startswith(("lower sensitivity", "more false positives"))
    assert active_version("nodule").id == "demo-nodule"  # kept, not activated
    assert [v.verdict for v, _ in list_versions() if v.id == version.id] == ["refused"]


def test_a_cancelled_run_writes_nothing(phantom_scans, tmp_path, monkeypatch):
    from lungview.models.registry import user_model_dir
    from lungview.models.versions import active_version

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    ws = reviewed_workspace(tmp_path / "ws", phantom_scans)
    token = CancelToken()

    def progress(done, total, message):
        if message.startswith("epoch 1/2") and done >= 2:
            token.cancel()

    with pytest.raises(Cancelled):
        train_from_workspace(ws, "nodule", CPU, Settings(epochs=2, steps_per_epoch=4, batch=8), progress=progress,
                             cancel=token)
    ws.close()
    assert not (user_model_dir() / "trained").exists() or not any((user_model_dir() / "trained").iterdir())
    assert not (user_model_dir() / "registry.json").exists()
    assert active_version("nodule").id == "demo-nodule"
    shutil.rmtree(tmp_path / "ws")


def test_malignancy_learns_in_the_head_and_the_last_block_only(phantom_scans, tmp_path, monkeypatch):
    """The book's chapter 14: start from the classifier, train the head and block 4; the rest,
    batch-norm statistics included, stays the parent's."""
    from lungview.models.checkpoint import load_checkpoint

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    ws = reviewed_workspace(tmp_path / "ws", phantom_scans)
    data = training_data(ws, "malignancy")
    labels = [e.label for ex in data.examples.values() for e in ex]
    assert 0 < sum(labels) < len(labels)  # benign and malignant nodules from the review
    result, version = train_from_workspace(ws, "malignancy", CPU, Settings(epochs=1, steps_per_epoch=3, batch=8))
    ws.close()
    assert version.role == "malignancy" and version.parent == "demo-malignancy"
    assert "auc" in result.after or result.after == {}
    from lungview.models.versions import get_version

    before = load_checkpoint(get_version("demo-malignancy").path, "malignancy").module.state_dict()
    after = load_checkpoint(version.path, "malignancy").module.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("head_linear.", "block4.")) for k in moved), sorted(moved)


def test_review_from_truth_confirms_what_lies_on_a_nodule():
    from lungview.training.examples import review_from_truth

    r = Review("1.2.3")
    on = r.add(sphere((10.0, 0.0, 0.0), 6.0, source="detector"))
    near = r.add(sphere((0.0, 2.5, 0.0), 4.0, source="detector"))  # within 3 mm of a 4 mm nodule's centre
    off = r.add(sphere((40.0, 0.0, 0.0), 6.0, source="detector"))
    assert review_from_truth(r, [((12.0, 0.0, 0.0), 8.0), ((0.0, 0.0, 0.0), 4.0)]) == (2, 1)
    assert [r.get(f.id).status for f in (on, near, off)] == ["confirmed", "confirmed", "rejected"]


def test_segmentation_learns_from_the_masks(phantom_scans, tmp_path, monkeypatch):
    """The U-Net fine-tuned on the workspace's masks: crops whose targets are the masks on their
    slice, Dice before and after on the validation scan, a checkpoint that loads as a U-Net."""
    from lungview.io import open_volume
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.registry import resolve_models
    from lungview.review.masks import Masks
    from lungview.inference.segmentation import segmentation_input
    from lungview.training.finetune import dice
    from lungview.training.slabs import cut_slabs

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    ws = reviewed_workspace(tmp_path / "ws", phantom_scans)
    for ph, scan in phantom_scans:  # each nodule's mask: its voxels denser than -500 HU within its sphere
        vol = open_volume(scan)
        masks, review = Masks(vol), ws.load_review(vol.series_uid)
        for f in review.findings:
            if f.status == "confirmed":
                c = np.rint(vol.xyz_to_irc(np.array(f.center_xyz))).astype(int)
                half = np.ceil(f.diameter_mm / 2 / np.array(vol.spacing_irc)).astype(int)
                box = tuple(slice(max(0, k - h), k + h + 1) for k, h in zip(c, half))
                grid = np.ogrid[box]
                ball = sum(((g - k) * sp) ** 2 for g, k, sp in zip(grid, c, vol.spacing_irc)) <= (f.diameter_mm / 2) ** 2
                masks.replace(f.id, box, ball & (vol.hu[box] > -500))
        ws.save_masks(vol.series_uid, masks)
    data = training_data(ws, "segmentation")
    assert data.counts()["train"]["positives"] == 6 and data.counts()["validation"]["positives"] == 3
    # a centred crop's target is the mask on that slice, as the masks hold it
    uid = data.scans("validation")[0]
    ex = [e for e in data.examples[uid] if e.label][0]
    vol = open_volume(ws.entry(uid).path)
    card = load_checkpoint(resolve_models(use_user_dir=False)["segmentation"].path, "segmentation").card
    x, y = cut_slabs([ex], lambda u: vol, ws.load_masks, card).centred()
    assert x.shape == (1, 7, 64, 64) and y.shape == (1, 1, 64, 64) and y.sum() > 10
    c = np.rint(vol.xyz_to_irc(np.array(ex.center_xyz))).astype(int)
    box = (c[1] - 32, c[1] + 32, c[2] - 32, c[2] + 32)
    assert np.array_equal(x[0], segmentation_input(vol.hu, c[0], box, card))
    mask = ws.load_masks(uid, vol).labels[c[0], box[0]:box[1], box[2]:box[3]] > 0
    assert np.array_equal(y[0, 0], mask)
    assert dice(y[0], y[0]) == 1.0 and dice(np.zeros_like(y), y) == 0.0 and dice(np.zeros(3), np.zeros(3)) is None
    result, version = train_from_workspace(ws, "segmentation", CPU, Settings(epochs=1, steps_per_epoch=2, batch=4))
    ws.close()
    assert result.before["dice"] is not None and result.after["dice"] is not None
    assert version.role == "segmentation" and version.parent == "demo-segmentation"
    assert load_checkpoint(version.path, "segmentation").card.role == "segmentation"


def test_segmentation_augmentation_moves_input_and_target_together():
    from lungview.training.augment import BOOK_SEG_AUGMENTATION, augment2d

    y = torch.zeros(3, 1, 32, 32)
    y[:, :, 5:12, 8:20] = 1.0
    x = y.repeat(1, 7, 1, 1) * 1000.0
    aug = {**BOOK_SEG_AUGMENTATION, "noise": 0.0}
    xa, ya = augment2d(x, y, np.random.default_rng(4), aug)
    assert torch.equal((xa[:, :1] > 500).float(), ya)  # the same geometry for both
    assert not torch.equal(ya, y)  # and it did move them
    xn, _ = augment2d(torch.zeros(2, 7, 32, 32), torch.zeros(2, 1, 32, 32), np.random.default_rng(5),
                      {k: False for k in BOOK_SEG_AUGMENTATION} | {"noise": 25.0})
    assert float(xn.std()) == pytest.approx(25.0, rel=0.05)


def test_verdicts_worked_by_hand():
    from lungview.training.finetune import auc_standard_error, verdict

    # Hanley & McNeil by hand, AUC 0.9 with 50 and 50 cases: Q1 = 0.9 / 1.1 = 0.81818, Q2 = 1.62 / 1.9 = 0.85263,
    # var = (0.09 + 49 (Q1 - 0.81) + 49 (Q2 - 0.81)) / 2500 = 2.57986 / 2500, SE = 0.03212
    assert auc_standard_error(0.9, 50, 50) == pytest.approx(0.03212, abs=5e-5)
    nod = dict(nodules=4, scans=2, sensitivity=0.75, fp_per_scan=1.0, cpm=0.7)
    assert verdict({**nod, "true_positives": 3, "false_positives": 2},
                   {**nod, "true_positives": 2, "false_positives": 0}, "nodule")[0] == "refused"  # a nodule lost
    assert verdict({**nod, "true_positives": 3, "false_positives": 2},
                   {**nod, "true_positives": 3, "false_positives": 3}, "nodule")[1].startswith("more false positives")
    assert verdict({**nod, "true_positives": 3, "false_positives": 2},
                   {**nod, "true_positives": 3, "false_positives": 1}, "nodule")[0] == "accepted"
    mal = dict(malignant=5, benign=5)
    assert verdict({"auc": 0.80, **mal}, {"auc": 0.75, **mal}, "malignancy")[0] == "accepted"  # within the noise
    assert verdict({"auc": 0.90, **mal}, {"auc": 0.50, **mal}, "malignancy")[0] == "refused"
    assert verdict({"dice": 0.70}, {"dice": 0.695}, "segmentation")[0] == "accepted"
    assert verdict({"dice": 0.70}, {"dice": 0.60}, "segmentation")[0] == "refused"
