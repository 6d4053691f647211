"""Shaping a nodule's grown region (inference.measure grows it): morphology in mm for any voxel
spacing, and the steps that take off what is not the nodule and complete what is hidden of it.
The region is opened with a ball of half the inscribed radius r0 so that vessels and spicules
fall off and given back what the opening shaved off its own surface, but not (below 16 mm or so;
above, only a vessel trunk's, 5 mm or more across) the stub of a vessel or the collar of an
airway wall that goes on beyond it, nor what the ball kept of such a structure in the corner
between it and a round nodule; an attachment as thick as the nodule is cut at its neck, and a
round nodule against something thicker (a vessel trunk) is the sphere its outline fits. Ground
glass gets back what is denser inside it (a solid core, a vessel running through) and what a
vessel or bronchus hides of its round outline.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

OPENING_FRACTIONS = (0.5, 0.3, 0.15)  # opening ball: of the inscribed radius, the first that keeps the nodule ...
OPENING_CAP_MM = 5.0  # ... at most this
GIVE_BACK_MM = 3.0  # what the opening shaved off is given back this far (more would regrow vessels alongside)
# ... but not, below this inscribed radius, what belongs to a vessel or airway wall that goes on beyond it. On a
# larger nodule such stubs add little (a 4 mm vessel's two 3 mm stubs: 1.2 % on the diameter of a 16 mm ball),
# and there the give-back also holds the bases of the vessels and spicules converging on a tumour, which readers
# draw (LIDC-IDRI-0001, r0 10 mm: without them its long axis fell from 29.6 to 25.6 mm, its four readers'
# contours giving 32.0-33.7 mm).
STUB_MAX_R0_MM = 8.0
TRUNK_MM = 5.0  # ... but from any nodule, the stub of a vessel this thick or thicker (a trunk it sits against)
COMPACT_EXTENT = 1.5  # a nodule reaches at most this many inscribed radii from its centre
NECK_RATIO = 0.85  # an attachment is cut off where it is thinner than this many inscribed radii
BALL_DEPTH = 0.8  # ... and then the nodule is the union of the balls of its points this deep
ROUND_SHARE = 0.4  # with no neck, the share of the outline near the nodule that a sphere must fit
CORE_BRIDGE = 0.5  # ground glass joins through denser tissue this many inscribed radii from its seed
OUTLINE_RMS = 0.12  # a sphere fits an outline within this share of its radius (beyond voxel steps)
CORE_LOSS = (0.02, 2)  # an opening keeps the nodule whole: its core loses at most this share, or voxels if more


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    """Dilation by a ball of `radius_mm`, exact in mm for any voxel spacing."""
    if not mask.any():
        return mask.copy()
    # only within the radius of the mask's box: there lie all the voxels it reaches, and all those
    # the distances are taken to
    box = _box_of(mask, np.ceil(radius_mm / np.asarray(spacing, dtype=np.float64)).astype(int))
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(~mask[box], sampling=spacing) <= radius_mm
    return out


def erode_mm(mask: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    if mask.all() or not mask.any():
        return mask.copy()
    # only over the mask's box and a layer of one voxel around it (within the array), all outside
    # the mask: a voxel beyond the layer is farther from every voxel of the mask than the layer's
    # voxel it clamps to, so the nearest voxel outside the mask always lies within
    box = _box_of(mask, np.ones(mask.ndim, dtype=int))
    out = np.zeros_like(mask)
    out[box] = ndimage.distance_transform_edt(mask[box], sampling=spacing) > radius_mm
    return out


def _box_of(mask: np.ndarray, pad) -> tuple[slice, ...]:
    """The box of `mask`'s voxels, `pad` voxels wider along each axis, within the array."""
    box = []
    for axis, n in enumerate(mask.shape):
        on = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(on[0]) - int(pad[axis])), min(n, int(on[-1]) + 1 + int(pad[axis]))))
    return tuple(box)


def open_mm(mask, radius_mm: float, spacing) -> np.ndarray:
    return dilate_mm(erode_mm(mask, radius_mm, spacing), radius_mm, spacing)


def grow(hu: np.ndarray, allowed: np.ndarray, seed, level: float, spacing, r0: float,
          upper: float | None = None) -> np.ndarray:
    """The region above `level` (and below `upper`: ground glass) connected to the seed, opened
    with a ball (vessels and spicules thinner than it fall off), then given back what the
    opening shaved off its own surface: the part of the region within the ball's radius of the
    opened body, at most GIVE_BACK_MM, and on slices thicker than that, over the body in a slice
    next to it that the opening emptied (the cap of a small nodule: its surface lies half a slice
    beyond the body's voxels, within reach, their centres a whole slice away). The ball is half
    the inscribed radius r0, smaller when that would eat into the nodule itself (its inner 0.8
    r0). A nodule smaller than STUB_MAX_R0_MM then loses what the give-back took from a
    structure that goes on beyond it (a vessel's stub, the collar of an airway wall it touches;
    from ground glass, the partial-volume skin, in the glass's band, of the vessels and spicules it
    touches: `_attached`), a larger one only what it took from a vessel TRUNK_MM or more across, after
    any neck is cut, and where its outline is round, what lies beyond that sphere next to what
    was taken off (`_collar`). With `upper`, denser tissue inside the ground glass (a solid core,
    a vessel running through) is added back first, and so is what denser tissue hides of its
    round outline (`_hidden_by_denser`)."""
    dense = (hu > level) & allowed
    from_seed = d2_from(seed, hu.shape, spacing)  # squared mm
    if upper is not None and hu[seed] < upper:
        # ground glass, seeded on glass: its pieces joined through the solid core at its centre
        # (a core, or a vessel's end across it, can cut its ring of glass apart)
        glass = dense & (hu < upper)
        solid = dense & ~glass & (from_seed <= (CORE_BRIDGE * r0) ** 2)
        region = component(glass | solid, seed)
        region = None if region is None else region & glass
    else:
        region = component(dense, seed)
    if region is None:
        return np.zeros_like(dense)
    if upper is not None:
        region |= dense & _inside_star(region, seed, spacing)
        hidden = _hidden_by_denser(region & (hu < upper), dense & ~region, hu > level, seed, spacing)
        if hidden is not None:
            region = component(region | hidden, seed)
    core = region & (from_seed <= (0.8 * r0) ** 2)
    grown = region
    attached = None
    for fraction in OPENING_FRACTIONS:
        opening_mm = min(OPENING_CAP_MM, fraction * r0)
        if opening_mm < spacing.min():
            break
        body = component(open_mm(region, opening_mm, spacing), seed)
        if body is None:
            continue
        give_mm = min(opening_mm, GIVE_BACK_MM)
        near = dilate_mm(body, give_mm, spacing)
        if spacing[0] > give_mm:  # a cap slice the opening emptied: its voxels over the body's
            near |= ndimage.binary_dilation(body, structure=_line(0)) & ~body.any(axis=(1, 2))[:, None, None]
        back = component(region & near, seed)
        back = body if back is None else back
        # the nodule itself kept whole (on a small core 2 % is less than a voxel: the voxel grid's own loss)
        if (core & ~back).sum() <= max(CORE_LOSS[0] * core.sum(), CORE_LOSS[1]):
            if np.ptp(np.flatnonzero(body.any(axis=(1, 2)))) >= 2:
                # (a body in one or two slices keeps its give-back: it is then all that holds its
                # partial-volume caps)
                trunk = 0.0 if r0 < STUB_MAX_R0_MM else TRUNK_MM / 2.0
                attached = _attached(region, body, near, give_mm, spacing, allowed, trunk) & ~core
            region = back
            break
    region = _cut_at_neck(region, seed, r0, spacing, from_seed)
    if attached is not None and attached.any():
        region = region & ~attached
        kept = component(region & ~_collar(region, grown, hu > level, spacing), seed)
        region = region if kept is None else kept
    return region


def _hidden_by_denser(glass: np.ndarray, denser: np.ndarray, above: np.ndarray, seed,
                      spacing) -> np.ndarray | None:
    """Ground glass that denser tissue (a vessel trunk, a bronchus) hides in part: the `denser`
    voxels inside the sphere that fits the glass's outline where it meets the lung (where `above`,
    denser than the half-way level, ends), as a reader completes the round outline. None where
    that outline is not nearly a sphere or the sphere does not hold the seed."""
    sphere = _outline_sphere(glass, above, spacing)
    if sphere is None or np.linalg.norm(np.asarray(seed) * spacing - sphere[0]) > sphere[1]:
        return None
    return denser & (_d2_from_mm(sphere[0], glass.shape, spacing) <= sphere[1] ** 2)


def _collar(region: np.ndarray, grown: np.ndarray, above: np.ndarray, spacing) -> np.ndarray:
    """The collar a structure that touches a round nodule leaves on it: what the opening's ball
    kept of that structure in the corner between the two (a bronchial wall's inner face, a
    vessel's root), found as what of `region` lies beyond the sphere that fits its outline where it
    meets the lung (by more than half a voxel, as the outline's own voxels may) and touches what
    was taken off it (`grown` without `region`). Nothing where the outline is not nearly a sphere:
    a lobe or a spicule is not told from a collar there."""
    sphere = _outline_sphere(region, above, spacing)
    if sphere is None:
        return np.zeros_like(region)
    centre, r = sphere
    beyond = region & (_d2_from_mm(centre, region.shape, spacing) > (r + 0.5 * spacing.min()) ** 2)
    labels, _ = ndimage.label(beyond)
    touching = labels[beyond & ndimage.binary_dilation(grown & ~region, structure=np.ones((3, 3, 3), bool))]
    return np.isin(labels, np.unique(touching))


def _outline_sphere(body: np.ndarray, above: np.ndarray, spacing):
    """(centre in mm, radius) of the sphere that fits `body`'s outline where it meets the lung
    (where `above`, denser than the half-way level, ends), or None where that outline is not
    nearly a sphere."""
    step = _outline_steps(body, ~above, spacing)
    # not where denser tissue is next to the outline too: the partial-volume skin of a vessel
    surface = np.isfinite(step) & ~ndimage.binary_dilation(above & ~body, structure=np.ones((3, 3, 3), bool))
    fit = _fit_sphere(np.argwhere(surface) * spacing, step[surface], spacing)
    return None if fit is None or not fit[2] else fit[:2]


def _outline_steps(body: np.ndarray, beyond: np.ndarray, spacing) -> np.ndarray:
    """For the voxels of `body` next to `beyond` along an axis, the spacing across which they
    are (the finest where several); inf elsewhere."""
    step = np.full(body.shape, np.inf)
    for axis in range(3):
        across = body & ndimage.binary_dilation(beyond, structure=_line(axis))
        step[across] = np.minimum(step[across], spacing[axis])
    return step


def _fit_sphere(pts: np.ndarray, steps: np.ndarray, spacing, start=None):
    """(centre, radius, fits) of the sphere through outline voxels `pts` (mm), each next to the
    outside across `steps` mm: least squares, or from `start` (centre, radius) on, keeping only
    the points near the sphere as it goes (another structure's outline falls away). The radius is
    taken to where the level is crossed, about half a step beyond the voxels' centres. It `fits`
    where the points kept lie within OUTLINE_RMS of its radius (beyond what voxel centres standing
    in for the outline add: a voxel / sqrt(12)) and, from `start`, are at least ROUND_SHARE of
    them. None with too few points."""
    keep = np.ones(len(pts), dtype=bool)
    if start is not None:
        keep = np.abs(np.linalg.norm(pts - start[0], axis=1) - start[1]) <= 0.25 * start[1]
    for _ in range(1 if start is None else 6):
        q = pts[keep]
        if len(q) < 30:
            return None
        (cz, cy, cx, d), *_ = np.linalg.lstsq(np.column_stack([2 * q, np.ones(len(q))]), (q**2).sum(axis=1),
                                              rcond=None)
        centre = np.array([cz, cy, cx])
        if d + centre @ centre <= 0:
            return None
        r = float(np.sqrt(d + centre @ centre))
        resid = np.linalg.norm(pts - centre, axis=1) - r
        rms = float(np.sqrt(np.mean(resid[keep] ** 2)))
        if start is not None:
            keep = np.abs(resid) <= max(float(spacing.min()), 2.0 * rms)
    fits = rms <= OUTLINE_RMS * r + float(spacing.max()) / np.sqrt(12.0)
    if start is not None:
        fits = fits and keep.mean() >= ROUND_SHARE
    return centre, r + 0.5 * float(np.mean(steps[keep])), fits


def _d2_from_mm(centre, shape, spacing) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g * sp - c) ** 2 for g, sp, c in zip(grid, spacing, centre))


def _attached(region: np.ndarray, body: np.ndarray, near: np.ndarray, give_mm: float, spacing,
              allowed: np.ndarray, trunk: float = 0.0) -> np.ndarray:
    """What the give-back would take from something that goes on beyond its reach (a vessel's
    stub, the collar of an airway wall the nodule touches): the shaved voxels within `give_mm`
    of such a continuation, measured along the shaved voxels. A lobulation or a voxel's worth of
    surface lies wholly within reach and is not among them; nor is a juxtapleural nodule's rim
    along the pleura (within `give_mm` of where `allowed` ends), which the opening shaves as the
    wedge between the nodule and the wall, a vessel beside it or not. With `trunk` (mm), only
    what goes on beyond at least that deep: half a trunk's width, not the bases of the thinner
    vessels and spicules converging on a tumour, which readers draw."""
    shaved = region & ~body
    far = shaved & ~near
    if trunk > 0 and far.any():
        far &= ndimage.distance_transform_edt(region, sampling=spacing) >= trunk
    if not far.any():
        return far
    reach = _geodesic_dilate(far, shaved, give_mm, spacing)
    if allowed.all():  # no wall in reach
        return reach
    return reach & (ndimage.distance_transform_edt(allowed, sampling=spacing) > give_mm)


def _geodesic_dilate(mask: np.ndarray, within: np.ndarray, mm: float, spacing) -> np.ndarray:
    """`mask` grown about `mm` through `within` only: one voxel a step along the finest axis, and
    along a coarser axis only every (its spacing / the finest) steps, so that a step across
    2.5 mm slices counts as 2.5 mm, not as one in-plane pixel."""
    fine = float(spacing.min())
    period = [max(1, int(round(s / fine))) for s in spacing]
    out = mask & within
    for step in range(1, int(np.ceil(mm / fine)) + 1):
        out = ndimage.binary_dilation(out, structure=_line(*(a for a, k in enumerate(period) if step % k == 0)),
                                      mask=within)
    return out


def _line(*axes: int) -> np.ndarray:
    """A 3D structuring element one voxel either side along `axes` (a box over them)."""
    return np.ones(tuple(3 if a in axes else 1 for a in range(3)), dtype=bool)


def _cut_at_neck(region: np.ndarray, seed, r0: float, spacing, from_seed: np.ndarray) -> np.ndarray:
    """What reaches beyond a nodule's extent (COMPACT_EXTENT inscribed radii) and is thick (not
    a spicule) is something attached as thick as the nodule, a vessel: find the neck between the
    two (the deepest level at which they still connect, by bisection on the distance to the
    region's edge). The nodule is then the union of the balls of its points deeper than the neck
    (each as wide as it is deep, moved towards the centre of the sphere the outline fits, where
    one does, by as much as a slice misses it); when the attachment is that deep too, the region is opened
    with a ball just wider than the neck instead. With no neck at all, a round nodule against
    something as thick as itself is what `_round_part` finds. `from_seed`: squared mm from the seed."""
    far = region & (from_seed > (COMPACT_EXTENT * r0 + spacing.max()) ** 2)
    if not far.any():
        return region
    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    far &= depth >= max(2.0 * spacing.min(), 0.4 * r0)  # thick: not a spicule
    if not far.any():
        return region
    # the nodule's deepest point near the seed (the seed itself may sit off its centre)
    around = np.where(from_seed <= 2.5**2, depth, 0.0)
    anchor = tuple(int(i) for i in np.unravel_index(int(np.argmax(around)), around.shape))
    lo, hi = 0.0, float(depth[anchor])
    r0 = min(r0, hi)  # within the lung side (a juxtapleural nodule) the nodule may be thinner
    for _ in range(10):  # the neck: the highest level at which the nodule still reaches `far`
        mid = (lo + hi) / 2.0
        part = component(depth >= mid, anchor)
        lo, hi = (mid, hi) if part is not None and (part & far).any() else (lo, mid)
    if lo > NECK_RATIO * r0:  # no real neck: one thick body, or a round nodule against something as thick
        return _round_part(region, seed, r0, spacing, from_seed)
    # The nodule: the balls of its deep points (deeper than the attachment is thick, connected to
    # the seed without it), each as wide as it is deep, plus one voxel of surface detail. Where its
    # outline fits a sphere, whose centre a slice may miss by up to half a slice, each ball is
    # also moved that way along the slice axis, and widened as much (a point moved by d is at most
    # d deeper), with half a pixel of surface detail: at 2.5 mm slices, without it, a 9 mm nodule
    # centred 1 mm off the slice of its deepest voxels lost its cap slice (-5.4 %).
    deep = component(depth > max(lo, BALL_DEPTH * r0) + 0.5 * spacing.min(), anchor)
    if deep is None or (deep & far).any():  # the attachment is that deep too: open just above the neck
        body = component(open_mm(region, lo + 0.5 * spacing.min(), spacing), seed)
        return region if body is None else body
    offset = _centre_offset(region, deep, anchor, r0, spacing, from_seed)
    cover = np.zeros_like(region)
    levels = np.linspace(float(depth[deep].min()), float(depth[deep].max()), 6)
    for t in levels[:-1]:
        if offset is None:
            cover |= dilate_mm(deep & (depth >= t), t + spacing.min(), spacing)
        else:
            cover |= _balls(deep & (depth >= t), t + 0.5 * spacing.min(), spacing, offset)
    body = component(region & cover, seed)
    return region if body is None else body


def _centre_offset(region: np.ndarray, deep: np.ndarray, anchor, r0: float, spacing,
                   from_seed: np.ndarray) -> float | None:
    """How far (mm, at most half a slice) along the slice axis the centre of the sphere that the
    region's outline near the nodule fits lies from the nearest slice of its `deep` voxels; None
    where no sphere fits it."""
    fit = _sphere_near(region, anchor, r0, spacing, from_seed)
    if fit is None or not fit[2]:
        return None
    slices = np.flatnonzero(deep.any(axis=(1, 2))) * spacing[0]
    offset = fit[0][0] - slices[np.argmin(np.abs(slices - fit[0][0]))]
    return float(np.clip(offset, -0.5 * spacing[0], 0.5 * spacing[0]))


def _balls(points: np.ndarray, radius_mm: float, spacing, shift_mm: float) -> np.ndarray:
    """The union of the balls of `radius_mm` about `points` and of those `shift_mm` along the
    slice axis from them, `|shift_mm|` wider."""
    out = np.zeros_like(points)
    if not points.any():
        return out
    n = points.shape[0]
    flat = ndimage.distance_transform_edt(~points, sampling=(1e6, spacing[1], spacing[2]))  # within each slice
    reach = int(np.ceil((radius_mm + 2.0 * abs(shift_mm)) / spacing[0]))
    for k in range(-reach, reach + 1):  # the slice k slices away
        for d in (0.0, shift_mm):
            dz, r = abs(k * spacing[0] - d), radius_mm + abs(d)
            if dz <= r:
                out[max(k, 0):n + min(k, 0)] |= flat[max(-k, 0):n - max(k, 0)] <= np.sqrt(r * r - dz * dz)
    return out


def _round_part(region: np.ndarray, seed, r0: float, spacing, from_seed: np.ndarray) -> np.ndarray:
    """A round nodule against something as thick as itself (a vessel trunk it sits on): the part
    of the region inside the sphere that fits its outline near the nodule (within COMPACT_EXTENT
    inscribed radii of the seed), fitted from a ball of the inscribed radius at the seed on (the
    deepest point may lie towards the trunk), the trunk's outline falling away as it goes; the
    region whole where less than ROUND_SHARE of that outline is on one sphere (an elongated
    nodule, a lobulated mass). `from_seed`: squared mm from the seed."""
    fit = _sphere_near(region, seed, r0, spacing, from_seed)
    start = np.asarray(seed) * spacing
    if fit is None or not fit[2] or not 0.8 * r0 <= fit[1] <= 2.0 * r0 or np.linalg.norm(start - fit[0]) > fit[1]:
        return region
    body = component(region & (_d2_from_mm(fit[0], region.shape, spacing) <= fit[1] ** 2), seed)
    return region if body is None else body


def _sphere_near(region: np.ndarray, voxel, r0: float, spacing, from_seed: np.ndarray):
    """`_fit_sphere` on the region's outline near the nodule (within COMPACT_EXTENT inscribed radii
    of the seed, `from_seed` in squared mm), from a ball of the inscribed radius at `voxel` on."""
    step = _outline_steps(region, ~region, spacing)
    near = np.isfinite(step) & (from_seed <= (COMPACT_EXTENT * r0 + spacing.max()) ** 2)
    start = (np.asarray(voxel) * spacing, r0 + 0.5 * float(spacing.min()))
    return _fit_sphere(np.argwhere(near) * spacing, step[near], spacing, start)


def _inside_star(region: np.ndarray, seed, spacing, bins: tuple[int, int] = (24, 48)) -> np.ndarray:
    """Voxels closer to the seed than the region reaches in their direction (the region seen
    from the seed as a star-shaped body): a core or a vessel inside ground glass, not a vessel
    alongside it."""
    grids = np.meshgrid(*[(np.arange(n) - p) * s for n, p, s in zip(region.shape, seed, spacing)],
                        indexing="ij", sparse=True)
    z, y, x = grids
    r = np.sqrt(z**2 + y**2 + x**2)
    theta = np.arccos(np.clip(z / np.maximum(r, 1e-9), -1.0, 1.0))
    phi = np.arctan2(y, x)
    t = np.minimum((theta / np.pi * bins[0]).astype(int), bins[0] - 1)
    f = np.minimum(((phi + np.pi) / (2 * np.pi) * bins[1]).astype(int), bins[1] - 1)
    cell = t * bins[1] + f
    reach = np.zeros(bins[0] * bins[1])
    np.maximum.at(reach, cell[region], r[region])
    # a small region leaves some direction cells empty between its voxels: take the neighbours'
    reach = ndimage.maximum_filter(reach.reshape(bins), size=3, mode=("nearest", "wrap")).ravel()
    return (r < reach[cell] - spacing.max()) | (r <= 1.5 * spacing.max())


def component(mask: np.ndarray, seed) -> np.ndarray | None:
    if not mask[seed]:
        return None
    labels, _ = ndimage.label(mask)
    return labels == labels[seed]


def d2_from(point, shape, spacing) -> np.ndarray:
    grid = np.ogrid[tuple(slice(-p, n - p) for p, n in zip(point, shape))]
    return sum((g * s) ** 2 for g, s in zip(grid, spacing))
