"""Nodule size as radiologists measure it, from a nodule mask grown in the scan.

The mask: voxels denser than half-way between the nodule's edge and the surrounding lung (the
half-maximum level, where a blurred edge crosses the true surface), connected to the centre and
limited in mm: within 2 r0 + 4 mm of it (r0, the inscribed radius, from a first probe) and within
the scan's lung mask when one is given. The level is found in two passes: a low one that also takes
in ground glass, then the half-way level for the density just inside the nodule's edge (solid tissue
for a solid nodule, ground glass for a part-solid or ground-glass one, grown in a band below the
density of the vessels it touches; calcium ends half-way to the soft tissue it touches, and half-way
to the lung only where its blur runs out into lung). The region is then shaped by
inference.nodule_mask (vessels, spicules, stubs and attachments off; what is hidden of ground glass
completed). A juxtapleural nodule ends at the pleural line: the wall's surface around it, fitted
with a quadric and carried on under its base, as a reader draws it; where the wall is not that
smooth (a corner, a fissure), the chest wall and mediastinum are kept out by closing the lung's air
locally (with a ball wider than the nodule; for a nodule sunk in the wall, as wide as the wall beside
it holds, so that the ball does not rise far into its base), and a soft-tissue nodule stops at bone
(a rib's cortex, over BONE_HU) the closing lets in.

From the mask: the volume, the equivalent-sphere diameter (`diameter_mm`, what LUNA16's
diameter_mm is compared with), and on the axial slice of largest extent the long axis (largest
Feret diameter) and the short axis (largest extent perpendicular to it); their mean is the size
that Fleischner and Lung-RADS categories use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lungview.core import CtVolume
from lungview.core.findings import mean_diameter
from lungview.core.shape import axial_axes, equivalent_diameter, sphere_volume
from lungview.inference.lungmask import LungMask
from lungview.inference.nodule_mask import COMPACT_EXTENT, component, d2_from, grow, open_mm

MAX_RADIUS_MM = 30.0  # the largest nodule measured (3 cm; larger is a mass) reaches this far
MIN_RADIUS_MM = 8.0  # smallest probe around a candidate
PROBE_MM = 16.0  # probe without a candidate size
LUNG_HU = -850.0  # used when the surroundings hold too little lung to estimate it
GROUND_GLASS_ABOVE_LUNG = 150.0  # first pass: ground glass is at least this much denser than lung
GROUND_GLASS_EDGE_HU = -300.0  # an edge below this is ground glass ...
GROUND_GLASS_BAND = 250.0  # ... and the mask then stops this far above the edge density
GLASS_SHARE = 0.25  # a shell this much ground glass, its median far above the glass's: glass a vessel crosses
CALCIFIED_EDGE_HU = 200.0  # an edge above this is calcium: denser than half-way to soft tissue, or its blur into lung
BONE_HU = 400.0  # a soft-tissue nodule's mask stops at bone this dense (a rib the local closing lets in)
SOFT_TISSUE_HU = 40.0
AIR_HU = -400.0  # the chest wall, a nodule, a vessel are denser than this; the lung's air is below it
WALL_TISSUE_MM = 3.0  # the pleura is fitted where tissue this thick meets air (not a vessel)
PLEURA_RMS_MM = 1.2  # ... by a quadric that fits it this closely (else the local closing is used)
MAX_BALL_MM = 25.0  # the local closing's ball: wider than the nodule (1.5 r0 + 3 mm), at most this ...
RISE_MM = 1.0  # ... and where that would rise more than this into a sunk nodule's base, as wide as the wall holds
WALL_FIT = 0.8  # ... with room to spare (a ball as deep as the wall keeps only the wall's deepest point)


@dataclass(frozen=True)
class NoduleSize:
    diameter_mm: float  # equivalent-sphere diameter of the mask
    volume_mm3: float
    long_axis_mm: float  # axial plane, slice of largest extent
    short_axis_mm: float  # perpendicular to the long axis, same slice
    level_hu: float = 0.0  # the threshold the mask was grown at
    voxels: int = 0
    box: tuple[slice, slice, slice] | None = field(default=None, compare=False, repr=False)  # where the mask lies
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool, over `box`

    @property
    def mean_diameter_mm(self) -> float:
        return mean_diameter(self.long_axis_mm, self.short_axis_mm)


def measure(vol: CtVolume, center_irc, blob_voxels: int | None = None,
            max_radius_mm: float = MAX_RADIUS_MM, lung: LungMask | None = None) -> NoduleSize:
    """Size of the nodule at `center_irc`. A probe around the centre finds the seed, the lung's
    density and the nodule's inscribed radius r0 (in a box sized by `blob_voxels`, the
    candidate's size in the segmentation, grown while r0 nears its edge); the mask is then
    grown within 2 r0 + 4 mm of the seed (at most `max_radius_mm`) and, given the scan's lung
    mask (closed: juxtapleural nodules lie inside it), within that too: where the chest wall is
    thinner than the nodule is wide, the local closing alone cannot tell them apart."""
    spacing = np.asarray(vol.spacing_irc, dtype=np.float64)
    reach = PROBE_MM
    if blob_voxels:
        blob_radius = float(np.cbrt(3.0 * blob_voxels * np.prod(spacing) / (4.0 * np.pi)))
        reach = float(np.clip(2.0 * blob_radius + 2.0 * spacing.max(), MIN_RADIUS_MM, max_radius_mm))
    c = np.clip(np.rint(np.asarray(center_irc, dtype=np.float64)).astype(int), 0, np.array(vol.shape) - 1)
    while True:
        probe = _probe(vol, c, reach, spacing)
        if probe is None:  # no denser tissue at the centre: one voxel, so the candidate has a size
            one = equivalent_diameter(float(np.prod(spacing)))
            return NoduleSize(one, float(np.prod(spacing)), float(spacing[2]), float(spacing[1]), 0.0, 1)
        seed, lung_hu, r0, at_seed = probe
        if r0 + 2.0 * spacing.max() < reach or reach >= max_radius_mm:
            break
        reach = min(max_radius_mm, reach * 2.0)
    return _measure_at(vol, seed, min(2.0 * r0 + 4.0, max_radius_mm), r0, lung_hu, spacing, at_seed, lung)


def _probe(vol: CtVolume, c: np.ndarray, reach: float, spacing):
    """(seed voxel, lung HU, inscribed radius r0 in mm, depth at the seed) around `c`, or None
    without a nodule."""
    box, lo = _box(vol, c, reach, spacing)
    hu = vol.hu[box].astype(np.float32)
    ball = d2_from(c - lo, hu.shape, spacing) <= reach**2
    lung_voxels = hu[ball & (hu < -500)]
    lung_hu = float(np.clip(np.median(lung_voxels), -950, -700)) if lung_voxels.size > 50 else LUNG_HU
    seed = _densest_near(hu, c - lo, spacing)
    first = component((hu > lung_hu + GROUND_GLASS_ABOVE_LUNG) & ball, seed)
    if first is None:
        return None
    inner = ndimage.distance_transform_edt(first, sampling=spacing)
    close = first & (d2_from(seed, hu.shape, spacing) <= max(2.0, spacing.max()) ** 2)  # the next slice too
    r0 = float(inner[close].max() if close.any() else inner.max())
    return np.array(seed) + lo, lung_hu, r0, float(inner[seed])


def blob_size(voxels: int, spacing_irc) -> NoduleSize:
    """The size of a candidate's segmentation blob, as a sphere: for candidates too unlikely to
    be worth measuring."""
    volume = float(voxels * np.prod(spacing_irc))
    d = equivalent_diameter(volume)
    return NoduleSize(d, volume, d, d, 0.0, int(voxels))


def _box(vol: CtVolume, c: np.ndarray, reach_mm: float, spacing):
    steps = np.ceil(reach_mm / spacing).astype(int)
    lo = np.maximum(c - steps, 0)
    hi = np.minimum(c + steps + 1, vol.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), lo


def _lung_side(vol: CtVolume, c, box, reach_mm: float, radius_mm: float, spacing) -> np.ndarray:
    """Where the lung is, over `box` within `reach_mm` of `c`: air (below AIR_HU) closed with a
    ball of `radius_mm`, so that nodules and vessels thinner than the ball lie inside it while
    the chest wall, mediastinum and diaphragm beyond the pleura stay out (the morphological
    opening of the tissue keeps only what a ball of that size fits in)."""
    outer, _ = _box(vol, c, reach_mm + radius_mm, spacing)
    kept = open_mm(vol.hu[outer] >= AIR_HU, radius_mm, spacing)
    out = np.zeros(tuple(b.stop - b.start for b in box), dtype=bool)
    both = [slice(max(b.start, o.start), min(b.stop, o.stop)) for b, o in zip(box, outer)]
    out[tuple(slice(x.start - b.start, x.stop - b.start) for x, b in zip(both, box))] = \
        ~kept[tuple(slice(x.start - o.start, x.stop - o.start) for x, o in zip(both, outer))]
    return out


def _wall_around(vol: CtVolume, c, r0: float, margin_mm: float, spacing):
    """(tissue, ring, lo) around a nodule of inscribed radius r0 at `c`: tissue (denser than AIR_HU)
    over the box within the ring's outer radius plus `margin_mm` of `c`, whose first voxel is `lo`,
    and the ring, the shell where the chest wall beside the nodule is looked at: beyond the
    nodule's reach (COMPACT_EXTENT r0), from 2 to 10 mm further."""
    inner, outer = COMPACT_EXTENT * r0 + 2.0, COMPACT_EXTENT * r0 + 10.0
    box, lo = _box(vol, c, outer + margin_mm, spacing)
    tissue = vol.hu[box] >= AIR_HU
    d2 = d2_from(tuple(int(x) for x in np.asarray(c) - lo), tissue.shape, spacing)
    return tissue, (d2 >= inner**2) & (d2 <= outer**2), lo


def _closing_ball(vol: CtVolume, c, r0: float, width: float, wall: float, spacing) -> float:
    """The ball of the local closing that keeps the chest wall out: `wall`, wider than the nodule
    (`width`, its depth at the seed). But a ball in the wall rises into the base of a nodule sunk
    in it, by about width^2 / (2 ball) (the ball's cap under the base's circle, whose radius is
    about the nodule's width, is taken for wall: at 1.25 mm slices, a 13.4 mm phantom nodule lost
    9 % of its diameter to it); where that is more than RISE_MM, the ball is as wide as the wall
    beside the nodule holds (WALL_FIT of its depth in the ring where the pleura is fitted), at
    most MAX_BALL_MM. Not for smaller nodules: there a wider ball shaves more of the wall's own
    relief along them (a voxel staircase) into the lung's side than it gives back of the base."""
    if width * width / (2.0 * wall) <= RISE_MM:
        return wall
    tissue, ring, _ = _wall_around(vol, c, r0, MAX_BALL_MM, spacing)
    beside = tissue & ring
    if not beside.any():
        return wall
    depth = ndimage.distance_transform_edt(tissue, sampling=spacing)
    return float(np.clip(WALL_FIT * depth[beside].max(), wall, MAX_BALL_MM))


def _pleural_side(vol: CtVolume, c, box, r0: float, spacing) -> np.ndarray | None:
    """The lung's side of the pleura, over `box`: the wall's surface around a juxtapleural
    nodule (where tissue too thick for a vessel meets air, in a ring beyond the nodule's reach
    of COMPACT_EXTENT r0) fitted with a quadric and carried on under the nodule, as a reader
    draws the pleural line through its base. None where the surface is not smooth enough for
    that (a corner, a fissure) or too little of it is seen."""
    tissue, in_ring, lo = _wall_around(vol, c, r0, WALL_TISSUE_MM + 2.0, spacing)
    kept = open_mm(tissue, WALL_TISSUE_MM, spacing)  # no vessel thinner than this
    near = ndimage.generate_binary_structure(3, 1)
    wall_side = np.argwhere(kept & ndimage.binary_dilation(~tissue, near) & in_ring) * spacing
    air_side = np.argwhere(~tissue & ndimage.binary_dilation(kept, near) & in_ring) * spacing
    if min(len(wall_side), len(air_side)) < 25:
        return None
    pts = np.concatenate([wall_side, air_side])  # the surface lies half-way between them
    centre = pts.mean(axis=0)
    _, _, (u, v, n) = np.linalg.svd(pts - centre, full_matrices=False)
    if np.mean(air_side @ n) < np.mean(wall_side @ n):  # the normal points into the lung
        n = -n

    def frame(q):
        d = q - centre
        a, b = d @ u, d @ v
        return np.column_stack([np.ones_like(a), a, b, a * a, a * b, b * b]), d @ n

    keep = np.ones(len(pts), dtype=bool)
    for _ in range(3):  # least squares, then without the points far off it (a vessel, a rib)
        design, w = frame(pts[keep])
        coef, *_ = np.linalg.lstsq(design, w, rcond=None)
        design, w = frame(pts)
        resid = w - design @ coef
        keep = np.abs(resid) <= max(1.0, 2.5 * float(np.sqrt(np.mean(resid[keep] ** 2))))
    rms = float(np.sqrt(np.mean(resid[keep] ** 2)))
    if keep.mean() < 0.8 or rms > PLEURA_RMS_MM:
        return None
    axes = [(np.arange(b.start, b.stop) - l) * s for b, l, s in zip(box, lo, spacing)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    design, w = frame(grid)
    return (w - design @ coef > 0).reshape(tuple(len(x) for x in axes))


def _edge_hu(hu, region, seed, r0: float, spacing, lung_hu: float = LUNG_HU) -> float:
    """Density just inside the nodule's edge: the median of voxels 1-2.5 mm deep (a pixel to two
    pixels where pixels are coarser), measured in
    the axial plane on the slices through the nodule's middle, those within r0 / 2 of the seed's
    (the in-plane blur is small; the slices above and below are mostly partial volume: at 2.5 mm
    slices those of a 7 mm nodule would set its level 100 HU low). Where at least GLASS_SHARE of
    that shell is ground glass and its median lies more than half GROUND_GLASS_BAND above the
    glass's own, the nodule is ground glass that a vessel crosses or touches: the glass's median
    (the vessel's density would set a level above the glass and lose the nodule)."""
    sz = spacing[0]
    half = int(np.floor(r0 / 2.0 / sz))
    ks = range(max(0, seed[0] - half), min(region.shape[0], seed[0] + half + 1))
    pixel = float(max(spacing[1:]))  # coarse pixels: the shell starts a pixel in, past the blurred edge
    lo, hi = max(1.0, 1.01 * pixel), max(2.5, 2.01 * pixel)
    values = []
    for k in ks:
        depth = ndimage.distance_transform_edt(region[k], sampling=spacing[1:])
        values.append(hu[k][(depth > lo) & (depth <= hi)])
    shell = np.concatenate(values) if values else np.zeros(0)
    if shell.size < 5:
        return float(np.median(hu[region]))
    edge = float(np.median(shell))
    glass = shell[(shell > lung_hu + GROUND_GLASS_ABOVE_LUNG) & (shell < GROUND_GLASS_EDGE_HU)]
    if glass.size >= GLASS_SHARE * shell.size and edge - float(np.median(glass)) > GROUND_GLASS_BAND / 2:
        return float(np.median(glass))
    return edge


def _densest_near(hu: np.ndarray, local, spacing) -> tuple[int, int, int]:
    """The densest voxel within 1.5 mm of `local` along each axis (a ring-shaped centre still
    works; in the plane at least the next pixel): on the centre's own slice where slices are
    thicker than that, since the next slice, 2.5 mm away, may hold the vessel a small nodule
    touches rather than the nodule (the nodule is then measured from the vessel)."""
    half = np.floor(1.5 / spacing + 1e-9).astype(int)
    half[1:] = np.maximum(1, half[1:])
    near = tuple(slice(max(0, x - n), x + n + 1) for x, n in zip(local, half))
    patch = hu[near]
    return tuple(int(s.start + i) for s, i in zip(near, np.unravel_index(int(np.argmax(patch)), patch.shape)))


def _measure_at(vol: CtVolume, seed: np.ndarray, limit: float, r0: float, lung_hu: float, spacing,
                at_seed: float, lung: LungMask | None = None) -> NoduleSize:
    """The mask within `limit` mm of the seed (a nodule reaches at most about twice its inscribed
    radius from its centre; beyond, what is connected is a vessel or the chest wall)."""
    box, lo = _box(vol, seed, limit + spacing.max(), spacing)
    hu = vol.hu[box].astype(np.float32)
    local = tuple(int(x) for x in seed - lo)
    from_seed = d2_from(local, hu.shape, spacing)
    allowed = from_seed <= limit**2
    inside = None if lung is None else lung.full_box(box)
    dense = component(hu > lung_hu + GROUND_GLASS_ABOVE_LUNG, local)  # the box's edges are no border
    if dense is None:  # cannot happen after a probe found the seed dense; a voxel's size if it does
        dense = np.zeros(hu.shape, dtype=bool)
        dense[local] = True
    # the closing ball must be wider than the nodule, not than the wall behind it: the nodule's
    # depth at the seed (the chest wall can only make the deepest point near it deeper)
    width = min(r0, at_seed)
    wall = float(np.clip(1.5 * width + 3.0, 6.0, MAX_BALL_MM))
    pleura = None
    if ndimage.distance_transform_edt(dense, sampling=spacing).max() > wall:
        # attached to something a ball of `wall` fits in: the chest wall, the mediastinum
        pleura = _pleural_side(vol, seed, box, r0, spacing)
        if pleura is not None and not pleura[local]:  # the seed in the nodule's base: one on the lung side
            near = dense & pleura & (from_seed <= (2.0 + spacing.max()) ** 2)
            if near.any():
                local = tuple(int(i) for i in np.argwhere(near)[np.argmin(from_seed[near])])
                from_seed = d2_from(local, hu.shape, spacing)
            else:
                pleura = None
        if pleura is None:
            allowed &= _lung_side(vol, seed, box, limit + 3.0, _closing_ball(vol, seed, r0, width, wall, spacing),
                                  spacing)
        else:
            allowed &= pleura
    if pleura is None and inside is not None and inside[local]:
        # (the fitted pleura is finer than the lung mask, whose edge is known to a step of its
        # 2.5 mm grid: within a step beyond it, a juxtapleural nodule's base is the closing's)
        step = np.ones((1, 2 * lung.step + 1, 2 * lung.step + 1), dtype=bool)
        allowed &= ndimage.binary_dilation(inside, structure=step)
    first = component(dense & allowed, local)
    if first is None:
        first = dense & allowed
    region, level = _second_pass(hu, first, allowed, local, r0, lung_hu, spacing, from_seed)
    if not region.any():
        region = first
    voxels = int(region.sum())
    volume = voxels * float(np.prod(spacing))
    long, short = axial_axes(region, spacing)
    return NoduleSize(equivalent_diameter(volume), volume, long, short, level, voxels, box, region)


def _second_pass(hu, first, allowed, seed, r0: float, lung_hu: float, spacing, from_seed):
    """The mask at the half-way level for the density just inside the edge; ground glass
    (an edge below GROUND_GLASS_EDGE_HU) is grown within a band and seeded on ground glass."""
    if not first[seed]:
        return first, lung_hu + GROUND_GLASS_ABOVE_LUNG
    body = first & (from_seed <= (r0 + 1.5) ** 2)  # not the vessels it touches
    edge = _edge_hu(hu, body, seed, r0, spacing, lung_hu)
    level = min(max((edge + lung_hu) / 2.0, lung_hu + 100.0), float(hu[seed]) - 1.0)
    upper = edge + GROUND_GLASS_BAND if edge < GROUND_GLASS_EDGE_HU else None
    if upper is not None and hu[seed] >= upper:  # seed on ground glass, not on a vessel or the core
        glass = (hu > level) & (hu < upper) & allowed & (from_seed <= (r0 + 2.0) ** 2)
        if glass.any():
            seed = tuple(int(i) for i in np.argwhere(glass)[np.argmin(from_seed[glass])])
    if edge > CALCIFIED_EDGE_HU:  # calcified: far denser than the vessels it may sit on
        core = component((hu > (edge + SOFT_TISSUE_HU) / 2.0) & allowed, seed)
        if core is not None:  # the edge's blur around the calcium, not the vessel beside it
            allowed = allowed & (core | _between(core, hu < (lung_hu + SOFT_TISSUE_HU) / 2.0))
    elif upper is None:  # soft tissue: not the bone it touches (a rib's cortex)
        allowed = allowed & (hu <= BONE_HU)
    return grow(hu, allowed, seed, level, spacing, r0, upper), level


def _between(core: np.ndarray, lung: np.ndarray) -> np.ndarray:
    """Voxels with `core` on one side and `lung` on the other along some axis: the blurred edge
    of a calcification where it meets lung (in any direction, across slices too). Where it meets
    soft tissue (a vessel) its edge is the core's own level, half-way between calcium and soft
    tissue; a vessel's voxel beside it has no lung opposite."""
    out = np.zeros_like(core)
    for axis in range(3):
        for step in (1, -1):
            inner = np.roll(core, step, axis=axis)  # the neighbour on one side is core ...
            outer = np.roll(lung, -step, axis=axis)  # ... and the one opposite is lung
            edge = [slice(None)] * 3
            edge[axis] = slice(0, 1) if step == 1 else slice(-1, None)
            inner[tuple(edge)] = False  # (no wrapping round the box)
            edge[axis] = slice(-1, None) if step == 1 else slice(0, 1)
            outer[tuple(edge)] = False
            out |= inner & outer
    return out & ~core


def mask_at(vol: CtVolume, center_xyz, diameter_mm: float = 0.0, lung: LungMask | None = None):
    """(box, bool mask over it) of the nodule at `center_xyz`: the measured mask, or where no
    denser tissue is found there, the sphere of `diameter_mm` (at least a voxel): what a
    finding without a painted mask exports as its segment."""
    spacing = np.asarray(vol.spacing_irc, dtype=np.float64)
    c = vol.xyz_to_irc(np.asarray(center_xyz, dtype=np.float64))
    blob = int(sphere_volume(diameter_mm) / np.prod(spacing)) if diameter_mm > 0 else None
    s = measure(vol, c, blob_voxels=blob, lung=lung)
    if s.mask is not None and s.mask.any():
        return s.box, s.mask
    ci = np.clip(np.rint(c).astype(int), 0, np.array(vol.shape) - 1)
    r = max(diameter_mm / 2.0, float(spacing.max()) / 2.0)
    box, lo = _box(vol, ci, r + spacing.max(), spacing)
    return box, d2_from(tuple(ci - lo), tuple(b.stop - b.start for b in box), spacing) <= r**2


def mask_provider(vol: CtVolume):
    """`f -> (box, mask)` for findings of this scan (anything with center_xyz and diameter_mm): what
    a confirmed nodule without a painted mask exports as its DICOM SEG segment."""
    from lungview.inference.lungmask import lung_mask

    lung = lung_mask(vol)
    return lambda f: mask_at(vol, f.center_xyz, f.diameter_mm, lung)
