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


def draw_nodule(vol: np.ndarray, spacing_irc, center_irc, radius_mm: float, hu: float,
                rng: np.random.Generator, margin: str = "smooth",
                core_hu: float | None = None, core_fraction: float = 0.45) -> None:
    """A nodule: smooth (slightly ellipsoidal), lobulated (bumps) or spiculated (spikes).
    With core_hu, a solid core inside a ground-glass halo (part-solid)."""
    sp = np.asarray(spacing_irc, dtype=np.float32)
    c = np.asarray(center_irc, dtype=np.float32)
    box = _box(c, radius_mm * 1.5 + 2 * sp.max(), sp, vol.shape)
    if box is None:
        return
    sl, (gi, gr, gc) = box
    pi, pr, pc = (gi - c[0]) * sp[0], (gr - c[1]) * sp[1], (gc - c[2]) * sp[2]
    dist = np.sqrt(pi**2 + pr**2 + pc**2) + 1e-6
    axes = rng.normal(size=(5, 3)).astype(np.float32)
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    # Mild ellipticity for every nodule; bumps for lobulated and spiculated margins.
    shape = 1.0 + 0.08 * ((pi * axes[0, 0] + pr * axes[0, 1] + pc * axes[0, 2]) / dist) ** 2 - 0.04
    if margin in ("lobulated", "spiculated"):
        for a in axes[1:]:
            cos = (pi * a[0] + pr * a[1] + pc * a[2]) / dist
            shape = shape + 0.22 * np.exp((cos - 1.0) / 0.08) - 0.03
    radius = radius_mm * shape
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
