"""Side panels: the detections table with the threshold slider and overlay controls, and the
malignancy legend."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QLinearGradient, QPainter
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSlider,
                               QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from lungview.gui.slice_view import malignancy_color
from lungview.gui.state import FILTERS, ViewerState
from lungview.review.lungrads import ORDER
from lungview.review.model import DETECTOR, MALIGNANCY, STATUSES, TYPES

COLUMNS = ("st", "type", "mal", "RADS", "p_nod", "p_mal", "diam", "L×S", "x", "y", "z")
TIPS = ("review status: · unreviewed, ✓ confirmed, ✗ rejected, ? unsure (A / R / U); ◆ added or imported",
        "nodule type (T cycles it)", "the reader's malignancy label (M cycles it)",
        "Lung-RADS v2022 of a confirmed nodule (a research aid)",
        "the classifier's probability of a nodule", "the malignancy model's probability (— without one)",
        "equivalent-sphere diameter, mm (LUNA16's diameter_mm)", "long and short axis in the axial plane, mm",
        "x, mm (patient, LPS)", "y, mm", "z, mm")
RERUN_MARK = {"new": " new", "gone": " gone", "up": " ↑", "down": " ↓"}
RERUN_TEXT = {"new": "a new finding", "gone": "no longer reported (its p_nodule is the earlier run's)",
              "up": "p_nodule up by more than 0.2", "down": "p_nodule down by more than 0.2"}
STATUS_MARK = {"unreviewed": "·", "confirmed": "✓", "rejected": "✗", "unsure": "?"}
TYPE_SHORT = {"solid": "solid", "part-solid": "part", "ground-glass": "GGN", "calcified": "calc"}
MAL_SHORT = {"unknown": "—", "benign": "ben", "malignant": "mal"}


class _NumberItem(QTableWidgetItem):
    """Sorts by value, not by text."""

    def __init__(self, value: float, text: str):
        super().__init__(text)
        self.value = value
        self.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)

    def __lt__(self, other):
        return self.value < getattr(other, "value", 0.0)


class Legend(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.setMinimumHeight(34)

    graded = True  # False: no malignancy model, markers have one neutral colour

    def paintEvent(self, ev):  # noqa: N802
        p = QPainter(self)
        bar = self.rect().adjusted(8, 4, -8, -18)
        if not self.graded:
            p.fillRect(bar, malignancy_color(None))
            p.setPen(self.palette().windowText().color())
            p.drawText(bar.left(), bar.bottom() + 14, "no malignancy model: markers in one colour")
            return
        grad = QLinearGradient(bar.left(), 0, bar.right(), 0)
        for t in (0.0, 0.5, 1.0):
            grad.setColorAt(t, malignancy_color(t))
        p.fillRect(bar, grad)
        p.setPen(self.palette().windowText().color())
        fm = p.fontMetrics()
        p.drawText(bar.left(), bar.bottom() + 14, "0 benign")
        mid = "p_malignant"
        p.drawText(bar.center().x() - fm.horizontalAdvance(mid) // 2, bar.bottom() + 14, mid)
        right = "malignant 1"
        p.drawText(bar.right() - fm.horizontalAdvance(right), bar.bottom() + 14, right)


class DetectionsPanel(QWidget):
    navigate = Signal(int)  # row index into state.visible()

    def __init__(self, state: ViewerState, parent=None):
        super().__init__(parent)
        self.state = state
        self.rows: list = []
        self.setMinimumWidth(430)
        layout = QVBoxLayout(self)
        self.summary = QLabel("No detections yet")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.warning = QLabel("")
        self.warning.setWordWrap(True)
        self.warning.setStyleSheet("color: #ff7050; font-weight: bold;")
        self.warning.hide()
        layout.addWidget(self.warning)
        row = QHBoxLayout()
        row.addWidget(QLabel("threshold"))
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(0, 100)
        self.slider.setValue(int(round(state.threshold * 100)))
        self.slider.setToolTip("show detections with p_nodule at or above this")
        self.value = QLabel(f"{state.threshold:.2f}")
        row.addWidget(self.slider, 1)
        row.addWidget(self.value)
        layout.addLayout(row)
        review_row = QHBoxLayout()
        self.filter = QComboBox()
        self.filter.addItems(FILTERS)
        self.filter.setToolTip("show these findings")
        self.reviewed = QLabel("")
        review_row.addWidget(QLabel("show"))
        review_row.addWidget(self.filter)
        review_row.addWidget(self.reviewed, 1)
        layout.addLayout(review_row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        for j, tip in enumerate(TIPS):
            self.table.horizontalHeaderItem(j).setToolTip(tip)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Stretch)  # every column fits the panel, x/y/z included
        header.setMinimumSectionSize(36)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        layout.addWidget(self.table, 1)
        overlay = QHBoxLayout()
        self.overlay_box = QCheckBox("segmentation overlay")
        self.opacity = QSlider(Qt.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(state.seg_opacity * 100))
        overlay.addWidget(self.overlay_box)
        overlay.addWidget(self.opacity, 1)
        layout.addLayout(overlay)
        self.legend = Legend()
        layout.addWidget(self.legend)
        self.models = QLabel("")
        self.models.setWordWrap(True)
        self.models.setStyleSheet("color: palette(mid);")
        layout.addWidget(self.models)
        self.slider.valueChanged.connect(lambda v: state.set_threshold(v / 100.0))
        self.filter.currentTextChanged.connect(state.set_filter)
        self.overlay_box.toggled.connect(lambda on: state.set_overlay(visible=on))
        self.opacity.valueChanged.connect(lambda v: state.set_overlay(opacity=v / 100.0))
        self.table.itemSelectionChanged.connect(self._selected)
        state.findings_changed.connect(self.refresh)
        state.review_changed.connect(self.edited)
        state.overlay_changed.connect(self._overlay_changed)

    def _overlay_changed(self):
        """The S key and the check box stay in step: both go through the state."""
        for widget, value in ((self.overlay_box, self.state.seg_visible),
                              (self.opacity, int(round(self.state.seg_opacity * 100)))):
            widget.blockSignals(True)
            (widget.setChecked if widget is self.overlay_box else widget.setValue)(value)
            widget.blockSignals(False)

    def edited(self):
        """After a review edit: when the same findings are shown, only the rows that changed are
        rewritten (a key press stays well under a frame); else the whole table."""
        old, rows = self.rows, self.state.visible()
        if [r.id for r in old] != [r.id for r in rows]:
            self.refresh()
            return
        self.rows = rows
        changed = [i for i, (a, b) in enumerate(zip(old, rows)) if a.finding is not b.finding]
        at = {int(self.table.item(r, 0).data(Qt.UserRole)): r for r in range(self.table.rowCount())}
        self.table.setSortingEnabled(False)
        for i in changed:
            self._fill_row(at[i], i, rows[i])
        self.table.setSortingEnabled(True)

    def refresh(self):
        st = self.state
        self.value.setText(f"{st.threshold:.2f}")
        self.rows = st.visible()
        f = st.findings
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(self.rows))
        for i, d in enumerate(self.rows):
            self._fill_row(i, i, d)
        self.table.setSortingEnabled(True)
        total = len(f.detections)
        self.summary.setText(f"{len(self.rows)} shown: {total} candidates, those with p_nodule >= {st.threshold:.2f}, "
                             "and every reviewed or added finding"
                             + (f" — {f.device}" if f.device else ""))
        self.models.setText("\n".join(f"{role}: {label}" for role, label in f.models.items()))
        self.legend.graded = not self.rows or any(d.p_malignant is not None for d in self.rows)
        self.legend.update()
        self.warning.setVisible(f.demo_on_real_scan)
        self.warning.setText("Demo models (trained on synthetic phantoms) produced these markers on a real "
                             "scan: they are not meaningful. Fetch the book's models "
                             "(scripts/fetch_book_models.py) or choose checkpoints in Detect → Models.")

    def _fill_row(self, row: int, i: int, d) -> None:
        """Table row `row` shows visible finding `i`."""
        x, y, z = d.center_xyz
        p_nod = (-1.0, "—") if d.p_nodule is None else (d.p_nodule, f"{d.p_nodule:.2f}")
        p_mal = (-1.0, "—") if d.p_malignant is None else (d.p_malignant, f"{d.p_malignant:.3f}")
        rads = d.lung_rads
        mark = STATUS_MARK[d.status] + ("" if d.source == DETECTOR else "◆")
        values = [(STATUSES.index(d.status), mark), (TYPES.index(d.type), TYPE_SHORT[d.type]),
                  (MALIGNANCY.index(d.malignancy), MAL_SHORT[d.malignancy]),
                  (-1 if rads is None else ORDER.index(rads), rads or ""), p_nod, p_mal,
                  (d.diameter_mm, f"{d.diameter_mm:.1f}" if d.diameter_mm else "—"),
                  (d.long_axis_mm, f"{d.long_axis_mm:.0f}×{d.short_axis_mm:.0f}" if d.long_axis_mm else "—"),
                  (x, f"{x:.0f}"), (y, f"{y:.0f}"), (z, f"{z:.0f}")]
        size = (f"{d.diameter_mm:.1f} mm equivalent diameter, {d.long_axis_mm:.1f} × {d.short_axis_mm:.1f} mm "
                f"(mean {d.mean_diameter_mm:.1f}, {d.size_category}), {d.volume_mm3:.0f} mm³"
                if d.diameter_mm else "size not measured")
        tip = (f"{d.status}, {d.type}, {d.malignancy}" + (f", Lung-RADS {rads}" if rads else "")
               + f" — {d.source}\n{size}; centre ({x:.1f}, {y:.1f}, {z:.1f}) mm"
               + (f"\nnote: {d.note}" if d.note else "") + "".join(f"\n{n}" for n in d.notes))
        change = self.state.rerun.get(d.id)
        if change:
            tip += f"\nthe last re-run of detection: {RERUN_TEXT[change]}"
        for j, (v, text) in enumerate(values):
            item = _NumberItem(float(v), text + (" ⚠" if j == 4 and d.notes else "")
                               + (RERUN_MARK[change] if j == 4 and change else ""))
            item.setData(Qt.UserRole, i)
            item.setToolTip(tip)
            if j == 5:
                item.setForeground(malignancy_color(d.p_malignant))
            self.table.setItem(row, j, item)

    def set_reviewed(self, reviewed: int, total: int, scan_rads: str) -> None:
        """'5 of 7 reviewed' and the scan's Lung-RADS: category 1 (nothing confirmed) only once every
        finding is reviewed; before that, a dash."""
        rads = scan_rads if scan_rads != "1" or reviewed == total else "—"
        self.reviewed.setText(f"{reviewed} of {total} reviewed — scan Lung-RADS {rads}" if total else "")

    def set_threshold(self, threshold: float) -> None:
        self.slider.blockSignals(True)
        self.slider.setValue(int(round(threshold * 100)))
        self.slider.blockSignals(False)
        self.value.setText(f"{threshold:.2f}")

    def ordered(self) -> list[int]:
        """Indices into state.visible() in the order the table shows them (its sort)."""
        return [int(self.table.item(r, 0).data(Qt.UserRole)) for r in range(self.table.rowCount())]

    def select_row(self, index: int) -> None:
        """Select the detection `index` of state.visible(), wherever sorting put it."""
        for r in range(self.table.rowCount()):
            if self.table.item(r, 0).data(Qt.UserRole) == index:
                self.table.selectRow(r)
                return

    def _selected(self):
        items = self.table.selectedItems()
        if items:
            self.navigate.emit(int(items[0].data(Qt.UserRole)))
