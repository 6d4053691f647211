"""The training panel (a dock, Ctrl+T): fine-tune the nodule or malignancy classifier or the
U-Net on the workspace's reviews, on the compute worker that owns the device (detection asked for
meanwhile waits its turn); live loss and validation curves per epoch; the parent and the new model
side by side on the validation scans; the model versions, which is active, "Use" to activate or
roll back."""

from __future__ import annotations

import time

import pyqtgraph as pg
from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDoubleSpinBox, QFormLayout, QHBoxLayout,
                               QHeaderView, QLabel, QProgressBar, QPushButton, QSpinBox, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from lungview.core import LungViewError
from lungview.gui.widgets import add_dock

METRICS = {"nodule": (("threshold", "{:.2f}"), ("sensitivity", "{:.2f}"), ("fp_per_scan", "{:.2f}"),
                      ("cpm", "{:.3f}")),
           "malignancy": (("auc", "{:.3f}"),), "segmentation": (("dice", "{:.3f}"),)}


class _Relay(QObject):
    """Carries an epoch's record from the worker thread to the GUI thread."""

    epoch = Signal(object)


class TrainingPanel(QWidget):
    start_requested = Signal()
    stop_requested = Signal()
    use_requested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        from lungview.training.finetune import BOOK_LR

        self.role = QComboBox()
        self.role.addItems(["nodule", "malignancy", "segmentation"])
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 200)
        self.epochs.setValue(5)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(4)
        self.lr.setRange(0.0001, 0.1)
        self.lr.setSingleStep(0.0005)
        self.lr.setValue(BOOK_LR["nodule"])
        self.role.currentTextChanged.connect(lambda r: self.lr.setValue(BOOK_LR[r]))
        self.data = QLabel("no workspace")
        self.data.setWordWrap(True)
        self.data.setTextFormat(Qt.RichText)
        self.start = QPushButton("Start")
        self.stop = QPushButton("Stop")
        self.stop.setEnabled(False)
        self.start.clicked.connect(self.start_requested)
        self.stop.clicked.connect(self.stop_requested)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        self.left = QLabel("")
        self.device = QLabel("")
        self.plot = pg.PlotWidget(background="k")
        self.plot.setMinimumHeight(150)
        self.plot.addLegend(offset=(5, 5))
        self.plot.setLabel("bottom", "epoch")
        self.loss_curve = self.plot.plot([], [], pen=pg.mkPen((255, 170, 40), width=2), symbol="o", symbolSize=5,
                                         name="training loss")
        self.metric_curve = self.plot.plot([], [], pen=pg.mkPen((60, 220, 90), width=2), symbol="s", symbolSize=5,
                                           name="validation CPM / AUC / Dice")
        self.compare = QTableWidget(0, 3)
        self.compare.setHorizontalHeaderLabels(["on the validation scans", "parent", "new"])
        self.compare.verticalHeader().hide()
        self.compare.horizontalHeader().setSectionResizeMode(QHeaderView.Stretch)
        self.compare.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.compare.verticalHeader().setDefaultSectionSize(24)
        self.compare.setMaximumHeight(24 * (1 + max(len(m) for m in METRICS.values())) + 6)  # every row, no scrolling
        self.verdict = QLabel("")
        self.verdict.setWordWrap(True)
        self.versions = QTableWidget(0, 4)
        self.versions.setHorizontalHeaderLabels(["model", "verdict", "active", "validation (after)"])
        self.versions.verticalHeader().hide()
        self.versions.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.versions.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.versions.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.versions.horizontalHeader().setStretchLastSection(True)
        self.use = QPushButton("Use selected model")
        self.use.clicked.connect(self._use)
        form = QFormLayout()
        form.addRow("role", self.role)
        form.addRow("epochs", self.epochs)
        form.addRow("learning rate", self.lr)
        buttons = QHBoxLayout()
        buttons.addWidget(self.start)
        buttons.addWidget(self.stop)
        buttons.addWidget(self.device, 1)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.left)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.data)
        layout.addLayout(buttons)
        layout.addLayout(bar)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.compare)
        layout.addWidget(self.verdict)
        layout.addWidget(QLabel("model versions"))
        layout.addWidget(self.versions, 1)
        layout.addWidget(self.use)
        self.history: list[dict] = []
        self._started = 0.0
        self.version_ids: list[str] = []

    def _use(self) -> None:
        row = self.versions.currentRow()
        if 0 <= row < len(self.version_ids):
            self.use_requested.emit(self.version_ids[row])

    # -- what the window tells it ----------------------------------------------------------------
    def show_data(self, counts: dict | None, notes: list[str], problem: str = "") -> None:
        if counts is None:
            self.data.setText(problem)
            return
        rows = "".join(f"<tr><td>{uid[-14:]}</td><td>{c['side']}</td><td>{c['positives']}</td>"
                       f"<td>{c['negatives']}</td></tr>" for uid, c in counts["per_scan"].items())
        t, v = counts["train"], counts["validation"]
        text = (f"<b>train</b>: {t['scans']} scan(s), {t['positives']} positive, {t['negatives']} negative; "
                f"<b>validation</b>: {v['scans']} scan(s), {v['positives']} positive, {v['negatives']} negative"
                f"<table cellspacing=4><tr><th>scan</th><th>side</th><th>pos</th><th>neg</th></tr>{rows}</table>")
        if not v["scans"]:
            text += "<br><b>No validation scan: no comparison is possible; the model is kept, not activated.</b>"
        text += "".join(f"<br><i>{n}</i>" for n in notes)
        self.data.setText(text)

    def started(self, device: str) -> None:
        self.history = []
        self.loss_curve.setData([], [])
        self.metric_curve.setData([], [])
        self.compare.setRowCount(0)
        self.verdict.setText("")
        self.device.setText(device)
        self.start.setEnabled(False)
        self.stop.setEnabled(True)
        self.progress.setValue(0)
        self._started = time.monotonic()

    def progressed(self, done: int, total: int, message: str) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)
        self.progress.setFormat(f"{message}  %p%")
        elapsed = time.monotonic() - self._started
        if done and total and message.startswith("epoch"):
            self.left.setText(f"about {elapsed / done * (total - done):.0f} s left")

    def add_epoch(self, record: dict, role: str) -> None:
        self.history.append(record)
        epochs = [r["epoch"] for r in self.history]
        self.loss_curve.setData(epochs, [r["loss"] for r in self.history])
        key = METRICS[role][-1][0]  # CPM / AUC
        vals = [r.get("validation", {}).get(key) for r in self.history]
        if all(v is not None for v in vals):
            self.metric_curve.setData(epochs, vals)

    def finished(self, role: str, before: dict, after: dict, verdict: str, reason: str) -> None:
        self.start.setEnabled(True)
        self.stop.setEnabled(False)
        self.left.setText("")
        self.compare.setRowCount(len(METRICS[role]))
        for r, (key, fmt) in enumerate(METRICS[role]):
            for c, text in enumerate((key, _fmt(before.get(key), fmt), _fmt(after.get(key), fmt))):
                self.compare.setItem(r, c, QTableWidgetItem(text))
        color = "#3c3" if verdict == "accepted" else "#e90"
        self.verdict.setText(f"<b style='color:{color}'>{verdict}</b>: {reason}")

    def stopped(self, text: str) -> None:
        self.start.setEnabled(True)
        self.stop.setEnabled(False)
        self.left.setText("")
        self.verdict.setText(text)

    def show_versions(self, rows: list[dict]) -> None:
        self.versions.setRowCount(len(rows))
        self.version_ids = [r["id"] for r in rows]
        for k, r in enumerate(rows):
            after = r["metrics"].get("after", {}) if r["metrics"] else {}
            summary = ", ".join(f"{key} {_fmt(after.get(key), fmt)}" for key, fmt in METRICS.get(
                r["role"], ()) if key in after)
            for c, text in enumerate((r["id"], r["verdict"], "✓" if r["active"] else "", summary)):
                item = QTableWidgetItem(text)
                item.setToolTip(r["reason"] or r["path"])
                self.versions.setItem(k, c, item)


def _fmt(value, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


class TrainingMixin:
    """Needs: self.workspace, self.autosaver, self.compute, self._submit, self.job_done,
    self.message, self.show_error, self.options."""

    def _training_dock(self, view_menu) -> None:
        self.training_panel = TrainingPanel()
        self.training_dock = add_dock(self, "Training", self.training_panel, Qt.RightDockWidgetArea, "Ctrl+T",
                                      view_menu, self.refresh_training, 480)
        self.training_panel.role.currentTextChanged.connect(lambda _: self.refresh_training())
        self.training_panel.start_requested.connect(self.start_training)
        self.training_panel.stop_requested.connect(self.stop_training)
        self.training_panel.use_requested.connect(self.use_model)
        self.train_job = None
        self._relay = _Relay()
        self._relay.epoch.connect(lambda rec: self.training_panel.add_epoch(rec, self._training_role))
        self._training_role = "nodule"

    def refresh_training(self) -> None:
        from lungview.models.versions import list_versions

        panel = self.training_panel
        try:
            panel.show_versions([v.to_dict(on) for v, on in list_versions()])
        except LungViewError as exc:
            panel.verdict.setText(str(exc))
        if self.workspace is None:
            panel.show_data(None, [], "training needs a workspace (this window keeps none)")
            return
        from lungview.training.examples import training_data

        try:
            data = training_data(self.workspace, panel.role.currentText())
            panel.show_data(data.counts() if data.examples else None, data.notes,
                            "no reviewed findings yet: confirm and reject findings first (A / R)")
        except LungViewError as exc:
            panel.show_data(None, [], str(exc))

    def start_training(self) -> None:
        if self.workspace is None:
            self.show_error("training needs a workspace (this window keeps none)")
            return
        if self.train_job is not None:
            return
        from lungview.inference.device import resolve_device
        from lungview.training.finetune import Settings
        from lungview.training.runs import train_from_workspace

        panel = self.training_panel
        role = self._training_role = panel.role.currentText()
        settings = Settings(epochs=panel.epochs.value(), lr=panel.lr.value())
        ws, device_spec = self.workspace, self.options.device
        self.autosaver.flush()  # the reviews as on screen
        try:
            device = resolve_device(device_spec)
        except LungViewError as exc:
            self.show_error(str(exc))
            return

        def job(progress, cancel):
            return train_from_workspace(ws, role, device, settings, progress=progress, cancel=cancel,
                                        on_epoch=self._relay.epoch.emit)

        if not getattr(self, "_training_connected", False):  # (the workers exist once the menus are built)
            self.compute.job_progress.connect(self._training_progress)
            self._training_connected = True
        panel.started(f"{device.name} · PyTorch")  # training runs in PyTorch whatever runs detection
        self.train_job = self._submit(self.compute, "train", f"training the {role} model", job)
        self.job_done[self.train_job] = self._trained
        self.message.setText(f"training the {role} model on {device.name}; detection asked for now waits "
                             "until it ends")

    def _training_progress(self, job_id, done, total, message) -> None:
        if job_id == self.train_job:
            self.training_panel.progressed(done, total, message)

    def stop_training(self) -> None:
        if self.train_job is not None:
            self.compute.cancel(self.train_job)

    def _trained(self, payload) -> None:
        result, version = payload
        self.train_job = None
        self.training_panel.finished(version.role, result.before, result.after, version.verdict, version.reason)
        self.refresh_training()
        self.message.setText(f"{version.id}: {version.verdict}" + (" and active: Ctrl+D re-runs detection with it"
                                                                     if version.verdict == "accepted" else ""))

    def training_ended(self, job_id, text: str) -> None:
        """A training job cancelled (Stop) or failed: nothing was written, the active model stays."""
        if job_id == self.train_job:
            self.train_job = None
            self.training_panel.stopped(text)

    def use_model(self, model_id: str) -> None:
        from lungview.models.versions import use

        try:
            v = use(model_id)
        except LungViewError as exc:
            self.show_error(str(exc))
            return
        self.refresh_training()
        self.message.setText(f"{v.id} is the active {v.role} model: Ctrl+D re-runs detection with it")
