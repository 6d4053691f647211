"""The workspace panel (a dock, Ctrl+Shift+W): every scan the workspace holds with its status
(new / detected / in review / reviewed) and counts; "Add folder…" finds every series below a
folder (headers only, on the loading worker); double-click opens a scan; "Detect all" runs the
compute worker over the scans not yet detected, one after the other, with progress and Cancel
(Esc), each result stored as `lungview detect --workspace` stores it."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lungview.core import LungViewError
from lungview.core.jobs import Cancelled
from lungview.io.itk import ITK_SUFFIXES
from lungview.gui.state import REVIEW_FLOOR_P
from lungview.gui.widgets import add_dock

COLUMNS = ("scan", "status", "findings", "reviewed", "confirmed", "masks", "path")


class WorkspacePanel(QWidget):
    open_requested = Signal(str, str)  # path, series UID
    add_folder_requested = Signal()
    detect_all_requested = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.where = QLabel("no workspace")
        self.where.setWordWrap(True)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.cellDoubleClicked.connect(self._double_clicked)
        self.add_button = QPushButton("Add folder…")
        self.detect_button = QPushButton("Detect all")
        self.detect_button.setToolTip("run detection on every scan not detected yet (Esc cancels)")
        self.add_button.clicked.connect(self.add_folder_requested)
        self.detect_button.clicked.connect(self.detect_all_requested)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.detect_button)
        buttons.addStretch(1)
        layout = QVBoxLayout(self)
        layout.addWidget(self.where)
        layout.addWidget(self.table, 1)
        layout.addLayout(buttons)
        self.rows: list[tuple[str, str]] = []  # (series UID, path) per table row

    def _double_clicked(self, row: int, _column: int) -> None:
        uid, path = self.rows[row]
        self.open_requested.emit(path, uid)

    def show_rows(self, root: str, rows: list[dict]) -> None:
        """`rows`: per scan its series_uid, path, description and the counts of `scan_counts`."""
        self.where.setText(f"{root}: {len(rows)} scan(s)")
        self.table.setRowCount(len(rows))
        self.rows = []
        for r, row in enumerate(rows):
            where = Path(row["path"])
            stem = next((where.name[:-len(x)] for x in ITK_SUFFIXES if where.name.lower().endswith(x)), where.name)
            name = f"{where.parent.name}/{stem}" + (f" — {row['description']}" if row["description"] else "")
            values = (name, row["status"], str(row["findings"]), f"{row['reviewed']} of {row['total']}",
                      str(row["confirmed"]), str(row["masks"]), row["path"])
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setToolTip(f"{row['series_uid']}\n{row['path']}")
                self.table.setItem(r, c, item)
            self.rows.append((row["series_uid"], row["path"]))


def scan_counts(workspace, review=None, series_uid: str | None = None) -> dict:
    """Status and counts of one scan (`review`: its review when already in memory)."""
    review = review if review is not None else workspace.load_review(series_uid)
    reviewed, total = review.reviewed()
    ids = {f.id for f in review.findings}
    if review.masks is not None:  # the scan shown: its masks as painted now
        masks = sum(review.masks.has(fid) for fid in ids)
    else:
        masks = len(ids & set(workspace.masked_ids(series_uid)))
    return {"status": workspace.status(series_uid, review), "findings": len(review), "reviewed": reviewed,
            "total": total, "confirmed": sum(f.status == "confirmed" for f in review.findings), "masks": masks}


class WorkspaceMixin:
    """Needs: self.workspace, self.state, self.loader, self.compute, self._submit, self.open_path,
    self.message, self.show_error, self._action, self.model_paths, self.options."""

    def _workspace_dock(self, view_menu) -> None:
        self.workspace_panel = WorkspacePanel()
        self.workspace_dock = add_dock(self, "Workspace", self.workspace_panel, Qt.LeftDockWidgetArea,
                                       "Ctrl+Shift+W", view_menu, self.refresh_workspace, 460)
        self.workspace_panel.open_requested.connect(lambda path, uid: self.open_path(path, series=uid))
        self.workspace_panel.add_folder_requested.connect(lambda: self.add_folder())
        self.workspace_panel.detect_all_requested.connect(self.detect_all)
        self.state.review_changed.connect(self._refresh_current)
        self.job_done: dict[int, object] = {}  # job id -> what to do with its result (these jobs)

    def refresh_workspace(self) -> None:
        ws = self.workspace
        if ws is None:
            self.workspace_panel.where.setText("no workspace: this window keeps nothing (--no-workspace)")
            self.workspace_panel.show_rows("", [])
            return
        current = self.state.volume.series_uid if self.state.volume is not None else None
        rows = []
        for e in ws.scans():
            try:
                counts = scan_counts(ws, self.state.review if e.series_uid == current else None, e.series_uid)
            except LungViewError as exc:
                counts = {"status": f"damaged: {exc}", "findings": 0, "reviewed": 0, "total": 0, "confirmed": 0,
                          "masks": 0}
            rows.append({"series_uid": e.series_uid, "path": e.path, "description": e.description, **counts})
        self.workspace_panel.show_rows(str(ws.root), rows)

    def _refresh_current(self) -> None:
        if self.workspace_dock.isVisible():
            self.refresh_workspace()

    # -- jobs --------------------------------------------------------------------------------
    def _job_result(self, job_id, payload) -> bool:
        """A result of a job of this panel: handled here (True), else it is the window's."""
        done = self.job_done.pop(job_id, None)
        if done is None:
            return False
        self._job_over(job_id)
        done(payload)
        return True

    def add_folder(self, folder: str | None = None) -> None:
        """Every series below a folder joins the workspace (its images stay where they are)."""
        if self.workspace is None:
            self.show_error("adding scans needs a workspace (this window keeps none)")
            return
        if folder is None:
            from PySide6.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self, "Add every scan below a folder")
            if not folder:
                return
        from lungview.io.catalog import find_scans

        job = self._submit(self.loader, "scan folder", "finding scans", lambda p, c: find_scans(folder, p, c))
        self.job_done[job] = lambda result: self._folder_found(folder, *result)

    def _folder_found(self, folder: str, found, skipped) -> None:
        for scan in found:
            self.workspace.add_scan(scan, scan.path)
        self.refresh_workspace()
        self.workspace_dock.show()
        text = f"{folder}: {len(found)} scan(s) in the workspace"
        self.message.setText(text + (f"; {len(skipped)} skipped" if skipped else ""))
        self.message.setToolTip("\n".join(skipped))

    def detect_all(self) -> None:
        """Detection over the workspace's scans that have none yet (not the one shown: Ctrl+D
        is for that one), on the compute worker; each result stored as soon as it is there."""
        ws = self.workspace
        if ws is None:
            self.show_error("detect all needs a workspace (this window keeps none)")
            return
        shown = self.state.volume.series_uid if self.state.volume is not None else None
        todo = [e for e in ws.scans() if e.series_uid != shown and ws.load_detections(e.series_uid) is None]
        if not todo:
            self.message.setText("every scan of the workspace is detected already")
            return
        paths, device, user_dir = self.model_paths(), self.options.device, not self.options.demo_models
        backend = self.backend_choice()

        def job(progress, cancel):
            from lungview.detect_io import scan_record
            from lungview.io import open_volume

            from lungview.models.registry import origin_labels

            run, info, choices = self._pipeline_on_worker(paths, device, user_dir, backend)
            demo = any(c is not None and c.origin == "demo" for c in choices.values())
            done, failed = [], []
            for k, e in enumerate(todo):
                label = f"scan {k + 1} of {len(todo)}"
                try:
                    vol = open_volume(e.path, series=e.series_uid, cancel=cancel)
                    result = run(vol, lambda d, t, m, _l=label: progress(d, t, f"{_l}: {m}"), cancel)
                    record = scan_record(e.path, vol, result, info, origin_labels(result.models, choices), demo)
                    ws.record_detection(vol, e.path, record, REVIEW_FLOOR_P)  # as the viewer merges them
                    done.append(e.series_uid)
                except Cancelled:
                    raise
                except LungViewError as exc:
                    failed.append(str(exc))
            return done, failed

        job_id = self._submit(self.compute, "detect all", "detect all", job)
        self.job_done[job_id] = self._all_detected

    def _all_detected(self, result) -> None:
        done, failed = result
        self.refresh_workspace()
        self.message.setText(f"detect all: {len(done)} scan(s) detected"
                             + (f", {len(failed)} failed (see the tooltip)" if failed else ""))
        self.message.setToolTip("\n".join(failed))
