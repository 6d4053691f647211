"""Drawing tubes (vessels, airways, spicules) and nodules into a float32 HU volume,
with a one-voxel partial-volume edge so that they look scanned rather than painted."""

from __future__ import annotations

import numpy as np


def _box(center_irc, reach_mm, spacing_irc, shape):
    lo = np.floor(np.asarray(center_irc) - reach_mm / spacing_irc).astype(int)
    hi = np.ceil(np.asarray(center_irc) + reach_mm / spacing_irc).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi <= lo):
        return None
    grids = np.meshgrid(*(np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)),
                        indexing="ij", sparse=True)
    return tuple(slice(a, b) for a, b in zip(lo, hi)), grids


def _blend(vol, sl, weight, hu, brighter: bool) -> None:
    region = vol[sl]
    mixed = region * (1.0 - weight) + np.float32(hu) * weight
    vol[sl] = np.maximum(region, mixed) if brighter else np.minimum(region, mixed)


def draw_tube(vol: np.ndarray, spacing_irc, p0_irc, p1_irc, r0_mm: float, r1_mm: float,
              hu: float, brighter: bool = True) -> None:
    """A tapering capsule from p0 to p1 (voxel coordinates), radius r0 -> r1 in mm."""
    sp = np.asarray(spacing_irc, dtype=np.float32)
    p0, p1 = np.asarray(p0_irc, np.float32), np.asarray(p1_irc, np.float32)
    mid = (p0 + p1) / 2
    half = float(np.linalg.norm((p1 - p0) * sp)) / 2 + max(r0_mm, r1_mm) + 2 * sp.max()
    box = _box(mid, half, sp, vol.shape)
    if box is None:
        return
    sl, (gi, gr, gc) = box
    pi, pr, pc = (gi - p0[0]) * sp[0], (gr - p0[1]) * sp[1], (gc - p0[2]) * sp[2]
    d = (p1 - p0) * sp
    dd = float(d @ d) or 1e-6
    t = np.clip((pi * d[0] + pr * d[1] + pc * d[2]) / dd, 0.0, 1.0)
    dist = np.sqrt((pi - t * d[0]) ** 2 + (pr - t * d[1]) ** 2 + (pc - t * d[2]) ** 2)
    radius = r0_mm + (r1_mm - r0_mm) * t
    edge = float(sp.min())
    weight = np.clip((radius - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)
    _blend(vol, sl, weight, hu, brighter)


def _nodule_shape(ci, cr, cc, axes, margin: str):
    """Radius factor of a nodule in the direction with cosines (ci, cr, cc) to the axes:
    slightly ellipsoidal, with bumps for lobulated and spiculated margins."""
    shape = 1.0 + 0.08 * (ci * axes[0, 0] + cr * axes[0, 1] + cc * axes[0, 2]) ** 2 - 0.04
    if margin in ("lobulated", "spiculated"):
        for a in axes[1:]:
            cos = ci * a[0] + cr * a[1] + cc * a[2]
            shape = shape + 0.22 * np.exp((cos - 1.0) / 0.08) - 0.03
    return shape


def _sphere_directions(n: int = 20000) -> np.ndarray:
    """Nearly uniform unit vectors (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = 1.0 - 2.0 * k / n
    phi = np.pi * (1.0 + 5.0**0.5) * k
    r = np.sqrt(1.0 - z**2)
    return np.column_stack([z, r * np.cos(phi), r * np.sin(phi)])


def _body_volume(radius_mm: float, axes, margin: str, center_irc, spacing_irc, visible=None) -> float:
    """Star-shaped body: V = r^3 / 3 times the integral of shape^3 over directions; restricted
    to the visible part, by sampling a fixed quasi-random point set in the bounding cube."""
    u = _sphere_directions()
    shape = _nodule_shape(*u.T, axes, margin)
    if visible is None:
        return float(radius_mm**3 / 3.0 * 4.0 * np.pi * np.mean(shape**3))
    reach = radius_mm * float(shape.max())
    n = 200_000
    k = np.arange(1, n + 1)[:, None]
    g = 1.2207440846057596  # the R3 low-discrepancy sequence (Roberts 2018)
    pts = (0.5 + k * np.array([1.0 / g, 1.0 / g**2, 1.0 / g**3])) % 1.0
    pts = (pts * 2.0 - 1.0) * reach  # mm offsets from the centre
    dist = np.linalg.norm(pts, axis=1) + 1e-9
    cosines = pts / dist[:, None]
    inside = dist < radius_mm * _nodule_shape(*cosines.T, axes, margin)
    inside[inside] = visible(np.asarray(center_irc, np.float64) + pts[inside] / np.asarray(spacing_irc, np.float64))
    return float(inside.mean() * (2.0 * reach) ** 3)


def nodule_axes(rng: np.random.Generator) -> np.ndarray:
    """The random unit directions that shape a nodule: its elongation and its bumps."""
    axes = rng.normal(size=(5, 3)).astype(np.float32)
    return axes / np.linalg.norm(axes, axis=1, keepdims=True)


def nodule_body(box, center_irc, spacing_irc, radius_mm: float, axes, margin: str) -> np.ndarray:
    """Bool over `box` (index, row, col slices): the voxels whose centres lie in a nodule's body
    as draw_nodule draws it (where its edge crosses half-way; spicules not counted)."""
    grids = np.meshgrid(*(np.arange(b.start, b.stop, dtype=np.float32) for b in box), indexing="ij", sparse=True)
    radius, dist = _radius_and_distance(grids, np.asarray(center_irc, dtype=np.float32),
                                        np.asarray(spacing_irc, dtype=np.float32), radius_mm, axes, margin)
    return radius - dist >= 0


def _radius_and_distance(grids, c, sp, radius_mm: float, axes, margin: str):
    """At the voxels of `grids` (index, row, col), the nodule's radius in their direction from
    its centre `c` and their distance from it (mm): inside its body where the first is larger."""
    gi, gr, gc = grids
    pi, pr, pc = (gi - c[0]) * sp[0], (gr - c[1]) * sp[1], (gc - c[2]) * sp[2]
    dist = np.sqrt(pi**2 + pr**2 + pc**2) + 1e-6
    return radius_mm * _nodule_shape(pi / dist, pr / dist, pc / dist, axes, margin), dist


def draw_nodule(vol: np.ndarray, spacing_irc, center_irc, radius_mm: float, hu: float,
                rng: np.random.Generator, margin: str = "smooth",
                core_hu: float | None = None, core_fraction: float = 0.45, visible=None,
                axes: np.ndarray | None = None) -> float:
    """A nodule: smooth (slightly ellipsoidal), lobulated (bumps) or spiculated (spikes).
    With core_hu, a solid core inside a ground-glass halo (part-solid). Returns the exact
    volume in mm3 of its body (where the drawn edge crosses half-way; spicules not counted);
    with `visible(points_irc) -> bool array`, of the part of the body where it is true (a
    juxtapleural nodule's part inside the chest wall cannot be told from the wall). `axes`:
    its shape's directions (nodule_axes), drawn from `rng` if not given."""
    sp = np.asarray(spacing_irc, dtype=np.float32)
    c = np.asarray(center_irc, dtype=np.float32)
    if axes is None:
        axes = nodule_axes(rng)
    volume = _body_volume(radius_mm, axes, margin, c, sp, visible)
    box = _box(c, radius_mm * 1.5 + 2 * sp.max(), sp, vol.shape)
    if box is None:
        return volume
    sl, grids = box
    radius, dist = _radius_and_distance(grids, c, sp, radius_mm, axes, margin)
    edge = float(sp.min())
    weight = np.clip((radius - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)
    _blend(vol, sl, weight, hu, brighter=True)
    if core_hu is not None:
        core = np.clip((radius * core_fraction - dist) / edge + 0.5, 0.0, 1.0).astype(np.float32)
        _blend(vol, sl, core, core_hu, brighter=True)
    if margin == "spiculated":
        for _ in range(int(rng.integers(6, 11))):
            u = rng.normal(size=3)
            u /= np.linalg.norm(u)
            start = c + u * radius_mm * 0.7 / sp
            end = c + u * radius_mm * rng.uniform(1.5, 2.2) / sp
            draw_tube(vol, sp, start, end, rng.uniform(0.6, 1.0), 0.25, hu)
    return volume
