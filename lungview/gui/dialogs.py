"""Dialogs: the models (one place for the three roles) and the series picker."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QDialog, QDialogButtonBox, QFileDialog, QGridLayout,
                               QHeaderView, QLabel, QLineEdit, QPushButton, QTableWidget, QTableWidgetItem,
                               QVBoxLayout)

ROLES = (("segmentation", "seg_model", "Segmentation (U-Net)"),
         ("nodule", "cls_model", "Nodule classifier"),
         ("malignancy", "mal_model", "Malignancy classifier"))
CHECKPOINTS = "Checkpoints (*.state *.pt *.pth);;All files (*)"
BACKEND_ITEMS = (("auto", "auto: OpenVINO on the CPU when installed, else PyTorch"), ("torch", "PyTorch"),
                 ("onnxruntime", "ONNX Runtime (CPU)"), ("openvino", "OpenVINO (CPU)"))


def describe_default(role: str, use_user_dir: bool = True) -> str:
    """What a role resolves to without a choice: '<file> (user models)' or '(demo)'."""
    from lungview.core import LungViewError
    from lungview.models.registry import resolve_models

    try:
        choice = resolve_models(use_user_dir=use_user_dir).get(role)
    except LungViewError as exc:
        return f"none ({exc})"
    if choice is None:
        return "none: no malignancy is reported"
    where = {"user": "user model directory", "demo": "shipped demo model, trained on phantoms"}[choice.origin]
    return f"{choice.path.name} ({where})" + checkpoint_note(role, choice.path)


def checkpoint_note(role: str, path: str | Path) -> str:
    """What the file itself says: a nodule classifier's working threshold (the findings it
    lists), or why the file cannot be used for `role`."""
    from lungview.core import LungViewError
    from lungview.models.checkpoint import load_checkpoint

    try:
        card = load_checkpoint(path, role).card
    except LungViewError as exc:
        return f" — cannot be used: {exc}"
    return f"; findings at p ≥ {card.threshold:.2f}" if role == "nodule" else ""


class ModelsDialog(QDialog):
    """The checkpoint of each role, where it comes from, Browse… and Default per role. Nothing
    is saved until Save: a cancelled file picker or Cancel leaves every choice as it was."""

    def __init__(self, choices: dict[str, str | None], parent=None, use_user_dir: bool = True,
                 backend: str = "auto"):
        super().__init__(parent)
        self.setWindowTitle("Models")
        self.choices = {key: choices.get(key) or None for _, key, _ in ROLES}
        self.use_user_dir = use_user_dir
        layout = QVBoxLayout(self)
        grid = QGridLayout()
        self.paths: dict[str, QLineEdit] = {}
        self.origins: dict[str, QLabel] = {}
        self.browse: dict[str, QPushButton] = {}
        self.default: dict[str, QPushButton] = {}
        for row, (role, key, title) in enumerate(ROLES):
            grid.addWidget(QLabel(title), 2 * row, 0)
            edit = QLineEdit()
            edit.setReadOnly(True)
            edit.setMinimumWidth(420)
            grid.addWidget(edit, 2 * row, 1)
            browse, default = QPushButton("Browse…"), QPushButton("Default")
            browse.clicked.connect(lambda _=False, k=key, t=title: self._browse(k, t))
            default.clicked.connect(lambda _=False, k=key: self._set(k, None))
            grid.addWidget(browse, 2 * row, 2)
            grid.addWidget(default, 2 * row, 3)
            origin = QLabel("")
            origin.setStyleSheet("color: palette(mid);")
            grid.addWidget(origin, 2 * row + 1, 1, 1, 3)
            self.paths[key], self.origins[key], self.browse[key], self.default[key] = edit, origin, browse, default
        row = 2 * len(ROLES)
        grid.addWidget(QLabel("Inference backend"), row, 0)
        self.backend = QComboBox()
        self.backend.setToolTip("What runs the networks during detection on the CPU; training always uses PyTorch")
        self._add_backends(backend)
        grid.addWidget(self.backend, row, 1)
        layout.addLayout(grid)
        buttons = QDialogButtonBox()
        self.save_button = buttons.addButton("Save", QDialogButtonBox.AcceptRole)
        self.rerun_button = buttons.addButton("Save and re-run detection", QDialogButtonBox.ActionRole)
        self.cancel_button = buttons.addButton(QDialogButtonBox.Cancel)
        self.rerun_requested = False
        self.rerun_button.clicked.connect(self._save_and_rerun)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        for _, key, _ in ROLES:
            self._show(key)

    def _add_backends(self, current: str) -> None:
        """The backends, a runtime that is not installed listed but not selectable (with how to get it)."""
        from lungview.inference.backends import installed
        from lungview.models.export import install_hint

        for key, label in BACKEND_ITEMS:
            ready = key == "auto" or installed(key)
            self.backend.addItem(label if ready else f"{label}: not installed ({install_hint(key)})", key)
            self.backend.model().item(self.backend.count() - 1).setEnabled(ready)
        index = self.backend.findData(current)
        self.backend.setCurrentIndex(index if index >= 0 and self.backend.model().item(index).isEnabled() else 0)

    @property
    def backend_choice(self) -> str:
        return self.backend.currentData()

    def _save_and_rerun(self) -> None:
        self.rerun_requested = True
        self.accept()

    def _show(self, key: str) -> None:
        role = next(r for r, k, _ in ROLES if k == key)
        path = self.choices[key]
        self.paths[key].setText(path or "(default)")
        if path:
            note = checkpoint_note(role, path) if Path(path).exists() else " — the file is missing"
            self.origins[key].setText("chosen here" + note)
        else:
            self.origins[key].setText("default: " + describe_default(role, self.use_user_dir))

    def _set(self, key: str, path: str | None) -> None:
        self.choices[key] = path
        self._show(key)

    def _browse(self, key: str, title: str) -> None:
        start = self.choices[key] or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(self, f"Checkpoint: {title}", start, CHECKPOINTS)
        if path:  # a cancelled picker changes nothing
            self._set(key, path)


class SeriesDialog(QDialog):
    """The series of a folder: description, modality, slices, thickness and UID of each; the
    one shown now is marked. Choosing another opens it."""

    def __init__(self, series: list, current_uid: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Several series")
        self.series = series
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("This folder holds several series. Choose one to open:"))
        headers = ("description", "modality", "slices", "thickness", "series #", "series UID")
        self.table = QTableWidget(len(series), len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        for r, s in enumerate(series):
            thickness = f"{s.slice_thickness_mm:.2f} mm" if s.slice_thickness_mm else "—"
            shown = " (shown)" if s.series_uid == current_uid else ""
            cells = (s.description or "(no description)") + shown, s.modality, str(s.files), thickness, \
                s.series_number or "—", s.series_uid
            for c, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if c in (2, 3, 4):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                self.table.setItem(r, c, item)
            if shown:
                self.table.selectRow(r)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.setMinimumWidth(760)
        self.table.doubleClicked.connect(self.accept)
        layout.addWidget(self.table)
        buttons = QDialogButtonBox(QDialogButtonBox.Open | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.open_button = buttons.button(QDialogButtonBox.Open)
        layout.addWidget(buttons)

    def chosen(self):
        rows = self.table.selectionModel().selectedRows()
        return self.series[rows[0].row()] if rows else None
