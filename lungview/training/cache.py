"""A crop cache on disk for training at scale: the classifier crops of every example, cut once by
inference's own function from the scan as the model sees it, then read by index.

Layout: one folder per input spec (crop size, HU clip, slice spacing range, margin; its hash is the
folder's name), in it one `<series UID>-<digest>.npy` per scan: (N, D + 2m, H + 2m, W + 2m) int16
HU (the card's clip fits int16), its N examples in order, m voxels of margin for whole-voxel
shifts; the digest is of those examples' centres, so a changed example list is a new file. Each
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

CACHE_VERSION = 1


def spec_key(card, margin: int) -> str:
    """The input spec the crops depend on, as a short hash (the cache folder's name)."""
    spec = {"version": CACHE_VERSION, "crop": list(card.crop), "hu_clip": list(card.hu_clip),
            "slice_spacing_mm": list(card.slice_spacing_mm), "margin": int(margin)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _digest(examples: list[Example]) -> str:
    centres = np.array([e.center_xyz for e in examples], dtype=np.float64)
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
        self.root.mkdir(parents=True, exist_ok=True)
        files = {u: self.file_for(u, ex) for u, ex in examples.items()}
        todo = [u for u, f in files.items() if not f.exists()]
        done = len(examples) - len(todo)
        progress(done, len(examples), f"crop cache: {done} of {len(examples)} scans there")
        workers = workers or max(1, os.cpu_count() or 1)
        if todo:
            jobs = [(u, str(path_of(u)), [e.center_xyz for e in examples[u]], card, self.margin, files[u])
                    for u in todo]
            pending = list(reversed(jobs))
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
                # at most one scan per worker in flight: a cancel leaves no queue of scans to finish
                running = {pool.submit(_cut_scan, pending.pop()) for _ in range(min(workers, len(jobs)))}
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        uid, _ = fut.result()
                        done += 1
                        progress(done, len(examples), f"crop cache: {uid}")
                    if cancel is not None and cancel.is_set():
                        wait(running)  # (their files are whole: each is renamed into place when done)
                        cancel.check()
                    while pending and len(running) < workers:
                        running.add(pool.submit(_cut_scan, pending.pop()))
        return {"scans": len(examples), "cut": len(todo), "kept": len(examples) - len(todo),
                "crops": sum(len(ex) for ex in examples.values()),
                "bytes": sum(f.stat().st_size for f in files.values())}

    def store(self, examples: list[Example], margin: int = 0) -> CropStore:
        """The crops of `examples` (grouped by scan in their order, as built), `margin` voxels
        around the card's crop."""
        by_scan: dict[str, list[Example]] = {}
        for e in examples:
            by_scan.setdefault(e.scan, []).append(e)
        files, counts, ordered = [], [], []
        for uid, ex in by_scan.items():
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


def crop_cache(folder: str | os.PathLike, card, margin: int) -> CropCache:
    """The cache for `card`'s input spec under `folder`."""
    return CropCache(Path(folder) / spec_key(card, margin), margin)
