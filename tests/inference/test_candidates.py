"""Grouping the segmentation into candidates: fragments of one nodule join, neighbours never do."""

import numpy as np
import pytest
from scipy import ndimage

from lungview.core import CtVolume
from lungview.inference.candidates import crumb_parents, find_candidates, merge_groups

LUNG, SOLID = -850, 30


def scene(spacing_xyz, size_mm=(80.0, 80.0, 60.0)):
    """An empty lung (HU) and an empty segmentation, with helpers to paint into both."""
    sx, sy, sz = spacing_xyz
    shape = (int(size_mm[2] / sz), int(size_mm[1] / sy), int(size_mm[0] / sx))
    hu = np.full(shape, LUNG, np.int16)
    prob = np.zeros(shape, np.uint8)
    grid = np.ogrid[:shape[0], :shape[1], :shape[2]]
    zyx = [g * s for g, s in zip(grid, (sz, sy, sx))]

    def ball(center_xyz, diameter):
        x, y, z = center_xyz
        inside = (zyx[2] - x) ** 2 + (zyx[1] - y) ** 2 + (zyx[0] - z) ** 2 <= (diameter / 2) ** 2
        hu[inside], prob[inside] = SOLID, 255
        return inside

    def tube(start_xyz, end_xyz, radius):
        p0, p1 = np.asarray(start_xyz, float), np.asarray(end_xyz, float)
        d = p1 - p0
        t = np.clip(((zyx[2] - p0[0]) * d[0] + (zyx[1] - p0[1]) * d[1] + (zyx[0] - p0[2]) * d[2]) / d.dot(d), 0, 1)
        dist2 = (zyx[2] - p0[0] - t * d[0]) ** 2 + (zyx[1] - p0[1] - t * d[1]) ** 2 + (zyx[0] - p0[2] - t * d[2]) ** 2
        inside = dist2 <= radius**2
        hu[inside], prob[inside] = SOLID, 255

    vol = CtVolume(hu=hu, spacing_xyz=spacing_xyz, origin_xyz=(0.0, 0.0, 0.0))
    return vol, prob, ball, tube


def centres_mm(vol, cands):
    return [vol.irc_to_xyz(c.center_irc) for c in cands]


SPACINGS = [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)]


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("d1, d2, apart", [(6.0, 6.0, 8.0), (10.0, 10.0, 12.0), (8.0, 6.0, 12.0),
                                           (12.0, 8.0, 20.0), (16.0, 6.0, 20.0)])
def test_neighbouring_nodules_stay_apart_and_centred(spacing, d1, d2, apart):
    vol, prob, ball, _ = scene(spacing)
    a, b = (30.0, 40.0, 30.0), (30.0 + apart, 40.0, 30.0)
    ball(a, d1)
    ball(b, d2)
    found = centres_mm(vol, find_candidates(vol, prob))
    assert len(found) == 2, found
    for center, diameter in ((a, d1), (b, d2)):
        assert min(np.linalg.norm(f - center) for f in found) < diameter / 2


@pytest.mark.parametrize("spacing", SPACINGS)
def test_a_nodule_touching_a_vessel_keeps_its_centre(spacing):
    vol, prob, ball, tube = scene(spacing)
    ball((40.0, 40.0, 30.0), 8.0)
    tube((44.5, 40.0, 30.0), (75.0, 45.0, 33.0), 1.5)  # from the nodule's surface outwards
    tube((20.0, 20.0, 28.0), (60.0, 22.0, 32.0), 1.2)  # and one passing 10 mm away
    found = centres_mm(vol, find_candidates(vol, prob))
    assert min(np.linalg.norm(f - (40.0, 40.0, 30.0)) for f in found) < 4.0


@pytest.mark.parametrize("spacing", SPACINGS)
def test_a_nodule_split_by_the_segmentation_is_one_finding(spacing):
    vol, prob, ball, _ = scene(spacing)
    inside = ball((40.0, 40.0, 30.0), 14.0)
    sx, sy, sz = spacing
    # two weak lines: the segmentation misses a plane of voxels at x = 37 mm and one at y = 44 mm
    prob[:, :, int(37.0 / sx)] = 0
    prob[:, int(44.0 / sy), :] = 0
    assert (inside & (prob == 0)).any()
    found = centres_mm(vol, find_candidates(vol, prob))
    assert len(found) == 1 and np.linalg.norm(found[0] - (40.0, 40.0, 30.0)) < 2.0
    # without merging it falls apart into pieces
    assert len(find_candidates(vol, prob, merge=False)) >= 3


def test_a_row_of_small_blobs_never_chains_into_one():
    vol, prob, ball, _ = scene((0.7, 0.7, 1.25))
    for k in range(5):  # vessel pieces 3 mm across, 5 mm apart: every pair too far for one nodule
        ball((20.0 + 5.0 * k, 40.0, 30.0), 3.2)
    assert len(find_candidates(vol, prob)) == 5


def test_merge_groups_joins_pieces_of_one_ball_only():
    v = 4 / 3 * np.pi
    # two halves of a 10 mm ball: centres 3.75 mm apart, the ball holding both is 5 mm across
    halves = np.array([[0.0, 0, 0], [3.75, 0, 0]])
    assert merge_groups(halves, np.array([v * 125 / 2] * 2)) == [[0, 1]]
    # two 6 mm balls 8 mm apart (their union's sphere: 3.8 mm radius) stay apart
    assert merge_groups(np.array([[0.0, 0, 0], [8.0, 0, 0]]), np.array([v * 27] * 2)) == [[0], [1]]
    # a row of 3 mm pieces 5 mm apart never chains
    row = np.array([[5.0 * k, 0, 0] for k in range(6)])
    assert merge_groups(row, np.full(6, v * 1.5**3), pad_mm=0.9) == [[k] for k in range(6)]
    # bounded: even a huge union never joins centres farther apart than max_mm
    assert merge_groups(halves * 4, np.array([v * 1e5] * 2), max_mm=10.0) == [[0], [1]]


def test_crumbs_join_the_nearest_large_fragment_of_their_blob():
    pos = np.array([[0.0, 0, 0], [3.0, 0, 0], [20.0, 0, 0], [40.0, 0, 0]])
    counts = np.array([100, 2, 80, 1])
    raw = np.array([1, 1, 1, 2])  # the last crumb is alone in its blob
    assert crumb_parents(pos, counts, raw, 10).tolist() == [0, 0, 2, 3]


def test_centres_are_hu_weighted_as_the_book():
    vol, prob, ball, _ = scene((1.0, 1.0, 1.0), (40.0, 40.0, 40.0))
    ball((20.0, 20.0, 20.0), 8.0)
    vol.hu[:, :, 20:][prob[:, :, 20:] > 0] = 900  # the denser half pulls the centre
    (c,) = find_candidates(vol, prob)
    # the book: the eroded blob's centre of mass with weights HU + 1001 (here 1031 and 1901)
    eroded = ndimage.binary_erosion(prob > 127)
    w = np.where(eroded, vol.hu.astype(float) + 1001.0, 0.0)
    expected = [float((w * g).sum() / w.sum()) for g in np.indices(w.shape)]
    np.testing.assert_allclose(c.center_irc, expected, atol=1e-9)
    assert c.center_irc[2] > 20.1  # the denser half pulls the centre towards it
