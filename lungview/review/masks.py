"""The reader's nodule masks of one scan: a label volume, one label per finding.

In memory a dense uint16 volume (allocated at the first mask), so that painting and drawing a
slice are plain array indexing. Every change is a MaskChange holding only the voxels it changed
(their flat indices, old and new labels): undo and redo replay it, and a brush stroke costs what
it touched, not a copy of the volume. On disk (masks.npz in the workspace) each label is kept as
its box and the packed bits of its voxels inside it, so a save costs the painted voxels, not the
scan's size; the labels changed since the last save are the only ones packed again.

Besides the label volume, a finding may carry other readers' masks (LIDC's four radiologists
each drew their own contours): kept as they were read, by reader, saved with the rest.

Plain numpy: the GUI, the CLI and the tests drive the same object.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from lungview.core import LungViewError
from lungview.core.atomic import atomic_path
from lungview.core.shape import axial_axes, equivalent_diameter

VERSION = 1
Box = tuple[slice, slice, slice]


@dataclass(frozen=True)
class MaskChange:
    """Voxels (flat indices into the volume) that went from `old` to `new` labels."""

    idx: np.ndarray  # int64
    old: np.ndarray  # uint16
    new: np.ndarray  # uint16

    def __len__(self) -> int:
        return len(self.idx)

    @staticmethod
    def join(changes: list[MaskChange]) -> MaskChange | None:
        """The changes one after the other as one: for a voxel touched twice, its first old label
        and its last new one."""
        changes = [c for c in changes if c is not None and len(c)]
        if not changes:
            return None
        if len(changes) == 1:
            return changes[0]
        idx = np.concatenate([c.idx for c in changes])
        old = np.concatenate([c.old for c in changes])
        new = np.concatenate([c.new for c in changes])
        uniq, first = np.unique(idx, return_index=True)
        _, last_rev = np.unique(idx[::-1], return_index=True)
        keep = old[first] != new[len(idx) - 1 - last_rev]
        return MaskChange(uniq[keep], old[first][keep], new[len(idx) - 1 - last_rev][keep])


def _grow(box: list[int] | None, lo, hi) -> list[int]:
    if box is None:
        return [int(lo[0]), int(hi[0]), int(lo[1]), int(hi[1]), int(lo[2]), int(hi[2])]
    return [min(box[0], int(lo[0])), max(box[1], int(hi[0])), min(box[2], int(lo[1])), max(box[3], int(hi[1])),
            min(box[4], int(lo[2])), max(box[5], int(hi[2]))]


def _slices(b) -> Box:
    return slice(b[0], b[1]), slice(b[2], b[3]), slice(b[4], b[5])


def _corners(box: Box) -> list[int]:
    return [int(v) for s in box for v in (s.start, s.stop)]


def _flat(box: Box, crop: np.ndarray, shape) -> np.ndarray:
    """Flat indices into a volume of `shape` of the voxels set in `crop` (over `box`)."""
    irc = np.nonzero(crop)
    return np.ravel_multi_index(tuple(a + s.start for a, s in zip(irc, box)), shape).astype(np.int64)


class Masks:
    """`vol`: the scan (its shape, spacing and geometry)."""

    def __init__(self, vol):
        self.vol = vol
        self.shape = tuple(int(s) for s in vol.shape)
        self.labels: np.ndarray | None = None  # uint16 (index, row, col), allocated at the first mask
        self.ids: dict[int, str] = {}  # label -> finding id
        self.label_of: dict[str, int] = {}
        self.boxes: dict[int, list[int]] = {}  # label -> [i0, i1, r0, r1, c0, c1], never too small
        self.readers: dict[str, dict[str, tuple[Box, np.ndarray]]] = {}  # finding id -> reader -> mask
        self.version = 0  # bumped on every change (views redraw on it)
        self.saved_version = 0  # the version last handed to a save (the viewer's autosave)
        self.label_versions: dict[int, int] = {}  # per label: bumped when its voxels change (3D meshes)
        self._packed: dict[int, tuple[list[int], bytes]] = {}  # the save's form, per clean label

    # -- reading ---------------------------------------------------------------------------
    def __bool__(self) -> bool:
        return bool(self.ids) or bool(self.readers)

    def has(self, fid: str) -> bool:
        lab = self.label_of.get(fid)
        return lab is not None and self.count(fid) > 0

    def count(self, fid: str) -> int:
        lab = self.label_of.get(fid)
        if lab is None or self.labels is None or lab not in self.boxes:
            return 0
        return int(np.count_nonzero(self.labels[_slices(self.boxes[lab])] == lab))

    def mask(self, fid: str) -> tuple[Box, np.ndarray] | None:
        """(box, bool mask over the box) of the finding's voxels; None without any."""
        lab = self.label_of.get(fid)
        if lab is None or self.labels is None or lab not in self.boxes:
            return None
        box = _slices(self.boxes[lab])
        crop = self.labels[box] == lab
        if not crop.any():
            return None
        return box, crop

    def changed_at(self, fid: str) -> int:
        """The version at which the finding's voxels last changed (0: never)."""
        return self.label_versions.get(self.label_of.get(fid, -1), 0)

    def measure(self, fid: str) -> dict | None:
        """The finding's sizes from its mask: centre (its voxels' mean), volume, equivalent
        diameter, long and short axis on the axial slice of largest extent; None without voxels."""
        got = self.mask(fid)
        if got is None:
            return None
        box, crop = got
        spacing = np.asarray(self.vol.spacing_irc, dtype=np.float64)
        volume = float(crop.sum() * np.prod(spacing))
        center = np.argwhere(crop).mean(axis=0) + np.array([s.start for s in box])
        long, short = axial_axes(crop, spacing)
        return {"center_xyz": tuple(float(v) for v in self.vol.irc_to_xyz(center)),
                "diameter_mm": equivalent_diameter(volume), "long_axis_mm": long, "short_axis_mm": short,
                "volume_mm3": volume}

    # -- changing ----------------------------------------------------------------------------
    def label_for(self, fid: str) -> int:
        lab = self.label_of.get(fid)
        if lab is None:
            lab = max(self.ids, default=0) + 1
            if lab > np.iinfo(np.uint16).max:
                raise LungViewError("65535 masks per scan at most")
            self.ids[lab], self.label_of[fid] = fid, lab
        if self.labels is None:
            self.labels = np.zeros(self.shape, dtype=np.uint16)
        return lab

    def apply(self, change: MaskChange | None, forward: bool = True) -> None:
        if change is None or not len(change):
            return
        values = change.new if forward else change.old
        self.labels.reshape(-1)[change.idx] = values
        irc = np.unravel_index(change.idx, self.shape)
        for lab in np.unique(values):
            if lab == 0:
                continue
            sel = values == lab
            lo = [int(a[sel].min()) for a in irc]
            hi = [int(a[sel].max()) + 1 for a in irc]
            self.boxes[int(lab)] = _grow(self.boxes.get(int(lab)), lo, hi)
        self.version += 1
        for lab in np.unique(np.concatenate([change.old, change.new])):
            self._packed.pop(int(lab), None)
            self.label_versions[int(lab)] = self.version

    def _change(self, idx: np.ndarray, new_label: int, only: np.ndarray | None = None) -> MaskChange | None:
        idx = np.asarray(idx, dtype=np.int64)
        old = self.labels.reshape(-1)[idx]
        keep = old != new_label if only is None else (old != new_label) & only
        if not keep.any():
            return None
        return MaskChange(idx[keep], old[keep], np.full(int(keep.sum()), new_label, np.uint16))

    def dab(self, fid: str, idx: np.ndarray, erase: bool = False, hu_range=None) -> MaskChange | None:
        """Paints (or erases) the finding's label at these voxels and returns what changed.
        Paint never takes voxels of another finding, nor (with `hu_range`) voxels outside the
        HU range; the eraser removes only this finding's voxels."""
        lab = self.label_for(fid)
        idx = np.asarray(idx, dtype=np.int64)
        old = self.labels.reshape(-1)[idx]
        if erase:
            change = self._change(idx, 0, old == lab)
        else:
            only = old == 0
            if hu_range is not None:
                hu = self.vol.hu.reshape(-1)[idx]
                only &= (hu >= hu_range[0]) & (hu <= hu_range[1])
            change = self._change(idx, lab, only)
        self.apply(change)
        return change

    def replace(self, fid: str, box: Box, crop: np.ndarray) -> MaskChange | None:
        """The finding's mask becomes `crop` over `box` (voxels of other findings kept theirs)."""
        lab = self.label_for(fid)
        changes = [self.clear(fid)]
        flat = _flat(box, crop, self.shape)
        changes.append(self._change(flat, lab, self.labels.reshape(-1)[flat] == 0))
        self.apply(changes[-1])
        return MaskChange.join(changes)

    def clear(self, fid: str) -> MaskChange | None:
        """Removes the finding's voxels; what changed (already applied)."""
        got = self.mask(fid)
        if got is None:
            return None
        change = self._change(_flat(*got, self.shape), 0)
        self.apply(change)
        return change

    # -- persistence ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """What a save writes, taken on the caller's thread (cheap: only labels changed since the
        last snapshot are packed again)."""
        labels = {}
        for lab, fid in self.ids.items():
            if lab not in self._packed:
                got = self.mask(fid)
                if got is None:
                    self._packed[lab] = ([], b"")
                else:
                    box, crop = got
                    self._packed[lab] = (_corners(box), np.packbits(crop, axis=None).tobytes())
            b, bits = self._packed[lab]
            if b:
                labels[fid] = (b, bits)
        readers = {fid: {r: (_corners(box), np.packbits(m, axis=None).tobytes())
                         for r, (box, m) in by.items()} for fid, by in self.readers.items()}
        return {"shape": list(self.shape), "labels": labels, "readers": readers}

    @staticmethod
    def write(path: str | os.PathLike, snapshot: dict) -> None:
        """The snapshot as a .npz (a zip of .npy arrays and one JSON index), atomically."""
        index = {"version": VERSION, "shape": snapshot["shape"], "labels": [], "readers": []}
        arrays = {}
        for n, (fid, (box, bits)) in enumerate(snapshot["labels"].items()):
            index["labels"].append({"id": fid, "box": box, "array": f"l{n}"})
            arrays[f"l{n}"] = np.frombuffer(bits, dtype=np.uint8)
        n = 0
        for fid, by in snapshot["readers"].items():
            for reader, (corners, bits) in by.items():
                index["readers"].append({"id": fid, "reader": reader, "box": corners, "array": f"r{n}"})
                arrays[f"r{n}"] = np.frombuffer(bits, dtype=np.uint8)
                n += 1
        with atomic_path(path) as tmp:
            with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
                z.writestr("index.json", json.dumps(index))
                for name, arr in arrays.items():
                    buf = io.BytesIO()
                    np.save(buf, arr, allow_pickle=False)
                    z.writestr(f"{name}.npy", buf.getvalue())

    def save(self, path: str | os.PathLike) -> None:
        self.write(path, self.snapshot())

    @staticmethod
    def ids_in(path: str | os.PathLike) -> list[str]:
        """The findings that have a mask in a masks.npz, from its index alone (no voxels read)."""
        try:
            with zipfile.ZipFile(path) as z:
                return [e["id"] for e in json.loads(z.read("index.json"))["labels"]]
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
            raise LungViewError(f"{path}: damaged masks file ({exc})") from None

    @classmethod
    def load(cls, path: str | os.PathLike, vol) -> Masks:
        masks = cls(vol)
        try:
            with zipfile.ZipFile(path) as z:
                index = json.loads(z.read("index.json"))
                if not isinstance(index.get("version"), int) or index["version"] > VERSION:
                    raise LungViewError(f"{path}: masks version {index.get('version')!r}; "
                                        f"this LungView reads up to {VERSION}")
                if tuple(index["shape"]) != masks.shape:
                    raise LungViewError(f"{path}: masks of a {tuple(index['shape'])} scan, not of this "
                                        f"{masks.shape} one")

                def unpack(entry, box):
                    size = tuple(s.stop - s.start for s in box)
                    bits = np.load(io.BytesIO(z.read(entry["array"] + ".npy")), allow_pickle=False)
                    return np.unpackbits(bits, count=int(np.prod(size))).reshape(size).astype(bool)

                for e in index["labels"]:
                    box = _slices(e["box"])
                    masks.replace(e["id"], box, unpack(e, box))
                for e in index["readers"]:
                    box = _slices(e["box"])
                    masks.readers.setdefault(e["id"], {})[e["reader"]] = (box, unpack(e, box))
        except LungViewError:
            raise
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise LungViewError(f"{path}: damaged masks file ({exc})") from None
        masks.version = 0
        return masks


def disk_indices(shape, axis: int, center_irc, radius_mm: float, spacing_irc) -> np.ndarray:
    """Flat indices of the voxels of a disk (radius in mm) in the plane through `center_irc`
    perpendicular to `axis`: a brush dab in the axial (0), coronal (1) or sagittal (2) view."""
    center = np.asarray(center_irc, dtype=np.float64)
    k = int(round(center[axis]))
    if not 0 <= k < shape[axis]:
        return np.zeros(0, dtype=np.int64)
    dims = [d for d in range(3) if d != axis]
    ranges = []
    for d in dims:
        r = radius_mm / spacing_irc[d]
        lo, hi = max(0, int(np.floor(center[d] - r))), min(shape[d], int(np.ceil(center[d] + r)) + 1)
        ranges.append(np.arange(lo, hi))
    a, b = np.meshgrid(*ranges, indexing="ij")
    inside = (((a - center[dims[0]]) * spacing_irc[dims[0]]) ** 2
              + ((b - center[dims[1]]) * spacing_irc[dims[1]]) ** 2) <= radius_mm**2
    coords = [None, None, None]
    coords[axis] = np.full(int(inside.sum()), k)
    coords[dims[0]], coords[dims[1]] = a[inside], b[inside]
    return np.ravel_multi_index(tuple(coords), shape).astype(np.int64)
