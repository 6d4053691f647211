"""LIDC-IDRI XML reads: each radiologist's nodules (contours for nodules of 3 mm or more, a
single point for smaller ones), their masks in a scan, and the readers' consensus.

The consensus follows LUNA16: a reader's nodule of 3 mm or more (one drawn with contours) is
clustered with the other readers' nodules whose centres lie within the larger of the two radii;
a cluster marked by at least 3 of the 4 readers is a nodule (`accepted`), its centre and
diameter the mean of the readers' (each reader's diameter: the sphere of the contoured volume),
its malignancy the median of their ratings (> 3 malignant, < 3 benign, 3 unknown). Clusters of
one or two readers are kept with `accepted` False; points (< 3 mm) and non-nodules are counted,
not clustered.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import numpy as np

from lungview.core import CtVolume, LungViewError
from lungview.core.shape import axial_axes, equivalent_diameter

ACCEPT_READERS = 3


@dataclass(frozen=True)
class Roi:
    z_mm: float
    sop_uid: str
    inclusion: bool
    points: tuple[tuple[int, int], ...]  # (x = column, y = row) pixels of the outline


@dataclass(frozen=True)
class ReaderNodule:
    reader: str
    nodule_id: str
    rois: tuple[Roi, ...]
    characteristics: dict = field(default_factory=dict, compare=False)

    @property
    def small(self) -> bool:
        """Marked by its centre only (LIDC: nodules under 3 mm)."""
        return all(len(r.points) <= 1 for r in self.rois)


@dataclass(frozen=True)
class LidcRead:
    series_uid: str
    nodules: tuple[ReaderNodule, ...]
    non_nodules: int
    readers: tuple[str, ...]


@dataclass(frozen=True)
class ConsensusNodule:
    center_xyz: tuple[float, float, float]
    diameter_mm: float  # mean of the readers' equivalent diameters
    long_axis_mm: float  # means of the readers' axial long and short axes
    short_axis_mm: float
    readers: tuple[str, ...]
    ratings: tuple[int, ...]  # malignancy 1-5, one per reader who rated it
    accepted: bool  # marked by at least ACCEPT_READERS readers
    masks: tuple[tuple[str, tuple[slice, ...], np.ndarray], ...] = field(compare=False, default=())
    characteristics: dict = field(default_factory=dict, compare=False)  # median of each

    @property
    def malignancy(self) -> str:
        if not self.ratings:
            return "unknown"
        m = float(np.median(self.ratings))
        return "malignant" if m > 3 else "benign" if m < 3 else "unknown"


def _strip(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el, name):
    return [c for c in el if _strip(c.tag) == name]


def _text(el, name, default=""):
    for c in el:
        if _strip(c.tag) == name:
            return (c.text or "").strip()
    return default


def read_lidc(path: str | os.PathLike) -> LidcRead:
    try:
        root = ET.parse(path).getroot()
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except ET.ParseError as exc:
        raise LungViewError(f"{path}: not an XML file ({exc})") from None
    if _strip(root.tag) != "LidcReadMessage":
        raise LungViewError(f"{path}: not a LIDC-IDRI read (root element {_strip(root.tag)!r})")
    series = ""
    for header in _children(root, "ResponseHeader"):
        series = _text(header, "SeriesInstanceUid") or _text(header, "SeriesInstanceUID")
    nodules, non_nodules, readers = [], 0, []
    for n, session in enumerate(_children(root, "readingSession"), start=1):
        reader = _text(session, "servicingRadiologistID") or f"reader {n}"
        readers.append(reader)
        non_nodules += len(_children(session, "nonNodule"))
        for nod in _children(session, "unblindedReadNodule"):
            rois = []
            for roi in _children(nod, "roi"):
                try:
                    pts = tuple((int(_text(e, "xCoord")), int(_text(e, "yCoord"))) for e in _children(roi, "edgeMap"))
                    z = float(_text(roi, "imageZposition"))
                except ValueError:
                    raise LungViewError(f"{path}: a contour of {reader}'s {_text(nod, 'noduleID')} has a "
                                        "non-numeric coordinate") from None
                rois.append(Roi(z, _text(roi, "imageSOP_UID"), _text(roi, "inclusion", "TRUE").upper() == "TRUE", pts))
            chars = {}
            for c in _children(nod, "characteristics"):
                for item in c:
                    if (item.text or "").strip().isdigit():
                        chars[_strip(item.tag)] = int(item.text)
            nodules.append(ReaderNodule(reader, _text(nod, "noduleID"), tuple(rois), chars))
    if not readers:
        raise LungViewError(f"{path}: holds no reading session")
    return LidcRead(series, tuple(nodules), non_nodules, tuple(readers))


def _fill(points, shape) -> np.ndarray:
    """The pixels inside a closed outline and the outline itself (LIDC's contours are drawn on
    the nodule's edge pixels, which belong to it)."""
    out = np.zeros(shape, dtype=bool)
    pts = np.asarray(points, dtype=np.float64)
    xs, ys = pts[:, 0], pts[:, 1]
    x2, y2 = np.roll(xs, -1), np.roll(ys, -1)
    for row in range(max(0, int(ys.min())), min(shape[0], int(ys.max()) + 1)):
        y = row + 0.5  # even-odd crossings of the line through the pixel centres (half-open edges)
        cross = ((ys <= y) & (y2 > y)) | ((y2 <= y) & (ys > y))
        at = xs[cross] + (y - ys[cross]) * (x2[cross] - xs[cross]) / (y2[cross] - ys[cross])
        at.sort()
        for a, b in zip(at[0::2], at[1::2]):
            lo, hi = max(0, int(math.ceil(a))), min(shape[1] - 1, int(math.floor(b)))
            if hi >= lo:
                out[row, lo:hi + 1] = True
    cols = np.clip(xs.astype(int), 0, shape[1] - 1)
    rows = np.clip(ys.astype(int), 0, shape[0] - 1)
    out[rows, cols] = True
    return out


def reader_mask(nodule: ReaderNodule, vol: CtVolume) -> tuple[tuple[slice, ...], np.ndarray]:
    """The nodule as this reader contoured it: (box, bool mask over the box) in the volume's voxels."""
    parts = {}
    for roi in nodule.rois:
        k = int(round(vol.xyz_to_irc(np.array([vol.origin_xyz[0], vol.origin_xyz[1], roi.z_mm]))[0]))
        if not 0 <= k < vol.shape[0]:
            raise LungViewError(f"contour of {nodule.reader}'s {nodule.nodule_id} at z {roi.z_mm} mm lies outside the scan")
        plane = _fill(roi.points, vol.shape[1:])
        if k not in parts:
            parts[k] = np.zeros(vol.shape[1:], dtype=bool)
        if roi.inclusion:
            parts[k] |= plane
        else:  # an exclusion outline: a hole; its outline stays the nodule's edge
            inner = plane.copy()
            inner[np.clip(np.array([p[1] for p in roi.points]), 0, vol.shape[1] - 1),
                  np.clip(np.array([p[0] for p in roi.points]), 0, vol.shape[2] - 1)] = False
            parts[k] &= ~inner
    ks = sorted(parts)
    rows = np.flatnonzero(np.any([parts[k].any(axis=1) for k in ks], axis=0))
    cols = np.flatnonzero(np.any([parts[k].any(axis=0) for k in ks], axis=0))
    if not rows.size:
        raise LungViewError(f"{nodule.reader}'s {nodule.nodule_id} has an empty contour")
    box = (slice(ks[0], ks[-1] + 1), slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    mask = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    for k in ks:
        mask[k - ks[0]] = parts[k][box[1], box[2]]
    return box, mask


def consensus(read: LidcRead, vol: CtVolume) -> tuple[list[ConsensusNodule], dict[str, int]]:
    """The readers' nodules of 3 mm or more clustered across readers; and counts of what was
    left out ({"small": points under 3 mm, "non_nodules": ...})."""
    spacing = np.asarray(vol.spacing_irc, dtype=np.float64)
    marks = []
    for nod in read.nodules:
        if nod.small:
            continue
        box, mask = reader_mask(nod, vol)
        irc = np.argwhere(mask).mean(axis=0) + np.array([s.start for s in box])
        volume = float(mask.sum() * np.prod(spacing))
        long, short = axial_axes(mask, spacing)
        marks.append((nod, np.asarray(vol.irc_to_xyz(irc), dtype=np.float64), equivalent_diameter(volume),
                      long, short, box, mask))
    # single linkage within the larger radius, one nodule per reader per cluster (closest first)
    order = sorted(((float(np.linalg.norm(a[1] - b[1])), i, j) for i, a in enumerate(marks)
                    for j, b in enumerate(marks) if i < j and a[0].reader != b[0].reader
                    and np.linalg.norm(a[1] - b[1]) <= max(a[2], b[2]) / 2.0))
    cluster = list(range(len(marks)))

    def root(i):
        while cluster[i] != i:
            i = cluster[i]
        return i

    for _, i, j in order:
        ri, rj = root(i), root(j)
        if ri == rj:
            continue
        readers_i = {marks[k][0].reader for k in range(len(marks)) if root(k) == ri}
        readers_j = {marks[k][0].reader for k in range(len(marks)) if root(k) == rj}
        if readers_i & readers_j:
            continue
        cluster[rj] = ri
    groups: dict[int, list] = {}
    for k, m in enumerate(marks):
        groups.setdefault(root(k), []).append(m)
    out = []
    for members in groups.values():
        centres = np.array([m[1] for m in members])
        ratings = tuple(m[0].characteristics["malignancy"] for m in members if "malignancy" in m[0].characteristics)
        keys = set().union(*(m[0].characteristics for m in members))
        chars = {k: float(np.median([m[0].characteristics[k] for m in members if k in m[0].characteristics]))
                 for k in keys}
        out.append(ConsensusNodule(
            center_xyz=tuple(float(v) for v in centres.mean(axis=0)),
            diameter_mm=float(np.mean([m[2] for m in members])),
            long_axis_mm=float(np.mean([m[3] for m in members])), short_axis_mm=float(np.mean([m[4] for m in members])),
            readers=tuple(m[0].reader for m in members), ratings=ratings,
            accepted=len(members) >= ACCEPT_READERS,
            masks=tuple((m[0].reader, m[5], m[6]) for m in members), characteristics=chars))
    out.sort(key=lambda c: (not c.accepted, -c.diameter_mm))
    left = {"small": sum(n.small for n in read.nodules), "non_nodules": read.non_nodules}
    return out, left
