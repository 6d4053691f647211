"""The models see scans as their cards say they were trained: a scan with slices outside the
training range is resampled along z for them, and the findings come back in its own voxels."""

import dataclasses

import numpy as np
import pytest

from lungview.core import CtVolume
from lungview.inference.device import resolve_device
from lungview.inference.grid import model_slice_spacing, nearest_slices, resample_z, to_native_irc
from lungview.inference.pipeline import INTERPOLATED_NOTE, Pipeline
from lungview.models.registry import ModelCache, resolve_models
from lungview.synthetic import make_phantom


def test_model_slice_spacing():
    luna = (0.625, 2.5)
    assert model_slice_spacing(1.25, [luna]) is None and model_slice_spacing(2.52, [luna]) is None
    assert model_slice_spacing(0.5, [luna]) == 0.625 and model_slice_spacing(5.0, [luna]) == 2.5
    assert model_slice_spacing(0.625, [(1.25, 2.5), None, (1.0, 3.0)]) == 1.25  # the tightest range
    assert model_slice_spacing(0.625, [None]) is None


def test_resample_z_is_linear_and_keeps_the_geometry():
    hu = (np.arange(9, dtype=np.int16)[:, None, None] * 100 + np.zeros((1, 4, 5), np.int16)).astype(np.int16)
    vol = CtVolume(hu=hu, spacing_xyz=(0.7, 0.7, 0.625), origin_xyz=(1.0, 2.0, 3.0),
                   direction=np.diag([1.0, -1.0, -1.0]))
    out = resample_z(vol, 1.0)
    # 8 gaps of 0.625 mm = 5 mm: slices at 0, 1, ..., 5 mm, i.e. at source index 0, 1.6, 3.2 ...
    assert out.shape == (6, 4, 5) and out.spacing_xyz == (0.7, 0.7, 1.0)
    np.testing.assert_array_equal(out.hu[:, 0, 0], [0, 160, 320, 480, 640, 800])
    np.testing.assert_allclose(out.irc_to_xyz([3, 1, 2]), vol.irc_to_xyz([3 / 0.625, 1, 2]))
    np.testing.assert_allclose(to_native_irc(vol, out, [[3.0, 1.0, 2.0]]), [[4.8, 1.0, 2.0]])
    assert nearest_slices(vol, out).tolist() == [0, 1, 1, 2, 2, 3, 4, 4, 5]  # 2.5 rounds to even


@pytest.fixture(scope="module")
def demo_pipeline():
    choice = resolve_models(use_user_dir=False)
    cache = ModelCache()
    models = {role: cache.get(c.path, role) if c else None for role, c in choice.items()}
    return Pipeline(models["segmentation"], models["nodule"], resolve_device("cpu"), models["malignancy"])


@pytest.mark.slow
def test_same_phantom_at_three_slice_spacings_gives_the_same_findings(demo_pipeline):
    """Seed 3, 200 mm long, at 0.625, 1.25 and 2.5 mm slices (the demo models were trained on
    1.25-2.5 mm: the 0.625 mm scan is resampled to 1.25 mm for them)."""
    runs = {}
    for slice_mm in (0.625, 1.25, 2.5):
        ph = make_phantom(3, size=512, slices=int(round(200 / slice_mm)), pixel_mm=0.7, slice_mm=slice_mm,
                          nodules=5)
        result = demo_pipeline.run(ph.volume)
        assert (result.model_spacing_mm == 1.25) == (slice_mm == 0.625)
        found = result.above(0.5)
        for d in found:  # in the scan's own voxels
            np.testing.assert_allclose(ph.volume.irc_to_xyz(d.center_irc), d.center_xyz, atol=1e-6)
        runs[slice_mm] = (ph, found, result)
    nodules = runs[1.25][0].nodules
    for slice_mm, (ph, found, result) in runs.items():
        np.testing.assert_allclose([n.center_xyz for n in ph.nodules], [n.center_xyz for n in nodules], atol=1e-6)
        for n in nodules:  # every nodule found at every spacing, within its radius
            assert min(np.linalg.norm(np.subtract(d.center_xyz, n.center_xyz)) for d in found) < n.diameter_mm / 2
        assert len(found) == len(runs[1.25][1]), slice_mm  # and nothing else differs in number
    prob = runs[0.625][2].prob
    assert prob.shape == runs[0.625][0].volume.shape  # the overlay comes back on the scan's slices


@pytest.mark.slow
def test_without_the_cards_range_thin_slices_change_what_is_found(demo_pipeline):
    """The control: the same 0.625 mm scan fed to the models as it is."""
    ph = make_phantom(3, size=512, slices=320, pixel_mm=0.7, slice_mm=0.625, nodules=5)
    native = dataclasses.replace(demo_pipeline)
    for role in ("seg", "cls", "mal"):
        model = getattr(native, role)
        setattr(native, role, dataclasses.replace(model, card=dataclasses.replace(model.card, slice_spacing_mm=None)))
    plain = native.run(ph.volume)
    assert plain.model_spacing_mm is None
    assert len(plain.above(0.5)) != len(demo_pipeline.run(ph.volume).above(0.5))


def test_a_finding_on_an_interpolated_slice_says_so(demo_pipeline):
    ph = make_phantom(3, size=512, slices=80, pixel_mm=0.7, slice_mm=2.5, nodules=5)
    big = max(ph.nodules, key=lambda n: n.diameter_mm)
    k = int(round(big.center_irc[0]))
    vol = dataclasses.replace(ph.volume, interpolated_slices=(k,))
    found = demo_pipeline.run(vol).above(0.5)
    on = min(found, key=lambda d: np.linalg.norm(np.subtract(d.center_xyz, big.center_xyz)))
    assert int(round(on.center_irc[0])) == k and INTERPOLATED_NOTE in on.notes
    assert all(not d.notes for d in found if int(round(d.center_irc[0])) != k)
