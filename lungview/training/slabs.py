"""The U-Net's training crops, drawn on the fly from slabs cut once.

A slab holds what an example's crops can reach: the slices its crops may centre on (through the
nodule's extent along z for a mask, its middle slice for a negative) and the card's context slices
on each side, over a 96 x 96 window (the book's 64 x 64 crop and its random shift of up to 16
pixels each way), HU as the model sees it (the scan resampled along z where the card asks, clipped
to the card's range, int16) and beside it the target (the mask on the scan's own slice). Each
training step draws a new slice and shift per example, as the book's TrainingLuna2dSegmentationDataset
draws a 64 crop of its cached 96 one; a drawn crop is exactly what inference's segmentation_input
cuts from the scan at that slice and box (to the whole HU where the scan was resampled along z). Slabs are held in memory for a workspace's few scans and
kept per scan in the crop cache (training.cache) for LUNA16.

Plain Python (no Qt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungview.training.examples import Example

SEG_CROP = 64  # the book's U-Net training crop
SHIFT = SEG_CROP // 4  # its random offset, each way
WINDOW = SEG_CROP + 2 * SHIFT


@dataclass
class Part:
    """The slabs of one scan's examples: `hu` and `target` (rows, WINDOW, WINDOW), and per example
    `index` (first row, slices below the middle, slices above it; for rows and columns, where the
    centred crop starts in the window and the last start the scan allows) and `labels`."""

    hu: np.ndarray  # int16
    target: np.ndarray  # uint8
    index: np.ndarray  # (n, 7) int64
    labels: np.ndarray  # (n,) int64


def cut_part(work, labels, examples: list[Example], card) -> Part:
    """The slabs of one scan: `work` the scan as the model sees it, `labels` the scan's own label
    volume (None: nothing marked); both share the scan's origin, so model slice k lies on the
    scan's slice k x (model spacing / scan spacing)."""
    ctx = card.context
    n_slices, rows, cols = work.shape
    scale = 1.0 if labels is None else work.spacing_xyz[2] / labels.spacing_z
    lo_hu, hi_hu = card.hu_clip
    hus, targets, index = [], [], []
    start = 0
    for e in examples:
        c = work.xyz_to_irc(np.asarray(e.center_xyz, dtype=np.float64))
        k0 = int(np.clip(round(c[0]), 0, n_slices - 1))
        span = int(round(e.diameter_mm / (2.0 * work.spacing_xyz[2]))) if e.label else 0
        below, above = min(span, k0), min(span, n_slices - 1 - k0)
        slices = np.clip(np.arange(k0 - below - ctx, k0 + above + ctx + 1), 0, n_slices - 1)
        (r0, r_at, r_last), (c0, c_at, c_last) = _window_start(c[1], rows), _window_start(c[2], cols)
        hu = _window(work.hu, slices, r0, c0, lo_hu)
        np.clip(hu, lo_hu, hi_hu, out=hu)
        hus.append(np.rint(hu).astype(np.int16))
        target = np.zeros(hu.shape, dtype=np.uint8)
        if labels is not None:
            native = np.clip(np.rint(slices * scale).astype(int), 0, labels.volume.shape[0] - 1)
            target[:] = _window(labels.volume, native, r0, c0, 0) > 0
        targets.append(target)
        index.append((start, below, above, r_at, r_last, c_at, c_last))
        start += len(slices)
    empty = np.zeros((0, WINDOW, WINDOW))
    return Part(np.concatenate(hus) if hus else empty.astype(np.int16),
                np.concatenate(targets) if targets else empty.astype(np.uint8),
                np.array(index, dtype=np.int64).reshape(-1, 7), np.array([e.label for e in examples], dtype=np.int64))


def _window_start(centre: float, extent: int) -> tuple[int, int, int]:
    """(first row (column) of the window around `centre`, moved inside the scan; where in it the
    crop centred on `centre` starts, before it is moved inside; the last start inside the scan).
    A crop shifted by d then starts at clip(at + d, 0, last): as inference's box would, inside
    the scan."""
    first = int(np.clip(round(centre) - WINDOW // 2, 0, max(0, extent - WINDOW)))
    return first, int(round(centre)) - SEG_CROP // 2 - first, min(extent - SEG_CROP - first, 2 * SHIFT)


def _window(volume: np.ndarray, slices: np.ndarray, r0: int, c0: int, fill) -> np.ndarray:
    out = volume[slices, r0:r0 + WINDOW, c0:c0 + WINDOW].astype(np.float32)
    pad = [(0, 0), (0, WINDOW - out.shape[1]), (0, WINDOW - out.shape[2])]
    return np.pad(out, pad, constant_values=fill) if any(p[1] for p in pad) else out


@dataclass
class Labels:
    """A scan's label volume and its slice spacing (the scan's own, not the model's)."""

    volume: np.ndarray
    spacing_z: float


class SlabStore:
    """The slabs of a list of examples, over the parts they were cut into (in memory, or memory
    maps of the cache's files): `draw(picks, rng)` a random crop of each picked example,
    `centred()` every example's middle crop (validation)."""

    def __init__(self, parts: list[Part], context: int):
        self.parts, self.context = parts, context
        self.offsets = np.concatenate([[0], np.cumsum([len(p.index) for p in parts])]).astype(np.int64)
        self.labels = np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def crop(self, i: int, offset: int = 0, dr: int = 0, dc: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Example i's (2 context + 1, 64, 64) input and (1, 64, 64) target on the slice `offset`
        from its middle, shifted by (dr, dc) pixels (|shift| <= SHIFT)."""
        f = int(np.searchsorted(self.offsets, i, side="right") - 1)
        part = self.parts[f]
        start, below, _, r_at, r_last, c_at, c_last = (int(v) for v in part.index[i - self.offsets[f]])
        mid = start + self.context + below + offset
        r, c = int(np.clip(r_at + dr, 0, max(0, r_last))), int(np.clip(c_at + dc, 0, max(0, c_last)))
        x = part.hu[mid - self.context:mid + self.context + 1, r:r + SEG_CROP, c:c + SEG_CROP].astype(np.float32)
        y = part.target[mid:mid + 1, r:r + SEG_CROP, c:c + SEG_CROP].astype(np.float32)
        return x, y

    def draw(self, picks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A crop of each picked example at a random slice of its extent and a random shift."""
        xs, ys = [], []
        for i in picks:
            f = int(np.searchsorted(self.offsets, i, side="right") - 1)
            _, below, above = (int(v) for v in self.parts[f].index[i - self.offsets[f], :3])
            offset = int(rng.integers(-below, above + 1))
            dr, dc = (int(v) for v in rng.integers(-SHIFT, SHIFT + 1, size=2))
            x, y = self.crop(int(i), offset, dr, dc)
            xs.append(x)
            ys.append(y)
        return self._stack(xs, ys)

    def centred(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.crop(i) for i in range(len(self)))) if len(self) else ((), ())
        return self._stack(list(xs), list(ys))

    def _stack(self, xs, ys):
        if not xs:
            return (np.zeros((0, 2 * self.context + 1, SEG_CROP, SEG_CROP), np.float32),
                    np.zeros((0, 1, SEG_CROP, SEG_CROP), np.float32))
        return np.stack(xs), np.stack(ys)


def cut_slabs(examples: list[Example], open_scan, masks_of, card) -> SlabStore:
    """Slabs of `examples` cut in memory, scan by scan: `open_scan(uid)` the scan, `masks_of(uid,
    vol)` its masks (anything with a `labels` volume, None for none)."""
    parts = [part_of_scan(open_scan(uid), uid, ex, masks_of, card) for uid, ex in by_scan(examples).items()]
    return SlabStore(parts, card.context)


def part_of_scan(vol, uid: str, examples: list[Example], masks_of, card) -> Part:
    """One scan's slabs (its label volume from `masks_of`)."""
    from lungview.training.finetune import model_view

    labels = masks_of(uid, vol).labels if masks_of is not None else None
    return cut_part(model_view(vol, card), None if labels is None else Labels(labels, vol.spacing_xyz[2]),
                    examples, card)


def by_scan(examples: list[Example]) -> dict[str, list[Example]]:
    """The examples grouped by scan, in order (crops are cut one scan at a time)."""
    out: dict[str, list[Example]] = {}
    for e in examples:
        out.setdefault(e.scan, []).append(e)
    return out
