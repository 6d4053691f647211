import numpy as np
import pytest

from lungview.io.annotations import read_annotations
from lungview.synthetic import NODULE_KINDS, make_phantom, write_phantom
from lungview.synthetic.phantom import PhantomConfig


def test_same_seed_same_voxels_other_seed_other_voxels():
    a = make_phantom(3, size=96, slices=40, pixel_mm=3.7, slice_mm=7.5)
    b = make_phantom(3, size=96, slices=40, pixel_mm=3.7, slice_mm=7.5)
    c = make_phantom(4, size=96, slices=40, pixel_mm=3.7, slice_mm=7.5)
    np.testing.assert_array_equal(a.volume.hu, b.volume.hu)
    assert a.nodules == b.nodules
    assert not np.array_equal(a.volume.hu, c.volume.hu)


def test_anatomy_is_in_its_place(small_phantom):
    vol, lung = small_phantom.volume, small_phantom.lung_mask
    hu = vol.hu
    assert vol.hu.dtype == np.int16 and lung.shape == hu.shape
    assert 0.05 < lung.mean() < 0.4
    lung_hu = hu[lung]
    assert -950 < np.median(lung_hu) < -750  # aerated parenchyma
    assert lung_hu.std() > 25  # texture and noise, not a flat fill
    assert (hu > 400).sum() > 200  # ribs, spine cortex
    body = (hu > -500) & ~lung
    assert 20 < np.median(hu[body & (hu > -200)]) < 80 or np.median(hu[body]) > -150
    assert (hu == -2048).any()  # padding outside the scan circle
    mid = hu.shape[0] // 2
    assert lung[mid, :, : hu.shape[2] // 2].any() and lung[mid, :, hu.shape[2] // 2:].any()


def test_nodules_are_where_the_truth_says():
    ph = make_phantom(11, size=256, slices=120, pixel_mm=1.4, slice_mm=2.5, nodules=5,
                      kinds=("solid", "calcified", "juxtapleural"), noise_hu=0)
    assert len(ph.nodules) >= 4
    for n in ph.nodules:
        i, r, c = np.rint(n.center_irc).astype(int)
        assert ph.volume.hu[i, r, c] > -100, n
        np.testing.assert_allclose(ph.volume.irc_to_xyz(n.center_irc), n.center_xyz)
        if n.kind == "calcified":
            assert ph.volume.hu[i, r, c] > 250 and not n.malignant
        # The nodule sits in the lung: some lung voxels within 1.5 diameters of it.
        reach = int(np.ceil(1.5 * n.diameter_mm / 1.4))
        assert ph.lung_mask[i, max(r - reach, 0):r + reach, max(c - reach, 0):c + reach].any()


def test_nodule_body_is_the_drawn_body():
    """Phantom.nodule_body voxelises the body whose volume_mm3 the phantom integrates on its own
    (a quasi-random point set in the continuous shape): on fine voxels the two agree, and every
    voxel of the body is at least half nodule (denser than half-way to the lung; a vessel drawn
    over it only adds): half-way from the kind's density (less 3 sigma of its spread) to -1000 HU,
    the lung texture's floor."""
    ph = make_phantom(7, size=512, slices=160, pixel_mm=0.4, slice_mm=0.5, nodules=6, noise_hu=0)
    sp = np.asarray(ph.volume.spacing_irc)
    half_way = {"solid": -498, "juxtapleural": -498, "calcified": -290, "ground-glass": -805, "part-solid": -795}
    assert {n.kind for n in ph.nodules} >= {"solid", "juxtapleural"}
    for n in ph.nodules:
        reach = 0.75 * n.diameter_mm + 2.0
        box = tuple(slice(max(0, int(np.floor(c - reach / s))), int(np.ceil(c + reach / s)) + 1)
                    for c, s in zip(n.center_irc, sp))
        body = ph.nodule_body(n, box)
        assert body.sum() * np.prod(sp) == pytest.approx(n.volume_mm3, rel=0.03, abs=1.0), n
        assert (ph.volume.hu[box][body] > half_way[n.kind]).all(), n


def test_ground_glass_and_part_solid_have_their_densities():
    ph = make_phantom(5, size=256, slices=120, pixel_mm=1.4, slice_mm=2.5, nodules=4,
                      kinds=("ground-glass", "part-solid"), diameter_mm=(14, 20), noise_hu=0,
                      vessels=False)  # vessels may cross a ground-glass nodule
    assert ph.nodules
    for n in ph.nodules:
        i, r, c = np.rint(n.center_irc).astype(int)
        rim = int(0.35 * n.diameter_mm / 1.4)
        centre, halo = ph.volume.hu[i, r, c], ph.volume.hu[i, r, c + rim]
        if n.kind == "ground-glass":
            assert -700 < centre < -400
        else:
            assert centre > -100 and -750 < halo < -300


def test_kinds_sizes_and_malignancy_over_many_seeds():
    seen, sizes = set(), []
    for seed in range(6):
        ph = make_phantom(seed, size=64, slices=30, pixel_mm=5.6, slice_mm=10.0, nodules=(4, 6),
                          vessels=False)
        for n in ph.nodules:
            seen.add(n.kind)
            sizes.append(n.diameter_mm)
            assert (n.margin != "smooth") == n.malignant
    assert seen == set(NODULE_KINDS)
    assert 3 <= min(sizes) and max(sizes) <= 30


def test_configurable_geometry_and_thickness():
    ph = make_phantom(1, size=80, slices=24, pixel_mm=4.5, slice_mm=10.0, thickness_mm=20.0,
                      padding_hu=None)
    assert ph.volume.shape == (24, 80, 80)
    assert ph.volume.spacing_xyz == (4.5, 4.5, 10.0) and ph.volume.slice_thickness_mm == 20.0
    assert ph.volume.hu.min() >= -1024
    with pytest.raises(ValueError, match="unknown nodule kinds"):
        make_phantom(1, PhantomConfig(kinds=("weird",)))


def test_annotations_csv_in_luna16_columns(small_phantom, tmp_path):
    write_phantom(small_phantom, tmp_path, "nrrd")
    anns = read_annotations(tmp_path / "annotations.csv")
    header = (tmp_path / "annotations.csv").read_text().splitlines()[0]
    assert header.startswith("seriesuid,coordX,coordY,coordZ,diameter_mm,kind,malignant,margin")
    assert len(anns) == len(small_phantom.nodules)
    for a, n in zip(anns, small_phantom.nodules):
        np.testing.assert_allclose(a.center_xyz, n.center_xyz, atol=1e-3)
        assert a.series_uid == small_phantom.volume.series_uid
        assert a.extra["kind"] == n.kind and a.extra["malignant"] == str(int(n.malignant))
