"""Seeded synthetic chest CT phantoms with ground-truth nodules."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from lungview.core import CtVolume
from lungview.core.shape import equivalent_diameter
from lungview.synthetic import anatomy
from lungview.synthetic.shapes import draw_nodule, draw_tube, nodule_axes, nodule_body

PHANTOM_UID_PREFIX = "1.2.826.0.1.3680043.10.1416."  # series UIDs of LungView phantoms


def is_phantom_uid(series_uid: str) -> bool:
    """Whether a scan is one of LungView's synthetic phantoms (demo models are meant for them)."""
    return series_uid.startswith(PHANTOM_UID_PREFIX)


NODULE_KINDS = ("solid", "part-solid", "ground-glass", "juxtapleural", "calcified")
_DIAMETER_MM = {"solid": (4, 30), "part-solid": (8, 25), "ground-glass": (6, 20),
                "juxtapleural": (5, 20), "calcified": (3, 8)}


@dataclass(frozen=True)
class PhantomConfig:
    """Size and scanner settings. The anatomy scales with the field of view (size x pixel_mm),
    nodules and vessels keep their sizes in mm."""

    size: int = 512  # rows = columns
    slices: int = 300
    pixel_mm: float = 0.7
    slice_mm: float = 1.25  # spacing between slices
    thickness_mm: float | None = None  # reconstructed slice thickness (>= spacing blurs in z)
    nodules: int | tuple[int, int] = (2, 5)
    kinds: tuple[str, ...] = NODULE_KINDS
    diameter_mm: tuple[float, float] | None = None  # override the per-kind ranges
    noise_hu: float = 18.0
    padding_hu: int | None = -2048  # value outside the scan circle, as scanners store it
    vessels: bool = True
    # Nodules at given places instead of random ones: ((x, y, z) mm, diameter mm, kind), benign
    # and smooth; phantom_origin() tells where the volume lies.
    placed: tuple = ()


@dataclass(frozen=True)
class PhantomNodule:
    center_xyz: tuple[float, float, float]
    center_irc: tuple[float, float, float]
    diameter_mm: float
    kind: str
    malignant: bool
    margin: str
    volume_mm3: float = 0.0  # exact volume of the drawn body (spicules not counted; juxtapleural: its part in the lung)
    shape_axes: np.ndarray | None = field(default=None, compare=False, repr=False)  # its shape (shapes.nodule_axes)

    @property
    def equivalent_diameter_mm(self) -> float:
        """Diameter of the sphere of the drawn volume: the exact truth for size measurements
        (diameter_mm is the nominal size the shape was drawn from)."""
        return equivalent_diameter(self.volume_mm3)


@dataclass
class Phantom:
    volume: CtVolume
    nodules: list[PhantomNodule]
    lung_mask: np.ndarray  # bool, same shape as the volume
    seed: int
    config: PhantomConfig = field(default_factory=PhantomConfig)

    def nodule_body(self, nodule: PhantomNodule, box) -> np.ndarray:
        """Bool over `box` (index, row, col slices): the voxels whose centres lie in the nodule's
        drawn body, as its volume_mm3 counts it (spicules not; a juxtapleural nodule's part in the
        lung). Its voxels times the voxel volume approach volume_mm3 as the voxels get finer. The box
        is clipped to the volume, as indexing the volume with it clips it."""
        box = tuple(slice(*b.indices(n)[:2]) for b, n in zip(box, self.volume.shape))
        body = nodule_body(box, nodule.center_irc, self.volume.spacing_irc, nodule.diameter_mm / 2,
                           nodule.shape_axes, nodule.margin)
        return body & self.lung_mask[box] if nodule.kind == "juxtapleural" else body


class _Frame:
    """Conversions between voxel indices, mm and the normalised anatomy coordinates."""

    def __init__(self, cfg: PhantomConfig):
        self.cfg = cfg
        self.half_fov = cfg.size * cfg.pixel_mm / 2
        z_extent = cfg.slices * cfg.slice_mm
        lung_height = min(260.0, 0.85 * z_extent)
        self.z_base = 0.5 * (z_extent - lung_height) - 0.04 * lung_height
        self.lung_height = lung_height
        self.spacing_irc = np.array([cfg.slice_mm, cfg.pixel_mm, cfg.pixel_mm], np.float32)

    def uv(self, rows, cols):
        """Normalised (u, v) of pixel centres."""
        c = (np.asarray(cols, np.float32) + 0.5) * self.cfg.pixel_mm - self.half_fov
        r = (np.asarray(rows, np.float32) + 0.5) * self.cfg.pixel_mm - self.half_fov
        return c / self.half_fov, r / self.half_fov

    def t(self, index):
        return (np.asarray(index, np.float64) * self.cfg.slice_mm - self.z_base) / self.lung_height

    def inside_lung(self, irc) -> np.ndarray:
        irc = np.atleast_2d(irc)
        u, v = self.uv(irc[:, 1], irc[:, 2])
        return anatomy.lung_inside(u, v, self.t(irc[:, 0]))

    def to_irc(self, u, v, t):
        col = (u * self.half_fov + self.half_fov) / self.cfg.pixel_mm - 0.5
        row = (v * self.half_fov + self.half_fov) / self.cfg.pixel_mm - 0.5
        return np.array([(t * self.lung_height + self.z_base) / self.cfg.slice_mm, row, col])


def _textures(rng, size: int, count: int) -> list[np.ndarray]:
    tex = []
    for _ in range(count):
        n = rng.normal(size=(size, size)).astype(np.float32)
        fine = ndimage.gaussian_filter(n, 1.2) * 60.0
        coarse = ndimage.gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), 8) * 250.0
        tex.append(fine + coarse)
    return tex


def _grow_tree(frame: _Frame, rng, vol, start_irc, direction_mm, radius: float, depth: int):
    """Vessels branch, taper and stay inside the lung: the realistic false positives."""
    length = radius * rng.uniform(8.0, 11.0)
    end = start_irc + direction_mm * length / frame.spacing_irc
    if not frame.inside_lung(end)[0]:
        end = start_irc + direction_mm * length * 0.4 / frame.spacing_irc
        if not frame.inside_lung(end)[0]:
            return
    r_end = radius * 0.9
    draw_tube(vol, frame.spacing_irc, start_irc, end, radius, r_end, anatomy.HU["blood"])
    if depth == 0 or r_end < 0.6:
        return
    for _ in range(2 if rng.random() < 0.75 else 1):
        d = direction_mm + rng.normal(scale=0.45, size=3)
        d /= np.linalg.norm(d)
        _grow_tree(frame, rng, vol, end, d, r_end * rng.uniform(0.72, 0.88), depth - 1)


def _draw_vessels(frame: _Frame, rng, vol) -> None:
    for side, sign in (("right", -1.0), ("left", 1.0)):
        (cu, cv), (au, _) = anatomy.LUNGS[side]
        hilum = frame.to_irc(cu - sign * 0.55 * au, cv, 0.5)
        for _ in range(10):  # trunks fan out from the hilum, mostly up, down and sideways
            d = rng.normal(size=3) * np.array([1.0, 0.6, 0.6]) + np.array([0.0, 0.0, sign * 0.6])
            d /= np.linalg.norm(d)
            _grow_tree(frame, rng, vol, hilum, d, rng.uniform(3.0, 4.5), 9)
        # Main bronchus from the carina to the hilum: an air tube with a soft-tissue wall.
        carina = frame.to_irc(anatomy.TRACHEA[0][0], anatomy.TRACHEA[0][1], anatomy.CARINA_T)
        draw_tube(vol, frame.spacing_irc, carina, hilum, 7.0, 4.0, anatomy.HU["muscle"])
        draw_tube(vol, frame.spacing_irc, carina, hilum, 5.5, 2.8, anatomy.HU["air"], brighter=False)


def _malignancy(kind: str, diameter: float, rng) -> bool:
    if kind == "calcified":
        return False
    p = {"part-solid": 0.7, "ground-glass": 0.35}.get(kind)
    if p is None:
        p = 0.05 if diameter < 6 else 0.3 if diameter < 10 else 0.65 if diameter < 20 else 0.85
        if kind == "juxtapleural":
            p *= 0.6
    return bool(rng.random() < p)


def _place(frame: _Frame, rng, radius_mm: float, juxtapleural: bool, taken) -> np.ndarray | None:
    sp = frame.spacing_irc.astype(np.float64)
    dirs = rng.normal(size=(48, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for _ in range(4000):
        u, v = rng.uniform(-0.75, 0.75), rng.uniform(-0.45, 0.45)
        c = frame.to_irc(u, v, rng.uniform(0.12, 0.9))
        if not frame.inside_lung(c)[0]:
            continue
        if any(np.linalg.norm((c - o) * sp) < radius_mm + r + 12 for o, r in taken):
            continue
        shell_in = frame.inside_lung(c + dirs * (radius_mm + 3.0) / sp)
        if not juxtapleural and shell_in.all():
            return c
        if juxtapleural and frame.inside_lung(c + dirs * radius_mm * 0.35 / sp).all() \
                and not frame.inside_lung(c + dirs * radius_mm * 0.9 / sp).all():
            return c
    return None


_NODULE_HU = {"solid": 35.0, "juxtapleural": 35.0, "ground-glass": -580.0, "part-solid": -560.0,
              "calcified": 450.0}


def phantom_origin(cfg: PhantomConfig) -> tuple[float, float, float]:
    """Patient position (mm) of the first voxel; the axes are the identity."""
    half_fov = cfg.size * cfg.pixel_mm / 2
    return (-half_fov + cfg.pixel_mm / 2, -half_fov + cfg.pixel_mm / 2, -200.0 - cfg.slices * cfg.slice_mm / 2)


def _draw_placed(frame: _Frame, cfg: PhantomConfig, rng, vol) -> list[tuple]:
    origin = np.array(phantom_origin(cfg))
    spacing_xyz = np.array([cfg.pixel_mm, cfg.pixel_mm, cfg.slice_mm])
    placed = []
    for xyz, diameter, kind in cfg.placed:
        c = ((np.asarray(xyz, dtype=np.float64) - origin) / spacing_xyz)[::-1]
        core = 30.0 if kind == "part-solid" else None
        visible = frame.inside_lung if kind == "juxtapleural" else None
        axes = nodule_axes(rng)
        volume = draw_nodule(vol, frame.spacing_irc, c, diameter / 2, _NODULE_HU[kind], rng, "smooth",
                             core_hu=core, visible=visible, axes=axes)
        placed.append((c, float(diameter), kind, False, "smooth", volume, axes))
    return placed


def _draw_nodules(frame: _Frame, cfg: PhantomConfig, rng, vol) -> list[tuple]:
    if cfg.placed:
        return _draw_placed(frame, cfg, rng, vol)
    count = cfg.nodules if isinstance(cfg.nodules, int) else int(rng.integers(cfg.nodules[0],
                                                                             cfg.nodules[1] + 1))
    placed, taken = [], []
    for _ in range(count):
        kind = str(rng.choice(cfg.kinds))
        lo, hi = cfg.diameter_mm or _DIAMETER_MM[kind]
        diameter = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        malignant = _malignancy(kind, diameter, rng)
        margin = "smooth"
        if malignant:
            margin = "spiculated" if diameter >= 8 and rng.random() < 0.6 else "lobulated"
        c = _place(frame, rng, diameter / 2, kind == "juxtapleural", taken)
        if c is None:
            continue
        hu = _NODULE_HU[kind] + rng.normal(scale=10.0)
        core = 30.0 if kind == "part-solid" else None
        visible = frame.inside_lung if kind == "juxtapleural" else None
        axes = nodule_axes(rng)
        volume = draw_nodule(vol, frame.spacing_irc, c, diameter / 2, hu, rng, margin, core_hu=core,
                             visible=visible, axes=axes)
        taken.append((c, diameter / 2))
        placed.append((c, diameter, kind, malignant, margin, volume, axes))
    return placed


def make_phantom(seed: int = 0, config: PhantomConfig | None = None, **overrides) -> Phantom:
    """A chest CT phantom. Same seed and config, same voxels."""
    cfg = config or PhantomConfig()
    if overrides:
        cfg = PhantomConfig(**{**cfg.__dict__, **overrides})
    unknown = set(cfg.kinds) - set(NODULE_KINDS)
    if unknown:
        raise ValueError(f"unknown nodule kinds {sorted(unknown)}; choose from {NODULE_KINDS}")
    rng = np.random.default_rng(seed)
    frame = _Frame(cfg)
    rows = np.arange(cfg.size)
    u, v = frame.uv(rows[:, None], rows[None, :])
    u, v = np.broadcast_to(u, (cfg.size, cfg.size)), np.broadcast_to(v, (cfg.size, cfg.size))
    textures = _textures(rng, cfg.size, 6)
    slicer = anatomy.ChestSlicer(u, v, frame.half_fov)
    vol = np.empty((cfg.slices, cfg.size, cfg.size), dtype=np.float32)
    lung = np.empty(vol.shape, dtype=bool)
    period = 10.0  # mm over which the lung texture blends from one pattern to the next
    for k in range(cfg.slices):
        z_mm = k * cfg.slice_mm
        a = z_mm / period
        j, w = int(a) % len(textures), a - int(a)
        tex = textures[j] * np.float32(1 - w) + textures[(j + 1) % len(textures)] * np.float32(w)
        vol[k], lung[k] = slicer.slice(float(frame.t(k)), z_mm, tex)
    if cfg.vessels:
        _draw_vessels(frame, rng, vol)
    placed = _draw_nodules(frame, cfg, rng, vol)

    thickness = cfg.thickness_mm or cfg.slice_mm
    if thickness > cfg.slice_mm * 1.01:
        ndimage.uniform_filter1d(vol, size=max(1, int(round(thickness / cfg.slice_mm))), axis=0,
                                 output=vol)
    if cfg.noise_hu > 0:
        for k in range(cfg.slices):  # per slice: keeps the random temporaries small
            vol[k] += rng.standard_normal(size=vol.shape[1:], dtype=np.float32) * cfg.noise_hu
    hu = np.empty(vol.shape, dtype=np.int16)
    np.rint(np.clip(vol, -1024, 3071), out=vol)
    hu[...] = vol
    del vol
    if cfg.padding_hu is not None:
        outside = u**2 + v**2 > 1.0
        hu[:, outside] = cfg.padding_hu

    spacing = (cfg.pixel_mm, cfg.pixel_mm, cfg.slice_mm)
    origin = phantom_origin(cfg)
    volume = CtVolume(hu=hu, spacing_xyz=spacing, origin_xyz=origin, direction=np.eye(3),
                      source=f"phantom(seed={seed})", modality="CT",
                      series_uid=f"{PHANTOM_UID_PREFIX}{seed}",
                      study_uid=f"{PHANTOM_UID_PREFIX}{seed}.1",
                      slice_thickness_mm=thickness, files=0)
    nodules = []
    for c, diameter, kind, malignant, margin, body, axes in placed:
        xyz = volume.irc_to_xyz(c)
        nodules.append(PhantomNodule(tuple(float(x) for x in xyz), tuple(float(i) for i in c),
                                     diameter, kind, malignant, margin, body, axes))
    return Phantom(volume=volume, nodules=nodules, lung_mask=lung, seed=seed, config=cfg)
