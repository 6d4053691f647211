"""Analytic chest anatomy in normalised coordinates, evaluated slice by slice.

u = x / half_fov (patient left +), v = y / half_fov (posterior +), t = height in the lungs
(0 at the lung bases, 1 at the apices). Shapes are simple on purpose but placed and sized like
a real adult chest, so that what a model learns from them (lung boundary, ribs, vessels,
nodules) looks like what it meets in real CT.
"""

from __future__ import annotations

import numpy as np

BODY = (0.9, 0.64)  # semi-axes (u, v) of the body outline
FAT_MM = 14.0
RIBS = (0.82, 0.57)  # semi-axes of the rib ring
LUNGS = {  # centre (u, v), semi-axes (u, v)
    "right": ((-0.40, 0.02), (0.30, 0.42)),
    "left": ((0.41, 0.02), (0.28, 0.42)),
}
HEART = ((0.10, -0.22), (0.30, 0.26))
SPINE = ((0.0, 0.44), 0.10)
CANAL = ((0.0, 0.56), 0.045)
AORTA = ((0.14, 0.30), 0.065)
TRACHEA = ((0.0, 0.16), 0.045)
CARINA_T = 0.66

HU = {
    "air": -1000.0, "fat": -100.0, "muscle": 45.0, "lung": -860.0, "blood": 40.0,
    "bone": 250.0, "cortex": 750.0, "disc": 80.0, "csf": 10.0,
}


def lung_profile(t: np.ndarray | float) -> np.ndarray:
    """In-plane scale of the lungs with height: full at the bases, rounded at the apices."""
    t = np.asarray(t, dtype=np.float64)
    top = np.clip((t - 0.45) / 0.55, 0.0, 1.0)
    scale = np.sqrt(np.clip(1.0 - top**2, 0.0, 1.0))
    return np.where((t >= 0.0) & (t <= 1.0), scale, 0.0)


def heart_scale(t):
    """The heart is an ellipsoid low in the chest: its in-plane scale with height."""
    t = np.asarray(t, dtype=np.float64)
    return np.sqrt(np.clip(1.0 - ((t - 0.2) / 0.42) ** 2, 0.0, 1.0))


def _heart_rr(u, v):
    (hu_, hv_), (ha, hb) = HEART
    return ((u - hu_) / ha) ** 2 + ((v - hv_) / hb) ** 2


def lung_inside(u, v, t) -> np.ndarray:
    """Whether normalised points (any shape, t may vary) lie inside either lung."""
    u, v, t = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (u, v, t)))
    scale = np.maximum(lung_profile(t), 1e-6)
    inside = np.zeros(u.shape, dtype=bool)
    for (cu, cv), (au, av) in LUNGS.values():
        rr = ((u - cu) / (au * scale)) ** 2 + ((v - cv) / (av * scale)) ** 2
        inside |= (rr < 1.0) & (t > 0.10 * (1.0 - np.clip(rr, 0.0, 1.0))) & (scale > 0.05)
    return inside & ~(_heart_rr(u, v) < heart_scale(t) ** 2)


def _ellipse(u, v, centre, axes) -> np.ndarray:
    return ((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2


class ChestSlicer:
    """Axial slices of the chest without vessels or nodules. What does not change with height
    (body outline, spine, aorta, rib-ring geometry) is computed once."""

    def __init__(self, u: np.ndarray, v: np.ndarray, half_fov: float):
        self.u, self.v = u.astype(np.float32), v.astype(np.float32)
        u, v = self.u, self.v
        base = np.full(u.shape, HU["air"], dtype=np.float32)
        base[_ellipse(u, v, (0.0, 0.0), BODY) < 1.0] = HU["fat"]
        inner = (BODY[0] - FAT_MM / half_fov, BODY[1] - FAT_MM / half_fov)
        base[_ellipse(u, v, (0.0, 0.0), inner) < 1.0] = HU["muscle"]
        self.base = base
        self.heart_rr = _heart_rr(u, v)
        # Squared normalised radius of each lung's cross-section at full scale.
        self.lung_rr = [((u - cu) / au) ** 2 + ((v - cv) / av) ** 2
                        for (cu, cv), (au, av) in LUNGS.values()]
        theta = np.arctan2(v, u)
        self.rib_shift = (22.0 * np.sin(theta)).astype(np.float32)
        ring = np.abs(np.sqrt(_ellipse(u, v, (0.0, 0.0), RIBS)) - 1.0) * half_fov * RIBS[1] * 0.8
        self.rib_ring = ring.astype(np.float32)
        self.rib_zone = (ring < 6.0) & ~((np.abs(u) < 0.14) & (v < 0))
        self.sternum = _ellipse(u, v, (0.0, -0.58), (0.09, 0.035)) < 1.0
        (su, sv), sr = SPINE
        spine_r = np.hypot(u - su, v - sv) / sr
        self.spine = spine_r < 1.0
        self.spine_cortex = self.spine & (spine_r > 0.85)
        self.canal = np.hypot(u - CANAL[0][0], v - CANAL[0][1]) < CANAL[1]
        (au, av), ar = AORTA
        self.aorta = np.hypot(u - au, v - av) < ar
        (tu, tv), tr = TRACHEA
        d = np.hypot(u - tu, v - tv)
        self.trachea_wall = (d < tr) & (d > tr - 0.012)
        self.trachea_lumen = d <= tr - 0.012

    def lung_2d(self, t: float) -> np.ndarray:
        """Lung mask at height t; same shape as lung_inside, on precomputed radii."""
        scale2 = float(lung_profile(t)) ** 2
        inside = np.zeros(self.u.shape, dtype=bool)
        if scale2 <= 0.05**2:
            return inside
        for rr in self.lung_rr:
            # rr/scale2 < 1, and the diaphragm dome: t > 0.1 * (1 - rr/scale2)
            inside |= (rr < scale2) & (rr > (1.0 - 10.0 * t) * scale2)
        hs2 = float(heart_scale(t)) ** 2
        if hs2 > 0:
            inside &= ~(self.heart_rr < hs2)
        return inside

    def slice(self, t: float, z_mm: float, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.base.copy()
        if -0.1 < t < 1.05:
            # Ribs: a helical ring, sloping down anteriorly, with a gap at the sternum.
            pitch, radius = 27.0, 5.5
            zone = self.rib_zone
            phase = (z_mm - self.rib_shift[zone]) / pitch
            dz = (phase - np.round(phase)) * pitch
            rib_d = np.hypot(dz, self.rib_ring[zone])
            vals = out[zone]
            vals[rib_d < radius] = HU["bone"]
            vals[(rib_d < radius) & (rib_d > radius - 1.6)] = HU["cortex"]
            out[zone] = vals
            out[self.sternum] = HU["bone"]
        disc = abs(((z_mm / 30.0) - round(z_mm / 30.0)) * 30.0) < 3.0
        out[self.spine] = HU["disc"] if disc else HU["bone"]
        if not disc:
            out[self.spine_cortex] = HU["cortex"]
        out[self.canal] = HU["csf"]
        lung = self.lung_2d(t)
        out[lung] = HU["lung"] + texture[lung]
        if 0.0 < t < 1.1:
            out[self.aorta] = HU["blood"]
        if t > CARINA_T:
            out[self.trachea_wall] = HU["muscle"]
            out[self.trachea_lumen] = HU["air"]
        return out, lung
