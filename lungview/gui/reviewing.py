"""Reading in the main window: the review's keys (A R U M T K Delete, undo and redo), adding a
nodule where the reader points, and the workspace that keeps every edit (autosaved off the GUI
thread) and the detector's results, so that reopening a scan shows it as it was left."""

from __future__ import annotations

import numpy as np
from PySide6.QtGui import QKeySequence

from lungview.core import LungViewError
from lungview.core.findings import Detection
from lungview.gui.state import REVIEW_FLOOR_P
from lungview.review.model import USER, Finding, Review, new_id, sphere

REVIEW_KEYS = [
    ("A", "Confirm the selected finding, go to the next unreviewed"), ("R", "Reject it, go to the next"),
    ("U", "Mark it unsure"), ("M", "Cycle its malignancy label"), ("T", "Cycle its type"),
    ("K", "Add a nodule at the crosshair"), ("Shift+click", "Add a nodule there"),
    ("Delete", "Delete a nodule you added (a detector's is rejected)"),
    ("Ctrl+Z / Ctrl+Shift+Z", "Undo / redo (the Edit menu names the step)"),
]


class ReviewMixin:
    """Needs: self.state, self.panel, self.views, self.message, self.banner, self.options,
    self._action, self._go_to, self.detect_index."""

    # -- menus ---------------------------------------------------------------------------
    def _review_menus(self, bar) -> None:
        e = bar.addMenu("&Edit")
        self.undo_action = self._action(e, "Undo", self.undo, QKeySequence.StandardKey.Undo)
        self.redo_action = self._action(e, "Redo", self.redo, "Ctrl+Shift+Z")
        r = bar.addMenu("&Review")
        self._action(r, "Confirm and next (A)", lambda: self.set_status("confirmed", advance=True), "A")
        self._action(r, "Reject and next (R)", lambda: self.set_status("rejected", advance=True), "R")
        self._action(r, "Unsure (U)", lambda: self.set_status("unsure"), "U")
        self._action(r, "Next malignancy label (M)", lambda: self.cycle("malignancy"), "M")
        self._action(r, "Next type (T)", lambda: self.cycle("type"), "T")
        self._action(r, "Add nodule at the crosshair (K)", lambda: self.add_at(self.state.cursor), "K")
        self._action(r, "Delete added nodule", self.delete_selected, "Delete")
        self.state.findings_changed.connect(self._edit_names)
        self.state.review_changed.connect(self._edit_names)
        for view in self.views.values():
            view.add_requested.connect(self.add_at)
        self._edit_names()

    def _edit_names(self) -> None:
        review = self.state.review
        self.undo_action.setText(f"Undo {review.undo_name}" if review.undo_name else "Undo")
        self.redo_action.setText(f"Redo {review.redo_name}" if review.redo_name else "Redo")
        self.undo_action.setEnabled(review.undo_name is not None)
        self.redo_action.setEnabled(review.redo_name is not None)
        reviewed, total = self.state.reviewed_count()
        self.panel.set_reviewed(reviewed, total, review.scan_lung_rads())

    # -- the selected finding ------------------------------------------------------------
    def selected(self):
        rows = self.state.visible()
        return rows[self.detect_index] if 0 <= self.detect_index < len(rows) else None

    def select_id(self, fid: str | None) -> None:
        rows = self.state.visible()
        for i, row in enumerate(rows):
            if row.id == fid:
                self._go_to(i)
                return

    def _edit(self, fn) -> None:
        """Runs a review edit; a refusal is one line in the status bar, never a traceback."""
        try:
            fn()
        except (LungViewError, ValueError) as exc:
            self.message.setText(str(exc))

    def set_status(self, status: str, advance: bool = False) -> None:
        row = self.selected()
        if row is None:
            self.message.setText("select a finding first (click it, or N / P)")
            return
        self._edit(lambda: self.state.review.set_status(row.id, status))
        self.message.setText(f"{status}: {row.id[-6:]}")
        self.select_id(row.id)  # still selected (the filter may have hidden it: then nothing is)
        if advance:
            order = [self.state.visible()[i].id for i in self.panel.ordered()]
            nxt = self.state.review.next_unreviewed(row.id, order or None)
            if nxt is not None and nxt in order:
                self.select_id(nxt)
            else:
                self.message.setText(f"{status}; no unreviewed finding left")

    def cycle(self, what: str) -> None:
        row = self.selected()
        if row is None:
            self.message.setText("select a finding first (click it, or N / P)")
            return
        self._edit(lambda: self.state.review.cycle(row.id, what))
        self.select_id(row.id)

    def delete_selected(self) -> None:
        row = self.selected()
        if row is not None:
            self._edit(lambda: self.state.review.remove(row.id))

    def undo(self) -> None:
        name = self.state.review.undo()
        self.message.setText(f"undone: {name}" if name else "nothing to undo")

    def redo(self) -> None:
        name = self.state.review.redo()
        self.message.setText(f"redone: {name}" if name else "nothing to redo")

    # -- adding ----------------------------------------------------------------------------
    def add_at(self, irc) -> None:
        """A nodule where the reader points, its centre and size refined from the scan: the
        nodule mask grown there (the measurement's), if something denser than lung is within
        a few mm; else a point of unmeasured size."""
        vol = self.state.volume
        if vol is None:
            return
        from lungview.inference.measure import measure

        irc = np.asarray(irc, dtype=np.float64)
        size = measure(vol, irc)
        if size.mask is not None and size.voxels > 1:
            box, mask = size.box, size.mask
            center = np.argwhere(mask).mean(axis=0) + np.array([b.start for b in box])
            finding = Finding(id=new_id(), source=USER, center_xyz=tuple(float(v) for v in vol.irc_to_xyz(center)),
                              diameter_mm=size.diameter_mm, long_axis_mm=size.long_axis_mm,
                              short_axis_mm=size.short_axis_mm, volume_mm3=size.volume_mm3)
        else:
            finding = sphere(vol.irc_to_xyz(irc), 0.0, note="nothing denser than lung here: size not measured")
        self.state.review.add(finding)
        self.select_id(finding.id)
        self.message.setText(f"added a {finding.diameter_mm:.1f} mm nodule" if finding.diameter_mm
                             else "added a point (size not measured)")

    # -- detection results -----------------------------------------------------------------
    def merge_detections(self, detections: list[Detection]) -> dict | None:
        """New candidates join as unreviewed findings; the reader's work stays as it is. After a
        re-run, the counts of what changed (the table marks each)."""
        keep = [d for d in detections if d.p_nodule >= REVIEW_FLOOR_P]
        had = len(self.state.review) > 0
        changes: dict = {}
        matched, added = self.state.review.merge_detections(keep, changes=changes)
        self.message.setToolTip(self.message.toolTip() + f"\n{added} new finding(s), {matched} known one(s) updated")
        if had:  # a re-run (other models, say): the table marks what changed
            return self.state.set_rerun_changes(changes)
        return None

    # -- File → Import / Export ----------------------------------------------------------------
    def import_files(self, paths: list[str] | None = None) -> None:
        """LUNA16 / candidates CSV, Slicer .mrk.json or a LIDC-IDRI XML read into the scan shown."""
        vol = self.state.volume
        if vol is None:
            return
        if paths is None:
            from PySide6.QtWidgets import QFileDialog

            paths, _ = QFileDialog.getOpenFileNames(self, "Import findings", "",
                                                    "Findings (*.csv *.json *.xml);;All files (*)")
        from lungview.review.exchange import import_into

        for path in paths:
            try:
                self.message.setText(import_into(self.state.review, path, vol).summary())
            except LungViewError as exc:
                self.show_error(str(exc))

    def export_findings(self, fmt: str, path: str | None = None) -> None:
        """The formats of `lungview annotations export`, for the scan shown (SEG and SR need its
        DICOM series); the review is saved first, so the file holds what is on screen."""
        vol = self.state.volume
        if vol is None:
            return
        if self.workspace is None:
            self.show_error("export needs a workspace (this window keeps none)")
            return
        if path is None:
            from PySide6.QtWidgets import QFileDialog

            suffix = {"mrk": ".mrk.json", "seg": ".dcm", "sr": ".dcm"}.get(fmt, ".csv")
            path, _ = QFileDialog.getSaveFileName(self, f"Export {fmt}", f"findings-{fmt}{suffix}")
            if not path:
                return
        from lungview.inference.measure import mask_provider
        from lungview.review.exchange import export

        try:
            self.autosaver.flush()
            n = export(self.workspace, fmt, path, vol.series_uid, mask_provider, vol)
            self.message.setText(f"{path}: {n} finding(s) written")
        except LungViewError as exc:
            self.show_error(str(exc))

    # -- the workspace ---------------------------------------------------------------------
    def _open_workspace(self) -> None:
        self.workspace = self.autosaver = None
        if not self.options.workspace:
            return
        from lungview.review.autosave import Autosaver
        from lungview.review.workspace import Workspace

        try:
            self.workspace = Workspace(self.options.workspace)
        except LungViewError as exc:
            self.banner.add_notice(f"{exc}. Edits in this window are NOT saved.", "error")
            return
        self.autosaver = Autosaver(self.workspace, on_error=self._save_failed)

    def _save_failed(self, text: str) -> None:  # on the autosave thread: hand over to the GUI
        from PySide6.QtCore import QTimer

        QTimer.singleShot(0, self, lambda: self.banner.add_notice(text + " (retrying)", "error"))

    def _review_for(self, vol) -> tuple[Review, list[Detection], dict | None]:
        """The scan's review, stored detections and view from the workspace (new ones without)."""
        if self.workspace is None or not vol.series_uid:
            return Review(vol.series_uid), [], None
        try:
            self.workspace.add_scan(vol, vol.source)
            review = self.workspace.load_review(vol.series_uid)
            stored = self.workspace.load_detections(vol.series_uid)
            view = self.workspace.load_view(vol.series_uid)
        except LungViewError as exc:
            self.banner.add_notice(f"{exc}; this scan's review starts empty and is not saved", "error")
            return Review(vol.series_uid), [], None
        self._load_masks(vol, review)
        review.subscribe(lambda ids, uid=vol.series_uid, r=review: self._autosave(uid, r))
        dets = [Detection.from_dict(d) for d in (stored or {}).get("detections", [])]
        return review, dets, view

    def _autosave(self, uid: str, review: Review) -> None:
        if self.autosaver is not None:
            self.autosaver.schedule(uid, "review", review.to_dict())
            self._autosave_masks(uid, review)

    def save_detections(self, vol, scan_result: dict) -> None:
        if self.workspace is not None and vol.series_uid:
            try:
                self.workspace.save_detections(vol.series_uid, scan_result)
            except LungViewError as exc:
                self.banner.add_notice(str(exc), "error")

    def save_view(self) -> None:
        vol = self.state.volume
        if self.autosaver is not None and vol is not None and vol.series_uid:
            self.autosaver.schedule(vol.series_uid, "view", {
                "cursor": [int(v) for v in self.state.cursor], "window": list(self.state.window),
                "threshold": self.state.threshold, "filter": self.state.status_filter})

    def restore_view(self, view: dict | None) -> None:
        if not view or self.state.volume is None:
            return
        try:
            self.state.set_window(*view["window"])
            self.state.set_threshold(float(view["threshold"]))
            self.panel.set_threshold(self.state.threshold)
            self.state.set_cursor(view["cursor"])
        except (KeyError, TypeError, ValueError):
            pass  # a view from another version: the defaults

    def close_workspace(self) -> None:
        self.save_view()
        if self.autosaver is not None:
            if not self.autosaver.close(timeout=10.0):
                self.message.setText("some edits could not be saved")
            self.autosaver = None
        if self.workspace is not None:
            self.workspace.close()
            self.workspace = None
