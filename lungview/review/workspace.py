"""The workspace: a folder that keeps, per scan, the detector's results and the reader's review,
never inside the scan's folder and never copying its images.

    DIR/workspace.json          {"version": 1}
    DIR/.lock                   held (flock) by the one LungView that writes here
    DIR/scans/<key>/scan.json   where the scan is, its UID, description, shape and spacing
    DIR/scans/<key>/detections.json   the last detection run, as `lungview detect --json` gives it
    DIR/scans/<key>/review.json       the findings and the reader's decisions
    DIR/scans/<key>/view.json         where the reader was (slices, window)
    DIR/scans/<key>/masks.npz         the reader's nodule masks (see review.masks)

The key is the SeriesInstanceUID (LungView gives files without one a stable UID from their
content). Every file carries a version and is replaced atomically (temporary file, fsync,
rename): a crash leaves either the old or the new file, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic
from lungview.core.findings import Detection
from lungview.review.model import Review

VERSION = 1
STATUSES = ("new", "detected", "in review", "reviewed")


def default_dir() -> Path:
    """The user data directory's workspace ($XDG_DATA_HOME/lungview/workspace)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "lungview" / "workspace"


def scan_key(series_uid: str) -> str:
    if not series_uid or not re.fullmatch(r"[0-9A-Za-z._-]{1,128}", series_uid) or series_uid in (".", ".."):
        raise LungViewError(f"series UID {series_uid!r} cannot name a workspace entry")
    return series_uid


@dataclass(frozen=True)
class ScanEntry:
    series_uid: str
    path: str
    description: str = ""
    shape: tuple[int, int, int] | None = None
    spacing_xyz: tuple[float, float, float] | None = None
    added: float = 0.0


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungViewError(f"{path}: not a LungView workspace file ({exc})") from None
    if not isinstance(data, dict):
        raise LungViewError(f"{path}: not a LungView workspace file")
    version = data.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise LungViewError(f"{path}: workspace version {version!r}; this LungView reads up to {VERSION}")
    return data


def _write_json(path: Path, data: dict) -> None:
    try:
        write_text_atomic(path, json.dumps({"version": VERSION, **data}, indent=1) + "\n")
    except OSError as exc:
        raise LungViewError(f"{path}: cannot write ({exc.strerror})") from None


class Workspace:
    """One workspace folder. `writable=True` takes its lock: a second writer gets a clear error
    instead of interleaving its saves with the first one's."""

    def __init__(self, root: str | os.PathLike | None = None, writable: bool = True):
        self.root = Path(root) if root is not None else default_dir()
        self.writable = writable
        self._lock_fh = None
        marker = self.root / "workspace.json"
        if marker.exists():
            _read_json(marker)
        elif not writable:
            raise LungViewError(f"{self.root}: not a LungView workspace (no workspace.json)")
        if writable:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LungViewError(f"{self.root}: cannot create the workspace ({exc.strerror})") from None
            self._lock()
            if not marker.exists():
                _write_json(marker, {"created": time.time()})
            for stale in self.root.glob("scans/*/.*.tmp"):  # left by a writer killed mid-save
                stale.unlink(missing_ok=True)

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = self.root / ".lock"
        try:
            fh = open(path, "a+", encoding="utf-8")
        except OSError as exc:
            raise LungViewError(f"{self.root}: cannot write the workspace ({exc.strerror})") from None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LungViewError(f"{self.root}: workspace in use by another LungView ({holder}); "
                                "close it or choose another --workspace") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}")
        fh.flush()
        self._lock_fh = fh

    def close(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()  # closing releases the flock
            self._lock_fh = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _need_writable(self) -> None:
        if not self.writable:
            raise LungViewError(f"{self.root}: opened read-only")

    # -- training splits ----------------------------------------------------------------------
    def splits(self) -> dict[str, str]:
        """{series UID: "train" or "validation"}: each scan's side, fixed the first time a model
        was trained from the workspace (it never changes side afterwards)."""
        return dict(_read_json(self.root / "workspace.json").get("splits", {}))

    def set_splits(self, splits: dict[str, str]) -> None:
        self._need_writable()
        if any(v not in ("train", "validation") for v in splits.values()):
            raise LungViewError("a scan's side is train or validation")
        marker = self.root / "workspace.json"
        data = _read_json(marker)
        data.pop("version", None)
        data["splits"] = {**data.get("splits", {}), **splits}
        _write_json(marker, data)

    # -- scans -----------------------------------------------------------------------------
    def folder(self, series_uid: str) -> Path:
        return self.root / "scans" / scan_key(series_uid)

    def scans(self) -> list[ScanEntry]:
        base = self.root / "scans"
        if not base.is_dir():
            return []
        out = []
        for d in sorted(base.iterdir()):
            if (d / "scan.json").is_file():
                out.append(self.entry(d.name))
        return sorted(out, key=lambda e: (e.added, e.series_uid))

    def entry(self, series_uid: str) -> ScanEntry:
        path = self.folder(series_uid) / "scan.json"
        if not path.is_file():
            raise LungViewError(f"{self.root}: no scan {series_uid} in this workspace")
        d = _read_json(path)
        return ScanEntry(series_uid=d["series_uid"], path=d["path"], description=d.get("description", ""),
                         shape=tuple(d["shape"]) if d.get("shape") else None,
                         spacing_xyz=tuple(d["spacing_xyz"]) if d.get("spacing_xyz") else None,
                         added=float(d.get("added", 0.0)))

    def has(self, series_uid: str) -> bool:
        return (self.folder(series_uid) / "scan.json").is_file()

    def add_scan(self, vol, path: str | os.PathLike) -> ScanEntry:
        """Records a scan (a CtVolume read from `path`); its place on disk is updated if it moved."""
        self._need_writable()
        old = self.entry(vol.series_uid) if self.has(vol.series_uid) else None
        entry = ScanEntry(series_uid=vol.series_uid, path=str(Path(path).resolve()),
                          description=getattr(vol, "series_description", ""), shape=tuple(vol.shape),
                          spacing_xyz=tuple(vol.spacing_xyz), added=old.added if old else time.time())
        if entry != old:
            _write_json(self.folder(vol.series_uid) / "scan.json",
                        {"series_uid": entry.series_uid, "path": entry.path, "description": entry.description,
                         "shape": list(entry.shape), "spacing_xyz": list(entry.spacing_xyz), "added": entry.added})
        return entry

    def status(self, series_uid: str, review: Review | None = None) -> str:
        """new / detected / in review / reviewed (`review`: the scan's, when already loaded)."""
        reviewed, total = (review if review is not None else self.load_review(series_uid)).reviewed()
        if total and reviewed == total:
            return "reviewed"
        if reviewed:
            return "in review"
        if (self.folder(series_uid) / "detections.json").is_file():
            return "detected"
        return "new"

    # -- detections, review, view ------------------------------------------------------------
    def _save(self, series_uid: str, name: str, key: str, value) -> None:
        self._need_writable()
        _write_json(self.folder(series_uid) / name, {key: value})

    def _load(self, series_uid: str, name: str, key: str):
        path = self.folder(series_uid) / name
        return _read_json(path)[key] if path.is_file() else None

    def save_detections(self, series_uid: str, scan_result: dict) -> None:
        """The detector's results for one scan (an entry of `lungview detect --json`'s "scans")."""
        self._save(series_uid, "detections.json", "scan", scan_result)

    def load_detections(self, series_uid: str) -> dict | None:
        return self._load(series_uid, "detections.json", "scan")

    def save_review(self, series_uid: str, review: Review | dict) -> None:
        self._save(series_uid, "review.json", "review", review.to_dict() if isinstance(review, Review) else review)

    def load_review(self, series_uid: str) -> Review:
        path = self.folder(series_uid) / "review.json"
        if not path.is_file():
            return Review(series_uid)
        try:
            return Review.from_dict(_read_json(path)["review"])
        except (KeyError, TypeError, ValueError) as exc:
            raise LungViewError(f"{path}: damaged review ({exc})") from None

    def save_masks(self, series_uid: str, masks) -> None:
        """`masks`: a Masks, or the snapshot one took (Masks.snapshot)."""
        from lungview.review.masks import Masks

        self._need_writable()
        path = self.folder(series_uid) / "masks.npz"
        try:
            Masks.write(path, masks.snapshot() if isinstance(masks, Masks) else masks)
        except OSError as exc:
            raise LungViewError(f"{path}: cannot write ({exc.strerror})") from None

    def load_masks(self, series_uid: str, vol):
        """The scan's masks (`vol`: the scan, for its shape and geometry); empty ones without."""
        from lungview.review.masks import Masks

        path = self.folder(series_uid) / "masks.npz"
        return Masks.load(path, vol) if path.is_file() else Masks(vol)

    def masked_ids(self, series_uid: str) -> list[str]:
        """The findings of a scan that have a saved mask, read from the masks' index (no voxels)."""
        from lungview.review.masks import Masks

        path = self.folder(series_uid) / "masks.npz"
        return Masks.ids_in(path) if path.is_file() else []

    def save_view(self, series_uid: str, view: dict) -> None:
        self._save(series_uid, "view.json", "view", view)

    def load_view(self, series_uid: str) -> dict | None:
        return self._load(series_uid, "view.json", "view")

    def record_detection(self, vol, path, scan_result: dict, threshold: float) -> tuple[int, int]:
        """What `detect --workspace` and the viewer do with a detection run: the scan recorded,
        its results saved, the detections at or above `threshold` merged into the review as
        unreviewed findings (the reader's decisions untouched). Returns (matched, added)."""
        self.add_scan(vol, path)
        self.save_detections(vol.series_uid, scan_result)
        review = self.load_review(vol.series_uid)
        dets = [Detection.from_dict(d) for d in scan_result["detections"] if d["p_nodule"] >= threshold]
        counts = review.merge_detections(dets)
        self.save_review(vol.series_uid, review)
        return counts
