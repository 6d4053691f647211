"""The main window: notices above four views (axial, coronal, sagittal, 3D), the detections
panel, menus, a status bar with HU / xyz / irc under the cursor, window/level boxes, progress
with Cancel and the device badge. Jobs run on two workers (loading, compute); every job is
tracked until it ends, whether its result is used or dropped as stale."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from PySide6.QtCore import QSettings, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QDialog, QGridLayout, QLabel, QMainWindow, QMessageBox, QProgressBar,
                               QPushButton, QSplitter, QVBoxLayout, QWidget)

from lungview.core.findings import DEFAULT_THRESHOLD
from lungview.gui.dialogs import ROLES, ModelsDialog
from lungview.gui.opening import OpeningMixin
from lungview.gui.painting import MASK_KEYS, PaintMixin
from lungview.gui.panels import DetectionsPanel
from lungview.gui.reviewing import REVIEW_KEYS, ReviewMixin
from lungview.gui.slice_view import SliceView
from lungview.gui.state import PLANES, PRESETS, Findings, ViewerState
from lungview.gui.training_panel import TrainingMixin
from lungview.gui.widgets import Banner, WindowLevelBox
from lungview.gui.worker import Worker
from lungview.gui.workspace_panel import WorkspaceMixin
from lungview.detect_io import scan_record
from lungview.models.registry import origin_labels
from lungview.synthetic.phantom import is_phantom_uid

SHORTCUTS = [
    ("Ctrl+O", "Open a scan file"), ("Ctrl+Shift+O", "Open a DICOM folder"),
    ("Up / Down, wheel", "Next / previous slice in the view under the mouse (axial with keys)"),
    ("Page Up / Page Down", "Ten slices"), ("Ctrl+wheel", "Zoom"), ("Home", "Reset the zoom of every view"),
    ("Left drag", "Pan (ruler on: measure)"), ("Right drag", "Window / level (or type it in the status bar)"),
    ("1 / 2 / 3", "Lung / mediastinum / bone window"), ("C", "Crosshair on / off"), ("L", "Ruler on / off"),
    ("N / P", "Next / previous detection, in the table's order"), ("S", "Segmentation overlay on / off"),
    ("F, double-click", "Maximise the axial (or the double-clicked) view / back to four views"),
    ("Ctrl+D", "Run detection"), ("Esc", "Cancel the running jobs"), ("F1", "This list"),
    ("Ctrl+Shift+W", "Workspace panel: scans, add a folder, detect all"),
    ("Ctrl+T", "Training panel: fine-tune on the reviews, model versions"),
    *REVIEW_KEYS, *MASK_KEYS,
]


@dataclass
class Options:
    seg_model: str | None = None
    cls_model: str | None = None
    mal_model: str | None = None
    device: str = "auto"
    backend: str | None = None  # auto, torch, onnxruntime, openvino; None: the one saved in Models…, else auto
    detect: bool = True
    interactive: bool = True  # dialogs (series picker, errors); off for --screenshot and tests
    demo_models: bool = False  # --demo: the shipped demo models, whatever the user directory holds
    view3d: bool = True  # needs an OpenGL context (xcb); tests on the offscreen platform turn it off
    allow_gaps: bool = False  # fill runs of more than two missing slices instead of refusing
    workspace: str | None = None  # keeps the reviews and detections; None: nothing is kept (tests)


class MainWindow(TrainingMixin, WorkspaceMixin, PaintMixin, ReviewMixin, OpeningMixin, QMainWindow):
    detection_done = Signal(bool)  # finished (True) or failed/cancelled (False)
    scan_loaded = Signal(bool)

    def __init__(self, options: Options | None = None, settings: QSettings | None = None):
        super().__init__()
        self.options = options or Options()
        self.settings = settings or QSettings("LungView", "LungView")
        self.state = ViewerState()
        self.setWindowTitle("LungView")
        self.resize(1400, 900)
        self.setAcceptDrops(True)
        self.views = {plane: SliceView(self.state, plane) for plane in PLANES}
        from lungview.gui.view3d import make_3d_view, placeholder

        self.view3d = make_3d_view(self.state) if self.options.view3d else placeholder("3D view off")
        self.banner = Banner()
        self.panel = DetectionsPanel(self.state)
        self.setCentralWidget(self._layout())
        self._status_bar()
        self._menus()
        self._open_workspace()
        self.loader, self.compute = Worker(self), Worker(self)
        for w in (self.loader, self.compute):
            w.job_progress.connect(self._progress)
            w.job_failed.connect(self._failed)
            w.job_cancelled.connect(self._cancelled)
            w.start()
        self.loader.job_finished.connect(self._loaded)
        self.compute.job_finished.connect(self._detected)
        self.jobs: dict[int, str] = {}  # every job submitted and not yet ended: id -> "load" / "detect"
        self.load_job = self.detect_job = None
        self.working_threshold = DEFAULT_THRESHOLD  # the nodule classifier's of the last detection
        self.pipeline_runs = 0  # detections that computed (not cancelled before starting)
        self._step_started: tuple[str, float, int] | None = None
        self.model_cache = None  # created on the compute thread by the first detection
        self.detect_index = -1
        self.dialogs: list[QDialog] = []
        self._opening, self._chosen_series = "", False
        self.state.cursor_changed.connect(self._cursor_status)
        self.state.findings_changed.connect(self._count_status)
        for view in self.views.values():
            view.hovered.connect(self._hover_status)
            view.maximise.connect(lambda v=view: self.toggle_maximised(v))
            view.measured.connect(lambda mm: self.message.setText(f"ruler: {mm:.1f} mm"))
        self.panel.navigate.connect(lambda i: self._go_to(i, select=False))
        self.state.cursor_changed.connect(self.save_view)
        self._update_device_badge()

    # -- chrome ------------------------------------------------------------------------
    def _layout(self) -> QWidget:
        grid_widget = QWidget()
        self.grid = QGridLayout(grid_widget)
        self.grid.setSpacing(2)
        self.grid.setContentsMargins(0, 0, 0, 0)
        for w, (r, c) in zip([*self.views.values(), self.view3d], [(0, 0), (0, 1), (1, 0), (1, 1)]):
            self.grid.addWidget(w, r, c)
        for k in (0, 1):  # four equal quarters, also after a view was maximised and restored
            self.grid.setRowStretch(k, 1)
            self.grid.setColumnStretch(k, 1)
        left = QWidget()
        column = QVBoxLayout(left)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(2)
        column.addWidget(self.banner)
        column.addWidget(grid_widget, 1)
        split = QSplitter()
        split.addWidget(left)
        split.addWidget(self.panel)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setSizes([930, 470])
        return split

    def _status_bar(self):
        bar = self.statusBar()
        self.position = QLabel("no scan")
        self.position.setMinimumWidth(self.position.fontMetrics().horizontalAdvance(
            "HU -1000   xyz (-000.0, -000.0, -000.0) mm   irc (000, 000, 000)") + 12)
        self.message = QLabel("")
        self.message.setMinimumWidth(80)
        self.count = QLabel("")
        self.window_level = WindowLevelBox(self.state)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.hide()
        self.cancel_button.clicked.connect(self.cancel_jobs)
        self.badge = QLabel("")
        bar.addWidget(self.position)
        bar.addWidget(self.message, 1)
        for w in (self.count, self.window_level, self.progress, self.cancel_button, self.badge):
            bar.addPermanentWidget(w)

    def _action(self, menu, text, slot, shortcut=None, checkable=False, checked=False):
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if checkable:
            act.setCheckable(True)
            act.setChecked(checked)
            act.toggled.connect(slot)
        else:
            act.triggered.connect(slot)
        menu.addAction(act)
        self.addAction(act)
        return act

    def _menus(self):
        m = self.menuBar()
        f = m.addMenu("&File")
        self._action(f, "Open file…", self.choose_file, "Ctrl+O")
        self._action(f, "Open folder…", self.choose_folder, "Ctrl+Shift+O")
        self.recent_menu = f.addMenu("Recent")
        self._fill_recent()
        f.addSeparator()
        self._action(f, "Import findings…", lambda: self.import_files())
        export = f.addMenu("Export findings")
        for fmt, label in (("luna16", "LUNA16 annotations.csv…"), ("candidates", "the book's candidates.csv…"),
                           ("mrk", "Slicer markups (.mrk.json)…"), ("seg", "DICOM SEG…"), ("sr", "DICOM SR (TID 1500)…"),
                           ("csv", "every field (.csv)…")):
            self._action(export, label, lambda _=False, f=fmt: self.export_findings(f))
        f.addSeparator()
        self._action(f, "Quit", self.close, "Ctrl+Q")
        v = m.addMenu("&View")
        for key, name in zip("123", PRESETS):
            self._action(v, f"{name.title()} window", lambda _=False, n=name: self.state.set_window(*PRESETS[n]), key)
        self._action(v, "Reset zoom", self.reset_zoom, "Home")
        self.crosshair_action = self._action(v, "Crosshair", lambda on: self.state.set_display(crosshair=on), "C",
                                             checkable=True, checked=True)
        self.ruler_action = self._action(v, "Ruler (left drag measures in mm)",
                                         lambda on: self.state.set_display(ruler=on), "L", checkable=True)
        self._action(v, "Segmentation overlay", lambda: self.state.set_overlay(visible=not self.state.seg_visible), "S")
        self._action(v, "Maximise axial view (double-click maximises any view)", lambda: self.toggle_maximised(), "F")
        self._action(v, "Next slice", lambda: self.state.step("axial", 1), "Up")
        self._action(v, "Previous slice", lambda: self.state.step("axial", -1), "Down")
        self._action(v, "Ten slices up", lambda: self.state.step("axial", 10), "PgUp")
        self._action(v, "Ten slices down", lambda: self.state.step("axial", -10), "PgDown")
        self._workspace_dock(v)
        self._training_dock(v)
        self._review_menus(m)
        self._mask_menu(m)
        d = m.addMenu("&Detect")
        self._action(d, "Run detection", self.run_detection, "Ctrl+D")
        self._action(d, "Next detection", lambda: self.step_detection(1), "N")
        self._action(d, "Previous detection", lambda: self.step_detection(-1), "P")
        self._action(d, "Models…", self.choose_models)
        self._action(d, "Cancel", self.cancel_jobs, "Esc")
        h = m.addMenu("&Help")
        self._action(h, "Keyboard shortcuts", self.show_help, "F1")

    def show_help(self):
        text = "\n".join(f"{k:24} {v}" for k, v in SHORTCUTS)
        box = QMessageBox(QMessageBox.Information, "LungView shortcuts", text, parent=self)
        box.setStyleSheet("QLabel { font-family: monospace; }")
        box.open()
        self.help_box = box

    def reset_zoom(self):
        for view in self.views.values():
            view.reset_zoom()

    def toggle_maximised(self, view=None):
        """Show `view` (default: the axial one) alone, or all four views again."""
        view = view or self.views["axial"]
        others = [w for w in (*self.views.values(), self.view3d) if w is not view]
        alone = any(w.isVisible() for w in others)
        for w in others:
            w.setVisible(not alone)
        view.setVisible(True)

    def _update_device_badge(self):
        from lungview.inference.backends import describe, resolve_backend
        from lungview.inference.device import resolve_device

        try:
            info = resolve_device(self.options.device)
            runtime = describe(resolve_backend(self.backend_choice(), info))
        except Exception as exc:  # noqa: BLE001
            self.badge.setText(f"device error: {exc}")
            return
        if info.is_cpu:
            self.badge.setText(f"⚠ {info.name} · {runtime}")
            self.badge.setToolTip(f"No GPU: detection runs on the CPU (slower), the networks in {runtime} "
                                  "(Detect → Models… chooses)")
            self.badge.setStyleSheet("color: #ffb000; font-weight: bold;")
        else:
            self.badge.setText(f"GPU: {info.name} · {runtime}")
            self.badge.setToolTip(f"Detection runs on this GPU, the networks in {runtime}")
            self.badge.setStyleSheet("color: #60d060; font-weight: bold;")

    # -- status ------------------------------------------------------------------------
    def _describe(self, irc) -> str:
        vol = self.state.volume
        xyz = vol.irc_to_xyz(np.asarray(irc, float))
        hu = int(vol.hu[tuple(irc)])
        return (f"HU {hu:5d}   xyz ({xyz[0]:.1f}, {xyz[1]:.1f}, {xyz[2]:.1f}) mm   "
                f"irc ({irc[0]}, {irc[1]}, {irc[2]})")

    def _cursor_status(self):
        if self.state.volume is not None:
            self.position.setText(self._describe(self.state.cursor))

    def _hover_status(self, irc):
        if irc is not None and self.state.volume is not None:
            self.position.setText(self._describe(irc))

    def _count_status(self):
        f = self.state.findings
        if not f.detections:
            self.count.setText("")
            return
        above = sum(d.p_nodule >= self.state.threshold for d in f.detections)
        self.count.setText(f"{above} of {len(f.detections)} candidates at p ≥ {self.state.threshold:.2f}")

    def _progress(self, job_id, done, total, message):
        if job_id not in self.jobs:
            return
        step = message.split(":")[0]
        now = time.monotonic()
        if self._step_started is None or self._step_started[0] != step:
            self._step_started = (step, now, done)
        eta = ""
        _, t0, d0 = self._step_started
        if total and done > d0 and now - t0 > 0.5:
            left = (now - t0) / (done - d0) * (total - done)
            eta = f" — about {left:.0f} s left" if left >= 1 else ""
        self.progress.show()
        self.cancel_button.show()
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.message.setText(f"{message} {done}/{total}{eta}")

    # -- jobs --------------------------------------------------------------------------
    def _submit(self, worker: Worker, kind: str, name: str, fn) -> int:
        job = worker.submit(name, fn)
        self.jobs[job.id] = kind
        return job.id

    def _job_over(self, job_id) -> str | None:
        """Every ended job leaves the books, used or stale: nothing stays visible for good."""
        kind = self.jobs.pop(job_id, None)
        if not self.jobs:
            self.progress.hide()
            self.cancel_button.hide()
            self._step_started = None
        return kind

    def show_error(self, text: str):
        self.message.setText(text)
        if self.options.interactive:  # never a blocking box: closing the window must stay possible
            box = QMessageBox(QMessageBox.Critical, "LungView", text, parent=self)
            box.open()
            self.dialogs.append(box)

    def _failed(self, job_id, text):
        kind = self._job_over(job_id)
        if self.job_done.pop(job_id, None) is not None:  # the workspace and training panels' jobs
            self.training_ended(job_id, text)
            self.show_error(text)
            return
        if job_id not in (self.load_job, self.detect_job):
            return  # a superseded job's failure is nobody's business
        if kind == "load" and "--allow-gaps" in text:  # a wide gap of missing slices
            self._offer_gaps(text)
        else:
            self.show_error(text)
        (self.scan_loaded if kind == "load" else self.detection_done).emit(False)

    def _cancelled(self, job_id):
        kind = self._job_over(job_id)
        if self.job_done.pop(job_id, None) is not None:
            self.training_ended(job_id, "stopped: nothing was written; the active model stays in use")
            self.message.setText(f"{kind} cancelled")
            return
        if job_id in (self.load_job, self.detect_job):
            self.message.setText("cancelled")
            if kind == "detect":
                self.detection_done.emit(False)

    def cancel_jobs(self):
        """Esc: the running jobs and the queued ones."""
        for w in (self.loader, self.compute):
            w.cancel_all()

    # -- detection ---------------------------------------------------------------------
    def model_paths(self) -> dict:
        o = self.options
        if o.demo_models:
            return {"seg": None, "cls": None, "mal": None}
        return {"seg": o.seg_model or self.settings.value("seg_model", "") or None,
                "cls": o.cls_model or self.settings.value("cls_model", "") or None,
                "mal": o.mal_model or self.settings.value("mal_model", "") or None}

    def choose_models(self):
        """One dialog for the three roles; nothing changes unless the reader saves."""
        current = {key: self.settings.value(key, "") or None for _, key, _ in ROLES}
        dialog = ModelsDialog(current, self, use_user_dir=not self.options.demo_models,
                              backend=self.backend_choice())
        self.models_dialog = dialog
        dialog.accepted.connect(lambda: self._models_saved(dialog, dialog.rerun_requested))
        dialog.open()
        self.dialogs.append(dialog)

    def _models_saved(self, dialog: ModelsDialog, rerun: bool):
        for _, key, _ in ROLES:
            self.settings.setValue(key, dialog.choices[key] or "")
        self.settings.setValue("backend", dialog.backend_choice)
        self.options.backend = None  # the saved choice from now on (over a --backend given at start)
        self._update_device_badge()
        self.message.setText("models saved")
        if rerun:
            self.run_detection()

    def run_detection(self):
        vol = self.state.volume
        if vol is None:
            return
        paths, device, user_dir = self.model_paths(), self.options.device, not self.options.demo_models
        backend = self.backend_choice()
        for job_id, kind in list(self.jobs.items()):  # a newer request supersedes the queued and the running
            if kind == "detect":                        # detections (a training goes on; this one waits for it)
                self.compute.cancel(job_id)

        def job(progress, cancel):
            run, info, choices = self._pipeline_on_worker(paths, device, user_dir, backend)
            return vol, run(vol, progress, cancel), choices, info

        self.detect_job = self._submit(self.compute, "detect", "detection", job)

    def backend_choice(self) -> str:
        return self.options.backend or self.settings.value("backend", "auto") or "auto"

    def _pipeline_on_worker(self, paths: dict, device: str, user_dir: bool, backend: str = "auto"):
        """On the compute thread: (run(vol, progress, cancel) -> PipelineResult, the device, the
        models' choices), the models loaded once and kept by that thread (their exports, for
        another backend, made on first use and compiled once)."""
        from lungview.inference.backends import resolve_backend
        from lungview.inference.device import resolve_device
        from lungview.inference.pipeline import Pipeline
        from lungview.models.registry import ModelCache, resolve_models

        if self.model_cache is None:
            self.model_cache = ModelCache()  # lives on the compute thread
        choices = resolve_models(paths["seg"], paths["cls"], paths["mal"], use_user_dir=user_dir)
        models = {r: self.model_cache.get(c.path, r) if c else None for r, c in choices.items()}
        info = resolve_device(device)
        pipeline = Pipeline(models["segmentation"], models["nodule"], info, models["malignancy"],
                            backend=resolve_backend(backend, info))

        def run(vol, progress, cancel):
            self.pipeline_runs += 1
            return pipeline.run(vol, progress, cancel)

        return run, info, choices

    def _detected(self, job_id, payload):
        if self._job_result(job_id, payload):
            return
        self._job_over(job_id)
        vol, result, choices, info = payload
        if job_id != self.detect_job or vol is not self.state.volume:
            return  # stale: superseded, or another scan is shown now
        demo = any(c is not None and c.origin == "demo" for c in choices.values())
        models = origin_labels(result.models, choices)
        lung = result.lung
        record = scan_record(vol.source, vol, result, info, models, demo)
        self.state.set_findings(Findings(
            detections=result.detections, prob=result.prob, models=models,
            lung_small=None if lung is None else lung.small, lung_step=1 if lung is None else lung.step,
            device=f"{record['device']} · {record['backend']}",
            demo_on_real_scan=demo and not is_phantom_uid(vol.series_uid)))
        rerun = self.merge_detections(result.detections)
        self.save_detections(vol, record)
        if result.working_threshold != self.working_threshold:  # another classifier: its own threshold
            self.working_threshold = result.working_threshold
            self.state.set_threshold(result.working_threshold)
            self.panel.set_threshold(self.state.threshold)
            self.banner.add_notice(f"the nodule classifier's working threshold is {result.working_threshold:.2f}: "
                                   "the threshold slider moved there", "info")
        for note in result.notes:
            self.banner.add_notice(note, "info" if not self.banner.notices else "warning")
        total = sum(result.timings_s.values())
        self.message.setText(f"detected in {total:.1f} s" + (
            "" if rerun is None else f"; against the last run: {rerun['new']} new, {rerun['gone']} gone, "
            f"{rerun['up'] + rerun['down']} with p_nodule moved by more than 0.2 (marked in the table)"))
        self.message.setToolTip(f"{result.candidates} candidates in {total:.1f} s on {info.name}: "
                                + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings_s.items()))
        if not self.options.interactive:  # screenshots: show the most likely nodule in every view
            self._go_to(0)
        self.detection_done.emit(True)

    def _go_to(self, index: int, select: bool = True):
        rows = self.state.visible()
        if 0 <= index < len(rows):
            self.detect_index = index
            self.state.set_cursor(rows[index].center_irc)
            for view in self.views.values():  # a zoomed view pans to the nodule
                view.ensure_visible(rows[index].center_irc)
            if select:
                self.panel.select_row(index)

    def step_detection(self, delta: int):
        """N / P: the next row of the table as it is sorted."""
        order = self.panel.ordered()
        if order:
            at = order.index(self.detect_index) if self.detect_index in order else (-1 if delta > 0 else 0)
            self._go_to(order[(at + delta) % len(order)])

    def screenshot(self):
        """The window as an image, with the 3D view's OpenGL frame painted in (a native GL window
        is not part of a widget grab)."""
        from PySide6.QtCore import QPoint
        from PySide6.QtGui import QPainter

        pix = self.grab()
        gl_view = getattr(self.view3d, "gl", None)
        if gl_view is not None and self.view3d.isVisible():
            frame = gl_view.grabFramebuffer()
            painter = QPainter(pix)
            painter.drawImage(self.view3d.mapTo(self, QPoint(0, 0)), frame.scaled(self.view3d.size()))
            painter.end()
        return pix

    def closeEvent(self, ev):  # noqa: N802
        for dialog in self.dialogs:
            dialog.close()
        for w in (self.loader, self.compute):
            w.shutdown()
        self.close_workspace()
        super().closeEvent(ev)
