"""Nodule sizes against exact truths: analytic shapes rendered with their partial volume, and
phantom nodules whose drawn volume is known exactly."""

import numpy as np
import pytest

from lungview.core import CtVolume
from lungview.inference.lungmask import lung_mask
from lungview.inference.measure import blob_size, measure
from lungview.synthetic import make_phantom


def covered(shape, spacing_xyz, inside, supersample=4) -> np.ndarray:
    """The fraction of each voxel where `inside(x, y, z)` (mm from the array's centre) holds,
    from supersample^3 points per voxel: an exact partial volume to render a shape with."""
    sx, sy, sz = spacing_xyz
    c = [(n - 1) / 2 for n in shape]
    k = (np.arange(supersample) + 0.5) / supersample - 0.5
    frac = np.zeros(shape)
    for di in k:
        for dr in k:
            for dc in k:
                i, r, cc = np.ogrid[:shape[0], :shape[1], :shape[2]]
                frac += inside((cc + dc - c[2]) * sx, (r + dr - c[1]) * sy, (i + di - c[0]) * sz)
    return frac / supersample**3


def ellipsoid_scan(semi_axes_xyz, spacing_xyz=(0.7, 0.7, 1.25), lung=-850.0, nodule=30.0, supersample=4):
    """An ellipsoid in lung, each voxel the exact mix of both densities (supersampled)."""
    a = np.asarray(semi_axes_xyz, float)
    sx, sy, sz = spacing_xyz
    shape = tuple(int(np.ceil(2.6 * r / s)) | 1 for r, s in zip(a[::-1], (sz, sy, sx)))
    frac = covered(shape, spacing_xyz, lambda x, y, z: (x / a[0]) ** 2 + (y / a[1]) ** 2 + (z / a[2]) ** 2 <= 1.0,
                   supersample)
    c = [(n - 1) / 2 for n in shape]
    hu = np.rint(lung + (nodule - lung) * frac).astype(np.int16)
    return CtVolume(hu=hu, spacing_xyz=spacing_xyz, origin_xyz=(0, 0, 0)), np.array(c)


def half_filled_volume(vol: CtVolume, lung=-850.0, nodule=30.0) -> float:
    """What a perfect mask at the half-way level holds: the voxels more than half nodule."""
    return float((vol.hu > (lung + nodule) / 2).sum() * vol.voxel_volume_mm3)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
def test_sphere_and_ellipsoid_worked_out_exactly(spacing):
    vol, c = ellipsoid_scan((5.0, 5.0, 5.0), spacing)
    s = measure(vol, c)
    assert s.volume_mm3 == pytest.approx(half_filled_volume(vol), rel=0.02)
    # 10 mm along z on 2.5 mm slices is four samples: the voxel grid itself is 9 % off at worst
    assert s.volume_mm3 == pytest.approx(4 / 3 * np.pi * 125, rel=0.1)
    assert s.diameter_mm == pytest.approx(10.0, rel=0.035)
    assert s.long_axis_mm == pytest.approx(10.0, abs=1.0) and s.short_axis_mm == pytest.approx(10.0, abs=1.0)
    # 16 x 10 mm in the axial plane, 10 mm along z: long 16, short 10, volume 4/3 pi 8 5 5
    vol, c = ellipsoid_scan((8.0, 5.0, 5.0), spacing)
    s = measure(vol, c)
    assert s.long_axis_mm == pytest.approx(16.0, abs=1.0) and s.short_axis_mm == pytest.approx(10.0, abs=1.0)
    assert s.volume_mm3 == pytest.approx(half_filled_volume(vol), rel=0.02)
    assert s.volume_mm3 == pytest.approx(4 / 3 * np.pi * 8 * 5 * 5, rel=0.12)
    assert s.mean_diameter_mm == round((s.long_axis_mm + s.short_axis_mm) / 2, 1)


@pytest.mark.parametrize("radius", [3.0, 3.1, 3.5])
def test_small_ball_on_thick_slices_keeps_its_caps(radius):
    """A 6-7 mm ball centred on a 2.5 mm slice: the slices above and below hold caps the opening
    takes off (its ball is smaller than a slice), and no give-back shorter than a slice reaches
    them. The mask is what a perfect one at the half-way level holds, caps included (before, a
    6 mm ball lost them: -14.8 % on the diameter where the voxels more than half nodule give -6.7 %)."""
    vol, c = ellipsoid_scan((radius, radius, radius), (0.7, 0.7, 2.5))
    s = measure(vol, c)
    assert s.volume_mm3 == pytest.approx(half_filled_volume(vol), rel=0.02)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("radius", [3.0, 4.0])
def test_calcified_ball_in_lung_ends_half_way_to_the_lung(spacing, radius):
    """A 6 or 8 mm calcification (450 HU) in lung: the mask is the voxels more than half calcium,
    the level half-way, -200 HU (a level capped at -300 HU took in its blur: +2 to +13 % on the
    volume at 1.25 mm slices, +9 to +32 % at 2.5 mm)."""
    vol, c = ellipsoid_scan((radius, radius, radius), spacing, nodule=450.0)
    s = measure(vol, c)
    assert s.level_hu == pytest.approx(-200.0, abs=15.0)
    assert s.volume_mm3 == pytest.approx(half_filled_volume(vol, nodule=450.0), rel=0.02)


def test_blob_size_is_a_sphere_of_the_blob():
    s = blob_size(1000, (1.0, 0.5, 0.5))
    assert s.volume_mm3 == 250.0 and s.diameter_mm == pytest.approx((6 * 250 / np.pi) ** (1 / 3))


@pytest.fixture(scope="module")
def phantom_errors():
    """Relative error of the equivalent diameter for every phantom nodule of 6 mm or more, at
    0.7 x 1.25 mm and 0.7 x 2.5 mm voxels, measured at the true centres with the scan's lung mask
    (as the pipeline measures): the set scripts/bench_sizes.py reports."""
    rows = []
    for slice_mm in (1.25, 2.5):
        for seed in range(16):
            ph = make_phantom(seed, size=512, slices=int(200 / slice_mm), pixel_mm=0.7, slice_mm=slice_mm,
                              nodules=6)
            lung = lung_mask(ph.volume)
            for n in ph.nodules:
                if n.equivalent_diameter_mm >= 6.0:
                    got = measure(ph.volume, n.center_irc, lung=lung).diameter_mm
                    rows.append((n.kind, n.margin, slice_mm, got / n.equivalent_diameter_mm - 1.0))
    return rows


@pytest.mark.slow
def test_phantom_nodules_measured_within_their_exact_size(phantom_errors):
    errors = np.array([e for *_, e in phantom_errors])
    kinds = {k for k, *_ in phantom_errors}
    assert len(errors) >= 150 and kinds == {"solid", "part-solid", "ground-glass", "juxtapleural", "calcified"}
    assert np.median(np.abs(errors)) <= 0.01, np.round(errors, 3)
    # the goal, 5 % for every one (the worst of these: a 7.1 mm calcified nodule at 2.5 mm slices, +4.5 %)
    assert np.abs(errors).max() <= 0.05, np.round(errors, 3)


def ball_beside(spacing, radius, hu_ball, hu_other, other, size_mm=40.0, lung=-850.0, above_mm=0.0):
    """A ball of `radius` mm at the centre (or `above_mm` above it along z) and a second structure
    `other(x, y, z)` (mm from the ball's centre) where the ball is not, in lung: each voxel the
    exact mix of the three densities. Returns the volume and the array's centre voxel."""
    shape = tuple(int(size_mm / s) | 1 for s in spacing[::-1])
    ball = covered(shape, spacing, lambda x, y, z: x**2 + y**2 + (z - above_mm) ** 2 <= radius**2)
    rest = covered(shape, spacing, lambda x, y, z: other(x, y, z - above_mm)
                   & (x**2 + y**2 + (z - above_mm) ** 2 > radius**2))
    hu = np.rint(lung + (hu_ball - lung) * ball + (hu_other - lung) * rest).astype(np.int16)
    return CtVolume(hu=hu, spacing_xyz=spacing, origin_xyz=(0, 0, 0)), np.array([(n - 1) / 2 for n in shape])


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
def test_calcified_nodule_on_a_vessel(spacing):
    """A 7.2 mm calcification (450 HU) with a 3.2 mm vessel (40 HU) sunk 1 mm into its side: the
    mask ends half-way to the vessel where they meet and half-way to the lung elsewhere, across
    slices too (the blur of a 2.5 mm slice is no vessel)."""
    r = 3.6
    vol, c = ball_beside(spacing, r, 450.0, 40.0, lambda x, y, z: (y - (r + 0.6)) ** 2 + z**2 <= 1.6**2)
    s = measure(vol, c)
    assert s.diameter_mm == pytest.approx(2 * r, rel=0.05)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("touching", ["airway wall", "oblique airway wall", "vessel"])
def test_solid_nodule_keeps_no_stub_of_what_it_touches(spacing, touching):
    """A 12 mm solid ball touching a 1.5 mm airway wall (across the slices, or oblique to them) or
    a 3 mm vessel of the same density: the opening takes them off and gives back what it shaved
    from the ball; what it would give back of the wall or the vessel (a collar, a stub: 2.7 to
    4.2 % on the diameter) goes on beyond the give-back's reach and is not the nodule's."""
    r = 6.0
    other = {"airway wall": lambda x, y, z: (y >= r - 0.3) & (y <= r + 1.2),
             "oblique airway wall": lambda x, y, z: np.abs(0.8 * y + 0.6 * z - (r + 0.45)) <= 0.75,
             "vessel": lambda x, y, z: (y - r) ** 2 + x**2 <= 1.5**2}[touching]
    vol, c = ball_beside(spacing, r, 35.0, 40.0, other)
    assert measure(vol, c).diameter_mm == pytest.approx(2 * r, rel=0.02)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("across_slices", [False, True])
def test_large_nodule_keeps_no_stub_of_a_vessel_trunk(spacing, across_slices):
    """An 18 mm solid ball sunk 1 mm into an 8 mm vessel trunk of the same density that runs through
    the box, along the slices or across them. A nodule this large keeps the give-back's bases of
    thinner vessels and spicules (readers draw them), but not the stub of a trunk 5 mm or more
    across: before, +3.0 and +2.7 % at 1.25 mm slices, +6.7 % at 2.5 mm along the slices."""
    r, vr = 9.0, 4.0
    d = r + vr - 1.0
    if across_slices:
        trunk = lambda x, y, z: (y - d) ** 2 + x**2 <= vr**2  # noqa: E731
    else:
        trunk = lambda x, y, z: (y - d) ** 2 + z**2 <= vr**2  # noqa: E731
    vol, c = ball_beside(spacing, r, 35.0, 40.0, trunk, size_mm=50.0)
    assert measure(vol, c).diameter_mm == pytest.approx(2 * r, rel=0.02)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("vessel_radius", [3.5, 5.0])
def test_round_nodule_on_a_vessel_as_thick_as_itself(spacing, vessel_radius):
    """A 7 mm solid ball sunk 1 mm into a vessel 7 or 10 mm wide that runs through the whole box:
    no neck between them (the vessel is as deep as the ball), so the ball is the sphere that its
    outline fits (before, the vessel's trunk was measured with it: +46 to +54 % at 1.25 mm slices)."""
    r = 3.5
    vol, c = ball_beside(spacing, r, 35.0, 40.0,
                         lambda x, y, z: (y - (r + vessel_radius - 1.0)) ** 2 + z**2 <= vessel_radius**2)
    assert measure(vol, c).diameter_mm == pytest.approx(2 * r, rel=0.05)


@pytest.mark.parametrize("radius", [4.0, 4.5, 5.0])
def test_nodule_centred_off_its_slice_keeps_its_cap_past_a_vessel_neck(radius):
    """An 8-10 mm solid ball centred 1 mm above a 2.5 mm slice, a vessel 5.5 mm wide (too thick for
    the opening) running off its side: the nodule is cut from it at their neck as the balls of its
    deepest voxels, which lie on that slice and are 1 mm shallower than the nodule's radius. The
    sphere its outline fits places the centre off the slice, and the balls are moved and widened
    that far: before, the slice over the centre lost its rim and the cap slice beyond it (-12.4,
    -6.2 and -7.4 %)."""
    vol, c = ball_beside((0.7, 0.7, 2.5), radius, 35.0, 35.0, lambda x, y, z: (y**2 + z**2 <= 2.75**2) & (x > 0),
                         above_mm=1.0)
    s = measure(vol, c)
    assert s.diameter_mm == pytest.approx(2 * radius, rel=0.05)


@pytest.mark.parametrize("shift", [0.0, 0.9, -1.25])
def test_balls_moved_along_the_slices_by_their_definition(shift):
    """The cut at a neck covers a nodule with balls about its deep voxels and the same balls moved
    `shift` mm along the slice axis, that much wider: checked voxel by voxel against the distances
    to every point, at 0.7 x 0.7 x 2.5 mm."""
    from lungview.inference.nodule_mask import _balls

    spacing = np.array([2.5, 0.7, 0.7])
    points = np.zeros((9, 21, 21), dtype=bool)
    points[4, 10, 10] = points[4, 11, 12] = points[5, 9, 10] = True
    got = _balls(points, 3.1, spacing, shift)
    grid = np.indices(points.shape).reshape(3, -1).T * spacing
    want = np.zeros(grid.shape[0], dtype=bool)
    for p in np.argwhere(points) * spacing:
        want |= np.linalg.norm(grid - p, axis=1) <= 3.1
        want |= np.linalg.norm(grid - (p + [shift, 0.0, 0.0]), axis=1) <= 3.1 + abs(shift)
    assert got.sum() > 0 and np.array_equal(got, want.reshape(points.shape))


@pytest.mark.parametrize("radius", [0.8, 1.9, 3.1])
def test_dilation_and_erosion_in_mm_by_their_definition(radius):
    """dilate_mm and erode_mm, which work only over the mask's box and what the ball reaches from
    it, against the definitions voxel by voxel at 2.5 x 0.7 x 0.7 mm: a voxel is in the dilation
    where a mask voxel lies within the radius, in the erosion where every voxel of the array
    within the radius is in the mask (none beyond the array's edge counts); masks in the middle,
    against an edge and in a corner of the array."""
    from lungview.inference.nodule_mask import dilate_mm, erode_mm

    spacing = np.array([2.5, 0.7, 0.7])
    shape = (9, 17, 19)
    grid = np.indices(shape).reshape(3, -1).T * spacing
    dist = np.linalg.norm(grid[:, None, :] - grid[None, :, :], axis=2)
    rng = np.random.default_rng(5)
    for box in [(slice(1, 8), slice(3, 14), slice(4, 15)), (slice(0, 6), slice(3, 14), slice(0, 11)),
                (slice(3, 9), slice(6, 17), slice(8, 19))]:
        mask = np.zeros(shape, dtype=bool)
        mask[box] = True
        mask[tuple(rng.integers([b.start for b in box], [b.stop for b in box]))] = False  # a hole
        flat = mask.ravel()
        dilated = (dist[:, flat] <= radius).any(axis=1)
        eroded = flat & ~(dist[:, ~flat] <= radius).any(axis=1)
        assert np.array_equal(dilate_mm(mask, radius, spacing).ravel(), dilated)
        assert np.array_equal(erode_mm(mask, radius, spacing).ravel(), eroded)
        assert dilated.sum() > flat.sum() and 0 < eroded.sum() < flat.sum()


def test_phantom_nodule_centred_off_its_slice_keeps_its_cap():
    """Phantom seed 281 at 2.5 mm slices: a 9.1 mm solid nodule centred 1 mm off the slice of its
    deepest voxels, a vessel at its far cap: cut from the vessel at the neck, it lost its near cap
    slice (-5.4 %)."""
    ph = make_phantom(281, size=512, slices=80, pixel_mm=0.7, slice_mm=2.5, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "solid" and 8.5 < n.equivalent_diameter_mm < 9.5]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
def test_small_nodule_at_the_end_of_a_denser_vessel_is_seeded_on_its_own_slice(spacing):
    """A 7 mm solid ball (35 HU) from whose top a 5 mm vessel, denser (60 HU), runs on along the
    slices, 1 mm off its axis: the seed is the densest voxel within 1.5 mm of the centre, on the
    centre's own slice at 2.5 mm slices, not the vessel's in the next slice (seeded there, the
    ball measured +9.0 %)."""
    r = 3.5
    vol, c = ball_beside(spacing, r, 35.0, 60.0, lambda x, y, z: ((x - 1.0) ** 2 + y**2 <= 2.5**2) & (z >= r - 0.5))
    assert measure(vol, c).diameter_mm == pytest.approx(2 * r, rel=0.05)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("oblique", [False, True])
def test_nodule_inside_an_airway_keeps_none_of_its_wall(spacing, oblique):
    """A 7 mm solid ball in the 9 mm lumen of an airway (a 1.5 mm wall of the ball's density), touching
    its wall; the airway across the slices or oblique to them. What the opening's ball
    kept of the wall in the corner between them lies beyond the sphere the ball's outline fits and
    goes (before: +5.9 % at 2.5 mm slices, oblique)."""
    r, inner, off = 3.5, 4.5, 1.0

    def wall(x, y, z):
        d = np.hypot(x, (y - off) * 0.8 - z * 0.6) if oblique else np.hypot(x, y - off)
        return (d >= inner) & (d <= inner + 1.5)

    vol, c = ball_beside(spacing, r, 35.0, 40.0, wall)
    assert measure(vol, c).diameter_mm == pytest.approx(2 * r, rel=0.05)


def test_part_solid_nodule_whose_glass_its_core_cuts_apart():
    """Phantom seed 64 at 2.5 mm slices: an 8 mm part-solid nodule whose ring of glass its core and
    a vessel's end cut into pieces; the seed lands on a small one. Its pieces are joined through the
    core (measured -33 % when only the seed's piece was grown)."""
    ph = make_phantom(64, size=512, slices=80, pixel_mm=0.7, slice_mm=2.5, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "part-solid" and 7.5 < n.equivalent_diameter_mm < 8.5]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


def test_juxtapleural_nodule_on_a_rib_where_no_pleura_fits():
    """Phantom seed 202 at 1.25 mm slices: a 13.7 mm juxtapleural nodule against a rib, where the
    wall is too curved for the pleura's quadric and the local closing lets the rib in: the mask
    stops at the rib's cortex (over 400 HU; +10.5 % with the rib's marrow inside it)."""
    ph = make_phantom(202, size=512, slices=160, pixel_mm=0.7, slice_mm=1.25, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "juxtapleural" and 13.0 < n.equivalent_diameter_mm < 14.0]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


@pytest.mark.parametrize("slice_mm", [1.25, 2.5])
def test_juxtapleural_nodule_sunk_in_a_wall_where_no_pleura_fits(slice_mm):
    """Phantom seed 283: a 13.4 mm juxtapleural nodule sunk in a wall too curved for the pleura's
    quadric (it fits within 2.0-2.2 mm), so the local closing keeps the wall out. A ball in the
    wall rises into the base of what is sunk in it by about width^2 / (2 ball): the narrowest ball
    wider than the nodule (12-14 mm) took the base's middle for wall (-8.8 % at 1.25 mm slices,
    -9.5 % at 2.5 mm); one as wide as the wall beside it holds leaves less of it."""
    ph = make_phantom(283, size=512, slices=int(200 / slice_mm), pixel_mm=0.7, slice_mm=slice_mm, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "juxtapleural" and 13.0 < n.equivalent_diameter_mm < 14.0]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


def test_juxtapleural_nodule_where_the_pleura_fits_loosely():
    """Phantom seed 214 at 1.25 mm slices: a 16.1 mm juxtapleural nodule whose wall the pleura's
    quadric fits only within 1.4 mm; carried on under the nodule, that surface left part of the
    wall in its mask (+6.6 %). A fit that loose is not taken (1.2 mm), and the local closing,
    whose ball no longer rises far into the base, keeps the wall out."""
    ph = make_phantom(214, size=512, slices=160, pixel_mm=0.7, slice_mm=1.25, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "juxtapleural" and 15.5 < n.equivalent_diameter_mm < 16.5]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


def glass_and_vessel(spacing, R, rv, axis_mm):
    """A ground-glass ball (-600 HU) of radius `R` mm at the centre, in lung, and a vessel (40 HU) of
    radius `rv` along x whose axis runs `axis_mm` from the centre, drawn over the glass; each voxel
    the exact mix."""
    sx, sy, sz = spacing
    shape = (int(40 / sz) | 1, int(40 / sy) | 1, int(40 / sx) | 1)
    vessel = covered(shape, spacing, lambda x, y, z: (y - axis_mm) ** 2 + z**2 <= rv**2)
    glass = covered(shape, spacing, lambda x, y, z: (x**2 + y**2 + z**2 <= R**2) & ((y - axis_mm) ** 2 + z**2 > rv**2))
    hu = np.rint(-850.0 + 250.0 * glass + 890.0 * vessel).astype(np.int16)
    return CtVolume(hu=hu, spacing_xyz=spacing, origin_xyz=(0, 0, 0)), np.array([(n - 1) / 2 for n in shape])


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("offset", [2.0, 2.5, 3.0])
def test_ground_glass_a_vessel_crosses(spacing, offset):
    """A 10 mm ground-glass nodule (-600 HU) that a 3 mm vessel (40 HU) crosses `offset` mm from
    its centre: the nodule is the ball, the vessel's stretch inside it included, the rest of the
    vessel not. Where the vessel fills much of the shell just inside the nodule's edge, its
    density must not set the level (at 3 mm on 1.25 mm slices that lost the glass: 3.4 mm)."""
    s = measure(*glass_and_vessel(spacing, 5.0, 1.5, offset))
    assert s.diameter_mm == pytest.approx(10.0, rel=0.05)
    assert s.level_hu < -600  # below the glass: half-way between it and the lung


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
@pytest.mark.parametrize("axis_mm", [3.5, 9.0])
def test_ground_glass_partly_hidden_by_a_vessel(spacing, axis_mm):
    """A 12 mm ground-glass ball and a 6 mm vessel whose axis runs `axis_mm` from the ball's
    centre. At 3.5 mm the vessel hides a third of the ball, which the phantom's truth counts
    (denser tissue drawn over it): the glass's round outline where it meets the lung is completed
    through the vessel (a reader's outline; without it -5.0 and -6.1 %). At 9 mm the vessel only
    touches the ball: nothing of it is taken."""
    assert measure(*glass_and_vessel(spacing, 6.0, 3.0, axis_mm)).diameter_mm == pytest.approx(12.0, rel=0.05)


@pytest.mark.parametrize("radius", [3.5, 4.5])
def test_ground_glass_keeps_no_base_of_its_spicules(radius):
    """A 7 or 9 mm ground-glass ball (-600 HU) with six spicules of soft tissue (0 HU, 1.8 mm
    thick) reaching 4 mm beyond it, at 2.5 mm slices: the opening takes them off, and what its
    give-back would take of them goes on beyond its reach, as a solid nodule's vessel stubs do
    (+8.1 and +5.3 % when ground glass kept its give-back whole)."""
    dirs = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0.6, 0.6, 0.53], [-0.6, 0.5, -0.62]])
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)

    def spicules(x, y, z):
        out = np.zeros(np.broadcast(x, y, z).shape, dtype=bool)
        for d in dirs:
            along = x * d[0] + y * d[1] + z * d[2]
            out |= (along > 0) & (along < radius + 4.0) & (x**2 + y**2 + z**2 - along**2 <= 0.9**2)
        return out

    s = measure(*ball_beside((0.7, 0.7, 2.5), radius, -600.0, 0.0, spicules))
    assert s.diameter_mm == pytest.approx(2 * radius, rel=0.05)


def test_phantom_ground_glass_keeps_no_base_of_its_spicules():
    """Phantom seed 84 at 1.25 mm slices: a 7.9 mm spiculated ground-glass nodule among vessels,
    whose give-back took the bases of its spicules and the partial-volume skin of the vessels it
    touches (+5.3 %)."""
    ph = make_phantom(84, size=512, slices=160, pixel_mm=0.7, slice_mm=1.25, nodules=6)
    (n,) = [n for n in ph.nodules if n.kind == "ground-glass"]
    got = measure(ph.volume, n.center_irc, lung=lung_mask(ph.volume)).diameter_mm
    assert got == pytest.approx(n.equivalent_diameter_mm, rel=0.05)


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 1.25), (0.7, 0.7, 2.5)])
def test_juxtapleural_nodule_ends_at_the_pleural_line(spacing):
    """A 12 mm sphere whose centre lies 3 mm inside the lung from a flat, oblique chest wall of
    the same density: what lies in the lung is the sphere less a cap of height 3 mm, V = 4/3 pi
    R^3 - pi h^2 (3R - h) / 3 (R = 6, h = 3: 763.4 mm3), rendered with its exact partial volume."""
    sx, sy, sz = spacing
    R, depth, normal = 6.0, 3.0, np.array([0.8, 0.36, 0.48])  # (x, y, z), unit
    shape = (int(60 / sz) | 1, int(60 / sy) | 1, int(60 / sx) | 1)
    c = np.array([(n - 1) / 2 for n in shape])
    frac = covered(shape, spacing, lambda x, y, z: (x * normal[0] + y * normal[1] + z * normal[2] > depth)  # the wall
                   | (x**2 + y**2 + z**2 <= R**2))
    hu = np.rint(-850.0 + 880.0 * frac).astype(np.int16)
    vol = CtVolume(hu=hu, spacing_xyz=spacing, origin_xyz=(0, 0, 0))
    truth = 4 / 3 * np.pi * R**3 - np.pi * (R - depth) ** 2 * (3 * R - (R - depth)) / 3
    s = measure(vol, c)
    assert s.volume_mm3 == pytest.approx(truth, rel=0.08)
    assert s.diameter_mm == pytest.approx(np.cbrt(6 * truth / np.pi), rel=0.025)
