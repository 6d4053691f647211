"""End to end with the demo models: nodules 8, 12 and 20 mm apart and nodules against vessels,
placed in a phantom's lungs, each come out as a finding of their own, centred within their
radius (what the classifier then says of them is the classifier's business)."""

import numpy as np
import pytest
from scipy import ndimage

from lungview.inference.device import resolve_device
from lungview.inference.pipeline import Pipeline
from lungview.models.registry import ModelCache, resolve_models
from lungview.synthetic import make_phantom

GRID = dict(size=512, slices=160, pixel_mm=0.7, slice_mm=1.25)
PAIRS = [(6.0, 6.0, 8.0), (8.0, 8.0, 12.0), (10.0, 6.0, 20.0)]
AGAINST_VESSELS = [8.0, 10.0]


def places(seed: int) -> tuple:
    """Positions in the lungs of the nodule-free phantom `seed` (same anatomy once nodules are
    added): pairs far from vessels, and single nodules whose surface meets a vessel."""
    empty = make_phantom(seed, nodules=0, **GRID)
    step = np.array([2, 4, 4])
    sp = np.array(empty.volume.spacing_irc) * step
    lung = empty.lung_mask[::2, ::4, ::4]
    depth = ndimage.distance_transform_edt(lung, sampling=sp)
    vessel = (empty.volume.hu[::2, ::4, ::4] > -500) & lung
    clearance = ndimage.distance_transform_edt(~vessel, sampling=sp)
    used: list[np.ndarray] = []
    out = []

    def best(score) -> np.ndarray:
        for idx in np.argsort(-score.ravel()):
            xyz = empty.volume.irc_to_xyz(np.array(np.unravel_index(idx, score.shape)) * step)
            if all(np.linalg.norm(xyz - u) > 45 for u in used):
                used.append(xyz)
                return xyz
        raise AssertionError("no room left in the lungs")

    for d1, d2, apart in PAIRS:
        xyz = best(np.minimum(depth - 25.0, clearance - 10.0))
        out += [(tuple(xyz), d1, "solid"), (tuple(xyz + [apart, 0.0, 0.0]), d2, "solid")]
    for d in AGAINST_VESSELS:
        xyz = best(np.where(depth > 15.0, -np.abs(clearance - d / 2), -np.inf))
        out.append((tuple(xyz), d, "solid"))
    return tuple(out)


@pytest.mark.slow
def test_neighbours_and_nodules_on_vessels_are_findings_of_their_own():
    ph = make_phantom(5, placed=places(5), **GRID)
    choice = resolve_models(use_user_dir=False)
    cache = ModelCache()
    models = {role: cache.get(c.path, role) if c else None for role, c in choice.items()}
    result = Pipeline(models["segmentation"], models["nodule"], resolve_device("cpu"),
                      models["malignancy"]).run(ph.volume)
    assert len(ph.nodules) == 2 * len(PAIRS) + len(AGAINST_VESSELS)
    matched = []
    for n in ph.nodules:
        dist = [np.linalg.norm(np.subtract(d.center_xyz, n.center_xyz)) for d in result.detections]
        k = int(np.argmin(dist))
        assert dist[k] < n.diameter_mm / 2, (n, dist[k])
        matched.append(k)
    assert len(set(matched)) == len(matched)  # one finding each: no two nodules merged
