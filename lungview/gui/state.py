"""The viewer's model: what is shown, where the cursor is, how it is windowed. Plain Python
(napari's layer idea): widgets subscribe to its events; it knows nothing of Qt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lungview.core import CtVolume
from lungview.core.findings import Detection, size_category
from lungview.review.masks import Masks
from lungview.review.model import DETECTOR, Finding, Review

PLANES = ("axial", "coronal", "sagittal")
FILTERS = ("all", "unreviewed", "confirmed", "rejected", "unsure")
REVIEW_FLOOR_P = 0.0  # detections down to this join the review (the slider shows those above it)
PRESETS = {"lung": (-600.0, 1500.0), "mediastinum": (40.0, 400.0), "bone": (400.0, 1800.0)}


class Event:
    def __init__(self) -> None:
        self._callbacks: list[Callable] = []

    def connect(self, callback: Callable) -> None:
        self._callbacks.append(callback)

    def emit(self, *args) -> None:
        for cb in list(self._callbacks):
            cb(*args)


@dataclass
class Findings:
    detections: list[Detection] = field(default_factory=list)
    prob: np.ndarray | None = None  # uint8 segmentation probabilities * 255
    lung_small: np.ndarray | None = None  # bool, reduced in-plane
    lung_step: int = 1
    models: dict = field(default_factory=dict)
    device: str = ""
    demo_on_real_scan: bool = False


@dataclass(frozen=True)
class Row:
    """A finding as the views draw it: its voxel position in the scan shown, and the detector's
    names for its numbers (p_nodule, size_category, notes)."""

    finding: Finding
    center_irc: tuple[float, float, float]

    def __getattr__(self, name):
        return getattr(self.finding, name)

    @property
    def size_category(self) -> str:
        return size_category(self.finding.mean_diameter_mm) if self.finding.long_axis_mm > 0 else "not measured"

    @property
    def notes(self) -> tuple[str, ...]:
        return self.finding.detector_notes

    @property
    def size_source(self) -> str:
        return "scan"


class ViewerState:
    def __init__(self) -> None:
        self.volume: CtVolume | None = None
        self.cursor = np.zeros(3, dtype=int)  # (index, row, col)
        self.window = PRESETS["lung"]
        self.findings = Findings()
        self.review = Review()
        self.status_filter = "all"
        self.threshold = 0.5
        self.seg_visible = False
        self.seg_opacity = 0.4
        self.crosshair_visible = True
        self.ruler_mode = False  # left drag in a slice view measures a distance in mm
        self.paint_mode: str | None = None  # "brush" or "eraser": left drag paints the selected finding's mask
        self.brush_mm = 3.0  # the brush's radius
        self.paint_hu: tuple[float, float] | None = None  # paint only voxels in this HU range
        self.masks_visible = True
        self.masks_changed = Event()  # voxels of a mask changed (a stroke in progress, undo, a fill)
        self.rerun: dict[str, str] = {}  # after a re-run of detection: finding id -> what changed
        self.volume_changed = Event()
        self.cursor_changed = Event()
        self.window_changed = Event()
        self.findings_changed = Event()  # new results (image overlay too) or what is shown changed
        self.review_changed = Event()  # an edit of the review: markers and table only
        self._visible: tuple[tuple, list] | None = None  # (key, rows): visible() once per change
        self._edits = 0
        self.overlay_changed = Event()
        self.display_changed = Event()  # crosshair, ruler mode

    # -- volume and cursor -------------------------------------------------------------
    def set_volume(self, vol: CtVolume, review: Review | None = None) -> None:
        self.volume = vol
        self.rerun = {}
        self.findings = Findings()
        review = review if review is not None else Review(vol.series_uid)  # (an empty one is falsy)
        if review.masks is None:
            review.masks = Masks(vol)
        self._bind(review)
        self.cursor = np.array(vol.shape) // 2
        self.volume_changed.emit()
        self.findings_changed.emit()
        self.cursor_changed.emit()

    def set_cursor(self, irc) -> None:
        if self.volume is None:
            return
        c = np.clip(np.rint(np.asarray(irc, float)).astype(int), 0, np.array(self.volume.shape) - 1)
        if not np.array_equal(c, self.cursor):
            self.cursor = c
            self.cursor_changed.emit()

    def step(self, plane: str, delta: int) -> None:
        axis = PLANES.index(plane)
        c = self.cursor.copy()
        c[axis] += delta
        self.set_cursor(c)

    def set_window(self, center: float, width: float) -> None:
        self.window = (float(center), max(1.0, float(width)))
        self.window_changed.emit()

    # -- findings ----------------------------------------------------------------------
    def set_findings(self, findings: Findings) -> None:
        self.findings = findings
        self.findings_changed.emit()

    def set_threshold(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.findings_changed.emit()

    def set_filter(self, name: str) -> None:
        self.status_filter = name
        self.findings_changed.emit()

    def _bind(self, review: Review) -> None:
        self.review = review
        review.subscribe(self._edited)

    def _edited(self, ids) -> None:
        self._edits += 1
        self.review_changed.emit()

    def set_rerun_changes(self, changes: dict, moved_by: float = 0.2) -> dict[str, int]:
        """What a re-run of detection changed, for the table: new findings, the detector's findings
        it no longer reports ("gone"), and p_nodule moved by more than `moved_by` ("up"/"down").
        Returns the counts."""
        out = {fid: "new" for fid in changes.get("added", [])}
        out.update({fid: "gone" for fid in changes.get("gone", [])})
        for fid, (old, new) in changes.get("matched", {}).items():
            if old is not None and new is not None and abs(new - old) > moved_by:
                out[fid] = "up" if new > old else "down"
        self.rerun = out
        self.findings_changed.emit()  # (the table rewrites every row)
        return {k: sum(v == k for v in out.values()) for k in ("new", "gone", "up", "down")}

    def below_threshold(self, f: Finding) -> bool:
        """An unreviewed detector finding under the slider: hidden (reviewed and added ones never are)."""
        return f.source == DETECTOR and f.status == "unreviewed" and (f.p_nodule or 0.0) < self.threshold

    def shown(self, f: Finding) -> bool:
        """Not below the threshold, and passing the filter."""
        return not self.below_threshold(f) and (self.status_filter == "all" or f.status == self.status_filter)

    def visible(self) -> list[Row]:
        if self.volume is None:
            return []
        key = (id(self.volume), id(self.review), self._edits, self.threshold, self.status_filter)
        if self._visible is None or self._visible[0] != key:
            rows = [Row(f, tuple(float(v) for v in self.volume.xyz_to_irc(np.asarray(f.center_xyz))))
                    for f in self.review.findings if self.shown(f)]
            self._visible = (key, rows)
        return list(self._visible[1])

    def reviewed_count(self) -> tuple[int, int]:
        """(reviewed, total) over the findings above the threshold or reviewed, whatever the filter."""
        keep = [f for f in self.review.findings if not self.below_threshold(f)]
        return sum(f.status != "unreviewed" for f in keep), len(keep)

    def set_overlay(self, visible: bool | None = None, opacity: float | None = None) -> None:
        if visible is not None:
            self.seg_visible = bool(visible)
        if opacity is not None:
            self.seg_opacity = float(np.clip(opacity, 0.0, 1.0))
        self.overlay_changed.emit()

    def set_display(self, crosshair: bool | None = None, ruler: bool | None = None, paint: str | None = "",
                    brush_mm: float | None = None, masks: bool | None = None) -> None:
        """`paint`: "brush", "eraser" or None (off); the ruler and painting exclude each other."""
        if crosshair is not None:
            self.crosshair_visible = bool(crosshair)
        if ruler is not None:
            self.ruler_mode = bool(ruler)
            if ruler:
                self.paint_mode = None
        if paint != "":
            assert paint in (None, "brush", "eraser")
            self.paint_mode = paint
            if paint:
                self.ruler_mode = False
        if brush_mm is not None:
            self.brush_mm = float(np.clip(brush_mm, 0.5, 30.0))
        if masks is not None:
            self.masks_visible = bool(masks)
            self.masks_changed.emit()
        self.display_changed.emit()

    # -- geometry of the planes --------------------------------------------------------
    def plane_image(self, plane: str) -> np.ndarray:
        """The 2D HU image of a plane through the cursor, rows top to bottom as displayed:
        axial (row, col); coronal and sagittal with the head up."""
        hu = self.volume.hu
        i, r, c = self.cursor
        if plane == "axial":
            return hu[i]
        if plane == "coronal":
            return hu[::-1, r, :]
        return hu[::-1, :, c]

    def plane_overlay(self, plane: str) -> np.ndarray | None:
        prob = self.findings.prob
        if prob is None:
            return None
        i, r, c = self.cursor
        return prob[i] if plane == "axial" else prob[::-1, r, :] if plane == "coronal" else prob[::-1, :, c]

    def plane_masks(self, plane: str) -> np.ndarray | None:
        """The mask labels of a plane through the cursor, as plane_image lays it out."""
        masks = self.review.masks
        if masks is None or masks.labels is None:
            return None
        labels = masks.labels
        i, r, c = self.cursor
        return labels[i] if plane == "axial" else labels[::-1, r, :] if plane == "coronal" else labels[::-1, :, c]

    def plane_spacing(self, plane: str) -> tuple[float, float]:
        """(mm per displayed row, mm per displayed column)."""
        sx, sy, sz = self.volume.spacing_xyz
        return {"axial": (sy, sx), "coronal": (sz, sx), "sagittal": (sz, sy)}[plane]

    def to_plane(self, plane: str, irc) -> tuple[float, float]:
        """Voxel (index, row, col) -> displayed (row, col) in the plane's image."""
        i, r, c = irc
        top = self.volume.shape[0] - 1
        return {"axial": (r, c), "coronal": (top - i, c), "sagittal": (top - i, r)}[plane]

    def from_plane(self, plane: str, row: float, col: float):
        """Displayed (row, col) in a plane -> voxel (index, row, col) at the cursor's depth."""
        i, r, c = self.cursor
        top = self.volume.shape[0] - 1
        return {"axial": (i, row, col), "coronal": (top - row, r, col), "sagittal": (top - row, col, c)}[plane]

    def depth_mm(self, plane: str, irc) -> float:
        """Distance in mm from a voxel position to the plane through the cursor."""
        axis = PLANES.index(plane)
        return abs(float(irc[axis]) - float(self.cursor[axis])) * self.volume.spacing_irc[axis]

    def hu_at_cursor(self) -> int:
        return int(self.volume.hu[tuple(self.cursor)])
