"""A crop cache on disk for training at scale: the classifier crops of every example, cut once by
inference's own function from the scan as the model sees it, then read by index; and the U-Net's
slabs (training.slabs), from which each step draws its crops.

Layout: one folder per input spec (crop size, HU clip, slice spacing range, margin; its hash is the
folder's name), in it one `<series UID>-<digest>.npy` per scan: (N, D + 2m, H + 2m, W + 2m) int16
HU (the card's clip fits int16), its N examples in order, m voxels of margin for whole-voxel
shifts; the digest is of those examples' centres, sizes and labels, so a changed example list is
a new file. The U-Net's slabs lie in their own spec folder (SlabCache), one file per scan too. Each
file is written atomically (temporary file, fsync, rename) when its scan is done: an interrupted
build keeps every finished scan, and the next build cuts only what is missing. Scans are cut in
parallel worker processes, one scan open per worker.

Chosen over the book's diskcache (a key-value store of pickled crops, one entry per candidate
fetched on demand during the first epoch): a plain .npy per scan is read with a memory map, so a
DataLoader worker or a training step reads the crops it draws without loading a scan or a whole
chunk, needs no database lock between processes, and can be copied or inspected with numpy alone.
At 194 KB a crop (36 x 52 x 52 int16, margin 2), LUNA16's 1,186 annotations plus 100 negatives of
each of its 888 scans make 90k crops, 17 GB.

Plain Python (no Qt, no torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungview.core import LungViewError
from lungview.core.atomic import atomic_path
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.training.examples import Example
from lungview.training.slabs import WINDOW, Part, SlabStore, by_scan, part_of_scan

CACHE_VERSION = 1


def spec_key(card, margin: int) -> str:
    """The input spec the crops depend on, as a short hash (the cache folder's name)."""
    return _spec_hash({"version": CACHE_VERSION, "crop": list(card.crop), "hu_clip": list(card.hu_clip),
                       "slice_spacing_mm": list(card.slice_spacing_mm), "margin": int(margin)})


def _spec_hash(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _digest(examples: list[Example]) -> str:
    centres = np.array([(*e.center_xyz, e.diameter_mm, e.label) for e in examples], dtype=np.float64)
    return hashlib.sha256(centres.tobytes()).hexdigest()[:16]


def _cut_scan(job) -> tuple[str, int]:
    """Worker: one scan's crops into `out` (atomically). Returns (uid, crops)."""
    uid, path, centres, card, margin, out = job
    from lungview.inference.classify import classifier_input
    from lungview.io import open_volume
    from lungview.training.finetune import model_view

    work = model_view(open_volume(path, series=uid), card)
    crops = np.stack([classifier_input(work.hu, work.xyz_to_irc(np.asarray(c)), card, margin) for c in centres])
    with atomic_path(out, ".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.rint(crops).astype(np.int16))
    return uid, len(crops)


class CropStore:
    """Crops of a list of examples read from the cache's per-scan files (memory maps, opened on
    first use in each process): `store[indices]` and `store[a:b]` give float32 (n, D, H, W) with
    `margin` voxels around the crop (at most the cache's), `labels` the examples' labels."""

    def __init__(self, files: list[Path], counts: list[int], examples: list[Example], cache_margin: int,
                 margin: int):
        if margin > cache_margin:
            raise LungViewError(f"crops with a margin of {margin} voxels from a cache cut with {cache_margin}")
        self.files, self.examples = files, examples
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.labels = np.array([e.label for e in examples], dtype=np.int64)
        self.trim = cache_margin - margin
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _map(self, f: int) -> np.ndarray:
        if f not in self._maps:
            self._maps[f] = np.load(self.files[f], mmap_mode="r")
        return self._maps[f]

    @property
    def shape(self) -> tuple[int, ...]:
        first = self._map(0).shape[1:] if self.files else (0, 0, 0)
        return (len(self), *(n - 2 * self.trim for n in first))

    def __getitem__(self, index) -> np.ndarray:
        idx = np.arange(len(self))[index] if isinstance(index, slice) else np.asarray(index, dtype=np.int64)
        file_of = np.searchsorted(self.offsets, idx, side="right") - 1
        out = np.empty((len(idx), *self.shape[1:]), dtype=np.float32)
        t = self.trim
        inner = (slice(t, -t or None),) * 3
        for f in np.unique(file_of):
            at = np.flatnonzero(file_of == f)
            out[at] = self._map(int(f))[idx[at] - self.offsets[f]][(slice(None), *inner)]
        return out


@dataclass
class CropCache:
    root: Path  # the cache's folder for this input spec
    margin: int

    def file_for(self, uid: str, examples: list[Example]) -> Path:
        return self.root / f"{uid}-{_digest(examples)}.npy"

    def build(self, examples: dict[str, list[Example]], path_of, card, workers: int = 0,
              progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> dict:
        """Cuts the crops of every scan that has no file yet, `workers` processes at a time (0:
        as many as CPUs). Returns {"scans", "cut", "kept", "crops", "bytes"}."""
        files = {u: self.file_for(u, ex) for u, ex in examples.items()}
        jobs = {u: (u, str(path_of(u)), [e.center_xyz for e in examples[u]], card, self.margin, files[u])
                for u in files}
        return _build(self.root, files, jobs, _cut_scan, examples, workers, progress, cancel, "crop cache")

    def store(self, examples: list[Example], margin: int = 0) -> CropStore:
        """The crops of `examples` (grouped by scan in their order, as built), `margin` voxels
        around the card's crop."""
        files, counts, ordered = [], [], []
        for uid, ex in by_scan(examples).items():
            f = self.file_for(uid, ex)
            if not f.exists():
                raise LungViewError(f"{f}: not in the crop cache (build it first)")
            files.append(f)
            counts.append(len(ex))
            ordered += ex
        return CropStore(files, counts, ordered, self.margin, margin)

    def crops(self, examples: list[Example], margin: int = 0) -> tuple[CropStore, np.ndarray]:
        """(crops, labels) as training.finetune asks for them."""
        store = self.store(examples, margin)
        return store, store.labels


def _build(root: Path, files: dict[str, Path], jobs: dict, cut, examples: dict[str, list[Example]], workers: int,
           progress: ProgressCallback, cancel: CancelToken | None, what: str) -> dict:
    """Runs `cut(job)` in worker processes for every scan whose file is missing, at most one scan
    per worker in flight (a cancel leaves no queue of scans to finish)."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [u for u, f in files.items() if not f.exists()]
    done = len(files) - len(todo)
    progress(done, len(files), f"{what}: {done} of {len(files)} scans there")
    workers = workers or max(1, os.cpu_count() or 1)
    if todo:
        pending = [jobs[u] for u in reversed(todo)]
        with ProcessPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            running = {pool.submit(cut, pending.pop()) for _ in range(min(workers, len(todo)))}
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    uid, _ = fut.result()
                    done += 1
                    progress(done, len(files), f"{what}: {uid}")
                if cancel is not None and cancel.is_set():
                    wait(running)  # (their files are whole: each is renamed into place when done)
                    cancel.check()
                while pending and len(running) < workers:
                    running.add(pool.submit(cut, pending.pop()))
    return {"scans": len(files), "cut": len(todo), "kept": len(files) - len(todo),
            "crops": sum(len(examples[u]) for u in files),
            "bytes": sum(f.stat().st_size + (_sidecar(f).stat().st_size if _sidecar(f).exists() else 0)
                         for f in files.values())}


def _sidecar(f: Path) -> Path:
    return f.with_name(f.name.replace(".npy", ".index.npy"))


def _cut_slabs(job) -> tuple[str, int]:
    """Worker: one scan's U-Net slabs into `out`, its index beside it (written first: the slabs'
    file, renamed into place last, marks the scan done)."""
    uid, path, examples, card, masks_of, out = job
    from lungview.io import open_volume

    part = part_of_scan(open_volume(path, series=uid), uid, examples, masks_of, card)
    for target, array in ((_sidecar(out), np.concatenate([part.index, part.labels[:, None]], axis=1)),
                          (out, np.stack([part.hu, part.target.astype(np.int16)], axis=1))):
        with atomic_path(target, ".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, array)
    return uid, len(examples)


@dataclass
class SlabCache:
    """The U-Net's slabs (training.slabs) per scan: `<uid>-<digest>.npy` (rows, 2, 96, 96) int16,
    HU and target, and `<uid>-<digest>.index.npy` (examples, 8): the slabs' index (Part), then
    the label. Built and resumed as the classifiers' crops are."""

    root: Path

    def file_for(self, uid: str, examples: list[Example]) -> Path:
        return self.root / f"{uid}-{_digest(examples)}.npy"

    def build(self, examples: dict[str, list[Example]], path_of, card, masks_of, workers: int = 0,
              progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> dict:
        """Cuts the slabs of every scan without a file, the targets from `masks_of(uid, vol)`
        (picklable: it goes to the worker processes)."""
        files = {u: self.file_for(u, ex) for u, ex in examples.items()}
        jobs = {u: (u, str(path_of(u)), examples[u], card, masks_of, files[u]) for u in files}
        return _build(self.root, files, jobs, _cut_slabs, examples, workers, progress, cancel, "U-Net crop cache")

    def slabs(self, examples: list[Example], context: int):
        """The SlabStore of `examples` (grouped by scan in their order, as built), memory-mapped."""
        parts = []
        for uid, ex in by_scan(examples).items():
            f = self.file_for(uid, ex)
            if not (f.exists() and _sidecar(f).exists()):
                raise LungViewError(f"{f}: not in the crop cache (build it first)")
            both, index = np.load(f, mmap_mode="r"), np.load(_sidecar(f))
            parts.append(Part(both[:, 0], both[:, 1], index[:, :-1], index[:, -1]))
        return SlabStore(parts, context)


def slab_cache(folder: str | os.PathLike, card) -> SlabCache:
    """The U-Net slab cache for `card`'s input spec under `folder`. Its targets are masks grown by
    this version of LungView (LUNA16 has none of its own), so the version is part of the spec."""
    from lungview import __version__

    spec = {"version": CACHE_VERSION, "unet": {"context": int(card.context), "window": WINDOW,
                                               "hu_clip": list(card.hu_clip),
                                               "slice_spacing_mm": list(card.slice_spacing_mm)},
            "masks": __version__}
    return SlabCache(Path(folder) / _spec_hash(spec))


def crop_cache(folder: str | os.PathLike, card, margin: int) -> CropCache:
    """The cache for `card`'s input spec under `folder`."""
    return CropCache(Path(folder) / spec_key(card, margin), margin)
