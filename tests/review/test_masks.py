"""The reader's masks: brush dabs, the label volume, undo by changed voxels, sizes from a mask,
the workspace's masks.npz, and LIDC's 50 % consensus of the readers' masks."""

import numpy as np
import pytest

from lungview.core import CtVolume, LungViewError
from lungview.review.exchange import lidc_masks
from lungview.review.masks import Masks, MaskChange, disk_indices
from lungview.review.model import Review, sphere
from lungview.review.workspace import Workspace


def volume(shape=(20, 40, 40), spacing_xyz=(1.0, 1.0, 1.0), hu=0):
    return CtVolume(hu=np.full(shape, hu, np.int16), spacing_xyz=spacing_xyz, origin_xyz=(0.0, 0.0, 0.0),
                    series_uid="1.2.3")


def voxels(idx, shape):
    return set(zip(*(a.tolist() for a in np.unravel_index(idx, shape))))


def test_disk_dabs_worked_by_hand():
    shape = (10, 20, 20)
    # radius 1 mm on 1 mm pixels: the centre and its 4 neighbours
    assert voxels(disk_indices(shape, 0, (5, 10, 10), 1.0, (1, 1, 1)), shape) == {
        (5, 10, 10), (5, 9, 10), (5, 11, 10), (5, 10, 9), (5, 10, 11)}
    # radius 1.5 mm: the 3 x 3 square (corners at 1.41 mm)
    assert len(disk_indices(shape, 0, (5, 10, 10), 1.5, (1, 1, 1))) == 9
    # coronal plane (index and column), 2.5 mm slices, 1 mm pixels, radius 2.5 mm: columns -2..2 on
    # the cursor's slice, and the column itself on the slices above and below (2.5 mm away)
    assert voxels(disk_indices(shape, 1, (5, 7, 10), 2.5, (2.5, 1, 1)), shape) == {
        (5, 7, 8), (5, 7, 9), (5, 7, 10), (5, 7, 11), (5, 7, 12), (4, 7, 10), (6, 7, 10)}
    # at the border: only what is inside; outside the volume: nothing
    assert len(disk_indices(shape, 0, (0, 0, 0), 1.0, (1, 1, 1))) == 3
    assert len(disk_indices(shape, 0, (12, 5, 5), 1.0, (1, 1, 1))) == 0


def test_paint_keeps_other_findings_and_the_hu_range_and_erases_only_its_own():
    vol = volume()
    vol.hu[:, :, 20:] = -1000  # air on the right half
    m = Masks(vol)
    a = m.dab("a", disk_indices(vol.shape, 0, (5, 10, 10), 3.0, (1, 1, 1)))
    assert len(a) == 29  # pixels within 3 mm, row by row: 1 + 5 + 5 + 7 + 5 + 5 + 1
    m.dab("b", disk_indices(vol.shape, 0, (5, 10, 13), 3.0, (1, 1, 1)), hu_range=(-500, 3000))
    # b's disk overlaps a's: those voxels stay a's
    assert m.count("a") == 29 and 0 < m.count("b") < 29
    c = m.dab("c", disk_indices(vol.shape, 0, (5, 10, 20), 3.0, (1, 1, 1)), hu_range=(-500, 3000))
    assert c is not None and m.count("c") == sum(1 for i in range(-3, 4) for j in range(-3, 0)
                                                 if i * i + j * j <= 9)  # only the soft-tissue half
    before = m.labels.copy()
    assert m.dab("a", disk_indices(vol.shape, 0, (5, 10, 13), 1.0, (1, 1, 1)), erase=True) is not None
    changed = np.flatnonzero(before.ravel() != m.labels.ravel())
    assert set(before.ravel()[changed]) == {m.label_of["a"]} and not m.labels.ravel()[changed].any()


def test_a_stroke_is_one_undo_step_that_keeps_only_the_changed_voxels():
    vol = volume(spacing_xyz=(0.5, 0.5, 2.0))
    review = Review("1.2.3")
    review.masks = Masks(vol)
    f = review.add(sphere((10.0, 10.0, 20.0), 0.0))
    before_labels = np.zeros(vol.shape, np.uint16)
    dabs = [review.masks.dab(f.id, disk_indices(vol.shape, 0, (10, 20, 20 + k), 2.0, vol.spacing_irc))
            for k in range(5)]
    stroke = MaskChange.join(dabs)
    assert len(stroke) == int(np.count_nonzero(review.masks.labels)) < vol.hu.size // 100
    painted = review.record_mask(f.id, stroke, "Paint mask")
    n = review.masks.count(f.id)
    assert painted.volume_mm3 == pytest.approx(n * 0.5 * 0.5 * 2.0)
    assert painted.diameter_mm == pytest.approx((6 * n * 0.5 / np.pi) ** (1 / 3))
    # the mask is one slice thick: its centre lies on slice 10 (z = 20 mm), row 20 (y = 10 mm)
    assert painted.center_xyz[2] == pytest.approx(20.0) and painted.center_xyz[1] == pytest.approx(10.0)
    assert review.undo_name == "Paint mask"
    after_labels = review.masks.labels.copy()
    assert review.undo() == "Paint mask"
    np.testing.assert_array_equal(review.masks.labels, before_labels)
    assert review.get(f.id) == f
    assert review.redo() == "Paint mask"
    np.testing.assert_array_equal(review.masks.labels, after_labels)
    assert review.get(f.id) == painted


def test_sizes_of_a_cube_mask_worked_by_hand():
    vol = volume()
    review = Review("1.2.3")
    review.masks = Masks(vol)
    f = review.add(sphere((0.0, 0.0, 0.0), 0.0))
    box = (slice(2, 7), slice(10, 15), slice(20, 25))
    g = review.set_mask(f.id, box, np.ones((5, 5, 5), bool))
    assert g.volume_mm3 == 125.0
    assert g.center_xyz == pytest.approx((22.0, 12.0, 4.0))  # voxel centres 20..24, 10..14, 2..6
    # the 5 x 5 square: long axis its diagonal, short axis across it, each plus a pixel
    assert g.long_axis_mm == pytest.approx(np.hypot(4, 4) + 1)
    assert g.short_axis_mm == pytest.approx(2 * 4 / np.sqrt(2) + 1)
    assert set(g.reader_set) >= {"center_xyz", "volume_mm3", "diameter_mm"}


def test_deleting_an_added_nodule_takes_its_mask_and_undo_brings_both_back():
    vol = volume()
    review = Review("1.2.3")
    review.masks = Masks(vol)
    f = review.add(sphere((5.0, 5.0, 5.0), 3.0))
    review.set_mask(f.id, (slice(4, 6), slice(4, 6), slice(4, 6)), np.ones((2, 2, 2), bool))
    review.remove(f.id)
    assert not review.masks.has(f.id) and not review.findings
    review.undo()
    assert review.masks.count(f.id) == 8 and review.findings[0].id == f.id


def test_join_keeps_the_first_old_and_the_last_new_label():
    a = MaskChange(np.array([3, 4]), np.array([0, 0], np.uint16), np.array([1, 1], np.uint16))
    b = MaskChange(np.array([4, 5]), np.array([1, 0], np.uint16), np.array([0, 1], np.uint16))
    j = MaskChange.join([a, b])
    # voxel 4 went 0 -> 1 -> 0: no change at all
    assert j.idx.tolist() == [3, 5] and j.old.tolist() == [0, 0] and j.new.tolist() == [1, 1]


def test_masks_round_trip_through_the_workspace(tmp_path):
    vol = volume(shape=(30, 64, 64))
    m = Masks(vol)
    rng = np.random.default_rng(1)
    blob = rng.random((6, 7, 8)) > 0.4
    m.replace("2.25.1", (slice(3, 9), slice(10, 17), slice(20, 28)), blob)
    m.dab("2.25.2", disk_indices(vol.shape, 0, (20, 40, 40), 4.0, (1, 1, 1)))
    m.readers["2.25.1"] = {"reader 7": ((slice(3, 5), slice(10, 12), slice(20, 23)), rng.random((2, 2, 3)) > 0.5)}
    with Workspace(tmp_path / "ws") as ws:
        ws.add_scan(vol, tmp_path / "scan.mhd")
        ws.save_masks(vol.series_uid, m)
        back = ws.load_masks(vol.series_uid, vol)
        for fid in ("2.25.1", "2.25.2"):
            np.testing.assert_array_equal(back.labels == back.label_of[fid], m.labels == m.label_of[fid])
        (rbox, rmask), = back.readers["2.25.1"].values()
        assert rbox == m.readers["2.25.1"]["reader 7"][0]
        np.testing.assert_array_equal(rmask, m.readers["2.25.1"]["reader 7"][1])
        path = ws.folder(vol.series_uid) / "masks.npz"
        with pytest.raises(LungViewError, match=r"masks.npz: masks of a \(30, 64, 64\) scan, not of this"):
            ws.load_masks(vol.series_uid, volume(shape=(30, 64, 65)))
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(LungViewError, match="masks.npz: damaged masks file"):
            ws.load_masks(vol.series_uid, vol)
        assert not ws.load_masks("9.9", vol)  # none saved: empty masks


def test_lidc_consensus_mask_is_what_half_the_readers_drew():
    m = Masks(volume())
    line = lambda lo, hi: ((slice(5, 6), slice(5, 6), slice(lo, hi)), np.ones((1, 1, hi - lo), bool))
    readers = (("r1", *line(1, 4)), ("r2", *line(2, 5)), ("r3", *line(3, 6)))  # columns 1-3, 2-4, 3-5
    change = lidc_masks(m, {"2.25.9": readers})
    box, crop = m.mask("2.25.9")
    cols = np.flatnonzero(crop[0, 0]) + box[2].start
    assert cols.tolist() == [2, 3, 4]  # drawn by at least 2 of the 3 readers
    assert len(change) == 3 and set(m.readers["2.25.9"]) == {"r1", "r2", "r3"}
