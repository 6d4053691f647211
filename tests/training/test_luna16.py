"""LUNA16 as a training source: its layout read from a phantom "LUNA16" folder (phantoms written
as subset0/subset1 .mhd files with annotations.csv and candidates.csv), the book's split and
LUNA16's folds, the examples as the book's p2ch14 LunaDataset takes them, and `lungview train
--luna16` end to end."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from lungview.cli import main
from lungview.core import LungViewError
from lungview.io.annotations import write_annotations, write_candidates
from lungview.synthetic import make_phantom, phantom_annotations, write_phantom
from lungview.training.luna16 import luna16_examples, luna16_sides, luna16_training_data, open_luna16

SEEDS = (71, 72, 73, 74)


@pytest.fixture(scope="module")
def luna_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("luna16")
    annotations, candidates, malignancy = [], [], []
    rng = np.random.default_rng(0)
    for k, seed in enumerate(SEEDS):
        ph = make_phantom(seed, size=160, slices=50, pixel_mm=2.0, slice_mm=2.5, nodules=3, kinds=("solid",),
                          diameter_mm=(8, 20))
        folder = root / f"subset{k // 2}"
        path = write_phantom(ph, folder, "mhd")
        (folder / "annotations.csv").unlink()  # (write_phantom's own, per scan)
        assert path.name == f"{ph.volume.series_uid}.mhd"
        anns = phantom_annotations(ph)
        annotations += anns
        for a in anns:
            malignancy.append(type(a)(a.series_uid, a.center_xyz, a.diameter_mm,
                                      {"mal_bool": str(bool(a.extra["malignant"]))}))
            candidates.append((a.series_uid, a.center_xyz, 1))
        lung = np.argwhere(ph.lung_mask)
        for i in rng.choice(len(lung), 5, replace=False):
            candidates.append((ph.volume.series_uid, tuple(ph.volume.irc_to_xyz(lung[i])), 0))
    annotations.append(type(annotations[0])("1.2.3.not.here", (0.0, 0.0, 0.0), 5.0, {}))  # a series of no subset
    write_annotations(root / "annotations.csv", annotations)
    write_candidates(root / "candidates.csv", candidates)
    write_annotations(root / "annotations_with_malignancy.csv", malignancy)
    return root


def test_layout_uids_from_file_names_and_the_splits(luna_dir):
    luna = open_luna16(luna_dir)
    uids = sorted(luna.scans)
    assert len(uids) == 4 and all(luna.scans[u].name == f"{u}.mhd" for u in uids)
    assert {luna.subset[u] for u in uids} == {0, 1}
    assert luna.skipped == ["1.2.3.not.here"] and len(luna.annotations) == 12
    # the book's split: every tenth of the sorted series, from the first: here the first alone
    assert luna16_sides(luna) == {u: "validation" if u == uids[0] else "train" for u in uids}
    # LUNA16's fold 1: subset1 validates
    fold = luna16_sides(luna, 1)
    assert {u for u, s in fold.items() if s == "validation"} == {u for u in uids if luna.subset[u] == 1}
    with pytest.raises(LungViewError, match="no subset7 for fold 7"):
        luna16_sides(luna, 7)


def test_examples_as_the_book_takes_them(luna_dir):
    luna = open_luna16(luna_dir)
    nod = luna16_examples(luna, "nodule")
    with open(luna_dir / "candidates.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sum(e.label for ex in nod.values() for e in ex) == 12  # the annotations
    assert sum(1 - e.label for ex in nod.values() for e in ex) == sum(r["class"] == "0" for r in rows)
    mal = luna16_examples(luna, "malignancy")
    with open(luna_dir / "annotations_with_malignancy.csv", newline="") as fh:
        truth = sorted(r["mal_bool"] == "True" for r in csv.DictReader(fh))
    assert sorted(bool(e.label) for ex in mal.values() for e in ex) == truth
    data, _ = luna16_training_data(luna_dir, "segmentation")
    uid = sorted(data.examples)[1]
    from lungview.io import open_volume

    vol = open_volume(luna.scans[uid])
    labels = data.masks_of(uid, vol).labels
    for n, e in enumerate(data.examples[uid], start=1):  # each nodule's mask holds its centre
        assert labels[tuple(np.rint(vol.xyz_to_irc(np.asarray(e.center_xyz))).astype(int))] == n


def test_layout_errors_name_the_file(luna_dir, tmp_path):
    with pytest.raises(LungViewError, match="no subset0 ... subset9 folders"):
        open_luna16(tmp_path)
    copy = tmp_path / "luna"
    shutil.copytree(luna_dir, copy)
    (copy / "annotations_with_malignancy.csv").unlink()
    with pytest.raises(LungViewError, match="malignancy needs the book's annotations_with_malignancy.csv"):
        luna16_examples(open_luna16(copy), "malignancy")
    (copy / "annotations.csv").unlink()
    with pytest.raises(LungViewError, match=r"annotations.csv: missing"):
        open_luna16(copy)


def test_train_on_luna16_from_the_command_line(luna_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    code = main(["train", "--luna16", str(luna_dir), "--role", "nodule", "--fold", "1", "--epochs", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    trained = json.loads(out)
    assert trained["counts"]["train"]["scans"] == 2 and trained["counts"]["validation"]["scans"] == 2
    luna = open_luna16(luna_dir)
    train_pos = sum(1 for a in luna.annotations if luna.subset[a.series_uid] == 0)
    assert trained["counts"]["train"]["positives"] == train_pos
    assert trained["before"]["nodules"] == 12 - train_pos  # the validation side's annotations
    from lungview.models.checkpoint import load_checkpoint

    card = load_checkpoint(trained["path"], "nodule").card
    assert card.trained_on["luna16"] == str(luna_dir) and card.trained_on["fold"] == 1
    code = main(["train", "--luna16", str(luna_dir), "--role", "nodule", "--val-scans", "1.2"])
    _, err = capsys.readouterr()
    assert code == 2 and "--val-scans is for a workspace" in err and err.count("\n") == 1


def test_negatives_drawn_per_scan_and_a_memory_bound(luna_dir, tmp_path, monkeypatch):
    luna = open_luna16(luna_dir)
    full = luna16_examples(luna, "nodule")
    few = luna16_examples(luna, "nodule", max_negatives=2, seed=3)
    for uid, ex in full.items():
        neg = {e.center_xyz for e in ex if not e.label}
        drawn = [e.center_xyz for e in few[uid] if not e.label]
        assert len(drawn) == min(2, len(neg)) and set(drawn) <= neg  # a subset of the scan's own
        assert [e for e in few[uid] if e.label] == [e for e in ex if e.label]  # every positive kept
    assert few == luna16_examples(luna, "nodule", max_negatives=2, seed=3)  # seeded


def test_crop_cache_holds_inference_crops_and_resumes(luna_dir, tmp_path):
    from lungview.core.jobs import Cancelled, CancelToken
    from lungview.io import open_volume
    from lungview.models.registry import resolve_models
    from lungview.models.checkpoint import load_checkpoint
    from lungview.training.cache import crop_cache
    from lungview.training.finetune import crops_of

    card = load_checkpoint(resolve_models(use_user_dir=False)["nodule"].path, "nodule").card
    luna = open_luna16(luna_dir)
    examples = luna16_examples(luna, "nodule")
    cache = crop_cache(tmp_path / "cache", card, margin=2)
    # an interrupted build: cancelled after its first scan, it keeps only whole files
    token = CancelToken()
    with pytest.raises(Cancelled):
        cache.build(examples, lambda u: luna.scans[u], card, workers=1,
                    progress=lambda d, t, m: token.cancel() if d >= 1 else None, cancel=token)
    kept = sorted(p.name for p in cache.root.iterdir())
    assert 1 <= len(kept) < 4 and all(n.endswith(".npy") and not n.startswith(".") for n in kept)
    report = cache.build(examples, lambda u: luna.scans[u], card, workers=2)  # resumed
    assert report["kept"] == len(kept) and report["cut"] == 4 - len(kept) and report["crops"] == 32
    assert cache.build(examples, lambda u: luna.scans[u], card)["cut"] == 0  # built once
    # the very crops inference's function cuts, and labels, in every margin up to the cache's
    some = [e for u in sorted(examples) for e in examples[u]]
    x, y = cache.crops(some, margin=2)
    ref, ref_y = crops_of(some, lambda u: open_volume(luna.scans[u]), card, margin=2)
    pick = [0, 5, 31, 7, 7]
    assert np.array_equal(x[pick], ref[pick]) and np.array_equal(y, ref_y) and len(x) == 32
    x0, _ = cache.crops(some, margin=0)
    assert x0.shape == (32, *card.crop) and np.array_equal(x0[3:9], ref[3:9, 2:-2, 2:-2, 2:-2])
    # a changed example list is a new file, never a stale one
    uid = sorted(examples)[0]
    assert cache.file_for(uid, examples[uid][:-1]) != cache.file_for(uid, examples[uid])


def test_unet_slab_cache_holds_inference_crops_and_resumes(luna_dir, tmp_path):
    """The U-Net's slabs: every crop drawn from them (any slice through the nodule, any shift)
    is inference's segmentation_input at that slice and box, its target the annotation's mask on
    that slice; built in worker processes, resumed after a cancel, memory-mapped."""
    from lungview.core.jobs import Cancelled, CancelToken
    from lungview.inference.segmentation import segmentation_input
    from lungview.io import open_volume
    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.registry import resolve_models
    from lungview.training.cache import slab_cache
    from lungview.training.slabs import SHIFT

    card = load_checkpoint(resolve_models(use_user_dir=False)["segmentation"].path, "segmentation").card
    data, luna = luna16_training_data(luna_dir, "segmentation")
    cache = slab_cache(tmp_path / "cache", card)
    token = CancelToken()
    with pytest.raises(Cancelled):
        cache.build(data.examples, luna.scans.__getitem__, card, data.masks_of, workers=1,
                    progress=lambda d, t, m: token.cancel() if d >= 1 else None, cancel=token)
    kept = len(list(cache.root.glob("*.index.npy")))
    assert 1 <= kept < 4 and not list(cache.root.glob(".*"))
    report = cache.build(data.examples, luna.scans.__getitem__, card, data.masks_of, workers=2)
    assert report["kept"] == kept and report["cut"] == 4 - kept and report["crops"] == 12
    every = [e for u in sorted(data.examples) for e in data.examples[u]]
    store = cache.slabs(every, card.context)
    assert len(store) == 12 and isinstance(store.parts[0].hu, np.memmap)
    rng = np.random.default_rng(1)
    for i in (0, 5, 11):
        e = every[i]
        vol = open_volume(luna.scans[e.scan])
        labels = data.masks_of(e.scan, vol).labels
        c = np.rint(vol.xyz_to_irc(np.asarray(e.center_xyz))).astype(int)
        reach = int(round(e.diameter_mm / 2 / vol.spacing_xyz[2]))
        assert reach >= 1
        for offset in (-reach, 0, reach):
            dr, dc = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, size=2))
            k = int(np.clip(c[0] + offset, 0, vol.shape[0] - 1))
            r = int(np.clip(c[1] - 32 + dr, 0, vol.shape[1] - 64))
            q = int(np.clip(c[2] - 32 + dc, 0, vol.shape[2] - 64))
            x, y = store.crop(i, k - c[0], dr, dc)
            assert np.array_equal(x, segmentation_input(vol.hu, k, (r, r + 64, q, q + 64), card))
            assert np.array_equal(y[0], labels[k, r:r + 64, q:q + 64] > 0)
        assert store.crop(i)[1].sum() >= 9  # the middle crop holds the nodule's mask (2 mm pixels)
    x, y = store.draw(np.arange(12), rng)
    assert x.shape == (12, 7, 64, 64) and y.shape == (12, 1, 64, 64)


@pytest.mark.parametrize("role", ["nodule", "segmentation"])
def test_training_from_the_cache_equals_training_in_memory(role, luna_dir, tmp_path, monkeypatch):
    from lungview.inference.device import resolve_device
    from lungview.training.finetune import Settings
    from lungview.training.runs import train_and_register

    cpu = resolve_device("cpu", "fp32")
    data, luna = luna16_training_data(luna_dir, role, fold=1, max_negatives=4)
    settings = Settings(epochs=1, steps_per_epoch=3, batch=8)
    states = []
    for k, cache in enumerate((None, tmp_path / "cache")):
        monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / f"home{k}"))
        result, _ = train_and_register(data, lambda u: luna.scans[u], "LUNA16 scans", {}, cpu, settings,
                                       cache_dir=cache, workers=1, masks_cached=(set(luna.scans), data.masks_of))
        states.append(result.model.state_dict())
        assert result.before["nodules" if role == "nodule" else "crops"] == 6
    assert any(cache.iterdir() for cache in (tmp_path / "cache").iterdir())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize("role", ["nodule", "segmentation"])
def test_two_processes_train_the_weights_of_one(role, luna_dir, tmp_path, monkeypatch, capsys):
    """`lungview train --nproc 2` (torchrun, gloo, two CPU processes each training on half of every
    global batch) ends with the weights one process reaches with the whole batches: the
    classifier's cross-entropy and the U-Net's Dice over the whole batch (its sums added up over
    the processes) alike."""
    import os
    import subprocess
    import sys

    from lungview.models.checkpoint import load_checkpoint
    from lungview.models.registry import resolve_models

    argv = ["train", "--luna16", str(luna_dir), "--role", role, "--fold", "1", "--epochs", "1",
            "--max-negatives", "4", "--cache", str(tmp_path / "cache"), "--json"]
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "one"))
    assert main(argv) == 0
    one = json.loads(capsys.readouterr().out)
    env = {**os.environ, "LUNGVIEW_HOME": str(tmp_path / "two"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lungview", *argv, "--nproc", "2"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    two = json.loads(done.stdout)  # process 0's report alone
    assert two["counts"] == one["counts"] and two["before"] == one["before"]
    a = load_checkpoint(one["path"], role).module.state_dict()
    b = load_checkpoint(two["path"], role).module.state_dict()
    assert "2 processes" in done.stderr
    parent = load_checkpoint(resolve_models(use_user_dir=False)[role].path, role).module.state_dict()
    assert set(a) == set(b) == set(parent)
    assert max(float((a[k].float() - parent[k].float()).abs().max()) for k in a) > 1e-3  # it did learn
    # Float sums in another order: equal within 1e-5 but for a rare weight whose gradient is next to
    # nothing, where Adam's step (gradient over its own running size) can differ by a part of one step
    diff = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])
    assert float(diff.max()) < 1e-4 and float((diff > 1e-5).float().mean()) < 1e-4


@pytest.mark.parametrize("role", ["nodule", "segmentation"])
def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(role, luna_dir, tmp_path, monkeypatch):
    from lungview.core.jobs import Cancelled, CancelToken
    from lungview.inference.device import resolve_device
    from lungview.models.versions import list_versions
    from lungview.training.finetune import Settings
    from lungview.training.runs import train_from_luna16

    cpu = resolve_device("cpu", "fp32")
    settings = Settings(epochs=3, steps_per_epoch=3, batch=8)
    from lungview.models.registry import resolve_models

    # from the demo model each time (an accepted run would otherwise become the next run's parent)
    parent = str(resolve_models(use_user_dir=False)[role].path)
    run = dict(fold=1, max_negatives=4, cache_dir=tmp_path / "cache", workers=1, model_path=parent)
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "whole"))
    whole, _ = train_from_luna16(luna_dir, role, cpu, settings, **run)
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "cut"))
    token = CancelToken()

    def stop_in_epoch_2(done, total, message):
        if message.startswith("epoch 2/3"):
            token.cancel()

    with pytest.raises(Cancelled):
        train_from_luna16(luna_dir, role, cpu, settings, progress=stop_in_epoch_2, cancel=token, **run)
    (state,) = (tmp_path / "cut" / "training").glob(f"{role}-*.pt")
    assert torch.load(state, weights_only=True)["epoch"] == 1  # the last finished epoch
    assert not [v for v, _ in list_versions() if not v.builtin]  # nothing registered
    resumed, version = train_from_luna16(luna_dir, role, cpu, settings, resume=True, **run)
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert not state.exists() and version.verdict in ("accepted", "refused")  # done: the state is gone
    # a damaged state is one clear line
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(b"not a checkpoint")
    with pytest.raises(LungViewError, match="cannot resume from it"):
        train_from_luna16(luna_dir, role, cpu, settings, resume=True, **run)


def test_a_workspace_and_luna16_in_one_run(luna_dir, phantom_scans, tmp_path, monkeypatch, capsys):
    from lungview.models.checkpoint import load_checkpoint
    from lungview.review.workspace import Workspace
    from tests.conftest import reviewed_workspace

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    reviewed_workspace(tmp_path / "ws", phantom_scans).close()
    code = main(["train", "--luna16", str(luna_dir), "--workspace", str(tmp_path / "ws"), "--role", "nodule",
                 "--fold", "1", "--epochs", "1", "--max-negatives", "4", "--cache", str(tmp_path / "cache"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    trained = json.loads(out)
    with Workspace(tmp_path / "ws") as ws:
        sides = ws.splits()  # fixed in the workspace by this run
    assert len(sides) == 3
    ws_val = sum(1 for s in sides.values() if s == "validation")
    assert trained["counts"]["train"]["scans"] == 2 + (3 - ws_val)  # LUNA16's subset0 and the workspace's own
    assert trained["counts"]["validation"]["scans"] == 2 + ws_val
    card = load_checkpoint(trained["path"], "nodule").card
    assert card.trained_on["luna16"] == str(luna_dir) and card.trained_on["workspace"] == str(tmp_path / "ws")
    assert set(card.trained_on["scans"]) == set(sides) | set(open_luna16(luna_dir).scans)


def test_a_workspace_is_refused_in_several_processes(tmp_path, capsys):
    code = main(["train", "--workspace", str(tmp_path / "ws"), "--role", "nodule", "--nproc", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "a workspace trains in one process" in err and err.count("\n") == 1
