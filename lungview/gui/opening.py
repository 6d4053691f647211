"""Opening scans in the main window: file and folder choosers, drag and drop, recent files,
the load job, the notices about the scan, the series picker and the offer to fill a wide gap."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QMessageBox

from lungview.gui.dialogs import SeriesDialog
from lungview.gui.state import Findings


class OpeningMixin:
    """Part of MainWindow (which provides the state, the workers, the banner and the job books)."""

    def choose_file(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open scan", str(Path.home()),
                                              "Scans (*.dcm *.mhd *.mha *.nii *.nii.gz *.nrrd *.nhdr);;All files (*)")
        if path:
            self.open_path(path)

    def choose_folder(self):
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder", str(Path.home()))
        if path:
            self.open_path(path)

    def dragEnterEvent(self, ev):  # noqa: N802
        if ev.mimeData().hasUrls():
            ev.acceptProposedAction()

    def dropEvent(self, ev):  # noqa: N802
        urls = [u.toLocalFile() for u in ev.mimeData().urls() if u.isLocalFile()]
        if urls:
            self.open_path(urls[0])

    def _fill_recent(self):
        self.recent_menu.clear()
        for path in self.settings.value("recent", [], type=list)[:10]:
            self._action(self.recent_menu, path, lambda _=False, p=path: self.open_path(p))

    def _remember(self, path: str):
        recent = [p for p in self.settings.value("recent", [], type=list) if p != path]
        self.settings.setValue("recent", [path, *recent][:10])
        self._fill_recent()

    def open_path(self, path, series: str | None = None, allow_gaps: bool | None = None):
        """Open a scan; `series` given means the reader chose it: no picker afterwards."""
        from lungview.io import open_volume

        path = str(path)
        gaps = self.options.allow_gaps if allow_gaps is None else allow_gaps
        self._opening, self._chosen_series = path, series is not None
        self.open_job(f"opening {Path(path).name}",
                      lambda progress, cancel: open_volume(path, series, progress, cancel, allow_gaps=gaps))

    def _offer_gaps(self, text: str):
        """A scan refused for a wide gap of missing slices: the reader may fill it anyway."""
        self.message.setText(text)
        if not self.options.interactive:
            return
        box = QMessageBox(QMessageBox.Warning, "LungView", text + "\n\nOpen it with the gap filled by interpolation "
                          "(the filled slices are marked)?", QMessageBox.Open | QMessageBox.Cancel, self)
        path = self._opening
        box.accepted.connect(lambda: self.open_path(path, allow_gaps=True))
        box.open()
        self.dialogs.append(box)

    def open_job(self, name: str, fn):
        """Load a volume in the background: fn(progress, cancel) -> CtVolume. Whatever runs
        (another load, a detection) is cancelled: its result would be stale."""
        self.cancel_jobs()
        self.load_job = self._submit(self.loader, "load", name, fn)
        self.message.setText(name)

    def _loaded(self, job_id, vol):
        if self._job_result(job_id, vol):  # a job of the workspace panel
            return
        self._job_over(job_id)
        if job_id != self.load_job:
            return  # a newer open superseded this one
        review, stored, view = self._review_for(vol)
        self.state.set_volume(vol, review)
        if stored:  # detected before: shown as they were saved, not run again
            self.state.set_findings(Findings(detections=stored, models={"saved": "results from the workspace"}))
        self.restore_view(view)
        if Path(vol.source).exists():
            self._remember(vol.source)
        self.setWindowTitle(f"LungView — {vol.source}")
        self.message.setText(f"{vol.shape[0]}×{vol.shape[1]}×{vol.shape[2]} voxels")
        reason = vol.not_ct_reason()
        self._show_notices(vol, reason)
        self.scan_loaded.emit(True)
        if vol.other_series and self.options.interactive and not self._chosen_series:
            self._pick_series(vol)
        if self.options.detect and reason is None and not stored:
            self.run_detection()
        elif stored:
            self.message.setText(f"{len(review)} finding(s) from the workspace; Ctrl+D runs detection again")

    def _show_notices(self, vol, reason: str | None):
        notes = list(vol.warnings)
        if reason:
            notes.insert(0, f"This volume does not look like CT: {reason}. Detection was not run; "
                         "Detect → Run detection (Ctrl+D) runs it anyway.")
        if vol.interpolated_slices:
            notes.append(f"{len(vol.interpolated_slices)} slice(s) are interpolated, not measured: marked orange "
                         "in the views")
        self.banner.show_notices(notes, "error" if reason else "warning")

    def _pick_series(self, vol):
        """The folder's series with their descriptions, slice counts and thickness."""
        dialog = SeriesDialog([vol.summary(), *vol.other_series], vol.series_uid, self)
        self.series_dialog = dialog
        dialog.accepted.connect(lambda: self._series_chosen(vol, dialog.chosen()))
        dialog.open()
        self.dialogs.append(dialog)

    def _series_chosen(self, vol, summary):
        if summary is not None and summary.series_uid != vol.series_uid:
            self.open_path(vol.source, series=summary.series_uid)
