"""One slice plane (axial, coronal or sagittal) of the scan with crosshair, nodule markers, the
segmentation overlay, interpolated slices marked and a ruler. Data coordinates are millimetres in
the plane, so the aspect is right for any voxel spacing and a ruler's length is a plain distance.
Wheel: scroll slices (Ctrl+wheel: zoom); left click: move the cursor; left drag: pan, or move a
marker dragged from inside / resize one dragged by its rim (in ruler mode: measure; with the brush
or the eraser: paint the selected finding's mask); right drag: window/level."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QGraphicsEllipseItem, QGraphicsRectItem, QLabel

from lungview.core.geometry import orientation_letters
from lungview.gui.state import PLANES, ViewerState

pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)

OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}


NO_MALIGNANCY_COLOR = (80, 200, 255)  # markers when no malignancy model ran: one neutral colour


def malignancy_color(p: float | None) -> QColor:
    """Green (benign) through yellow to red (malignant); cyan without a malignancy model."""
    if p is None:
        return QColor(*NO_MALIGNANCY_COLOR)
    p = float(np.clip(p, 0.0, 1.0))
    r = int(255 * min(1.0, 2 * p))
    g = int(255 * min(1.0, 2 * (1 - p)))
    return QColor(r, g, 40)


def overlay_lut(opacity: float) -> np.ndarray:
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[:, 0], lut[:, 1], lut[:, 2] = 0, 200, 255
    lut[:, 3] = (np.linspace(0, 1, 256) ** 0.7 * 255 * opacity).astype(np.uint8)
    lut[:32, 3] = 0
    return lut


STATUS_COLORS = {"confirmed": (60, 220, 90), "rejected": (150, 150, 150), "unsure": (255, 190, 30)}
STATUS_PEN = {"unreviewed": Qt.DashLine, "confirmed": Qt.SolidLine, "rejected": Qt.DotLine, "unsure": Qt.DashDotLine}


def marker_color(row) -> QColor:
    """An unreviewed finding in its malignancy colour; a reviewed one in its status colour."""
    rgb = STATUS_COLORS.get(getattr(row, "status", "unreviewed"))
    return QColor(*rgb) if rgb else malignancy_color(row.p_malignant)


def marker_pen(row) -> QPen:
    status = getattr(row, "status", "unreviewed")
    pen = QPen(marker_color(row))
    pen.setWidthF(3.0 if status == "confirmed" else 2.0 if status != "rejected" else 1.5)
    pen.setStyle(STATUS_PEN[status])
    pen.setCosmetic(True)
    return pen


def mask_colors(state) -> np.ndarray:
    """RGBA per mask label: its finding's marker colour, half transparent (label 0: clear)."""
    masks = state.review.masks
    lut = np.zeros((max(masks.ids, default=0) + 1, 4), dtype=np.uint8)
    findings = {f.id: f for f in state.review.findings}
    for label, fid in masks.ids.items():
        f = findings.get(fid)
        if f is not None:
            c = marker_color(f)
            lut[label] = (c.red(), c.green(), c.blue(), 60 if f.status == "rejected" else 130)
    return lut


class _PlaneBox(pg.ViewBox):
    scrolled = Signal(int)
    clicked = Signal(float, float)
    shift_clicked = Signal(float, float)
    window_drag = Signal(float, float, bool)  # dx, dy (pixels), finished
    ruler_drag = Signal(float, float, float, float, bool)  # start and end (mm in the plane), finished
    paint_drag = Signal(float, float, str)  # mm in the plane; "start", "move" or "end"
    marker_drag = Signal(float, float, float, float, bool)  # from, to (mm), finished
    ruler_mode = False
    paint_mode = False
    grab = None  # (x, y) -> whether a marker is there to drag (set by the SliceView)
    _dragging_marker = False

    def wheelEvent(self, ev, axis=None):  # noqa: N802 - Qt naming
        if ev.modifiers() & Qt.ControlModifier:
            return super().wheelEvent(ev, axis)
        delta = ev.delta() if hasattr(ev, "delta") else ev.angleDelta().y()
        self.scrolled.emit(1 if delta > 0 else -1)
        ev.accept()

    def mouseClickEvent(self, ev):  # noqa: N802
        if ev.button() == Qt.LeftButton:
            p = self.mapSceneToView(ev.scenePos())
            shift = ev.modifiers() & Qt.ShiftModifier
            if self.paint_mode and not shift:  # a click is one dab
                self.paint_drag.emit(p.x(), p.y(), "start")
                self.paint_drag.emit(p.x(), p.y(), "end")
            else:
                (self.shift_clicked if shift else self.clicked).emit(p.x(), p.y())
            ev.accept()
        else:
            ev.ignore()

    def mouseDragEvent(self, ev, axis=None):  # noqa: N802
        a, b = self.mapSceneToView(ev.buttonDownScenePos()), self.mapSceneToView(ev.scenePos())
        if ev.button() == Qt.RightButton:
            d = ev.screenPos() - ev.lastScreenPos()
            self.window_drag.emit(d.x(), d.y(), ev.isFinish())
            ev.accept()
        elif ev.button() == Qt.LeftButton and self.paint_mode:
            if ev.isStart():
                self.paint_drag.emit(a.x(), a.y(), "start")
            self.paint_drag.emit(b.x(), b.y(), "end" if ev.isFinish() else "move")
            ev.accept()
        elif ev.button() == Qt.LeftButton and self.ruler_mode:
            self.ruler_drag.emit(a.x(), a.y(), b.x(), b.y(), ev.isFinish())
            ev.accept()
        else:
            if ev.button() == Qt.LeftButton and ev.isStart():
                self._dragging_marker = bool(self.grab and self.grab(a.x(), a.y()))
            if ev.button() == Qt.LeftButton and self._dragging_marker:
                self.marker_drag.emit(a.x(), a.y(), b.x(), b.y(), ev.isFinish())
                self._dragging_marker = not ev.isFinish()
                ev.accept()
                return
            super().mouseDragEvent(ev, axis)


class SliceView(pg.GraphicsLayoutWidget):
    hovered = Signal(object)  # voxel (index, row, col) under the mouse, or None
    maximise = Signal()  # double click: this view alone / back to four
    measured = Signal(float)  # a ruler's length in mm
    add_requested = Signal(object)  # Shift+click: a nodule here, voxel (index, row, col)
    paint = Signal(str, object, str)  # plane, voxel (index, row, col; fractional), "start"/"move"/"end"
    picked = Signal(str)  # a marker was grabbed to move or resize: its finding's id

    def __init__(self, state: ViewerState, plane: str, parent=None):
        super().__init__(parent)
        assert plane in PLANES
        self.state, self.plane = state, plane
        self.setBackground("k")
        self.box = _PlaneBox(lockAspect=True, invertY=True, enableMenu=False)
        self.ci.addItem(self.box)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.overlay = pg.ImageItem(axisOrder="row-major")
        self.masks = pg.ImageItem(axisOrder="row-major")  # the reader's masks, RGBA
        self.box.addItem(self.image)
        self.box.addItem(self.overlay)
        self.box.addItem(self.masks)
        self._masks_drawn = None
        brush_pen = QPen(QColor(255, 255, 255, 200))
        brush_pen.setCosmetic(True)
        brush_pen.setStyle(Qt.DashLine)
        self.brush = QGraphicsEllipseItem()  # the brush's outline under the mouse
        self.brush.setPen(brush_pen)
        self.brush.setVisible(False)
        self.box.addItem(self.brush, ignoreBounds=True)
        self.marker_shapes: list[tuple] = []  # (row, item, x, y, r) of the markers drawn
        self._grabbed = None  # (mode "move" / "rim", row, item, x, y, r) while a marker is dragged
        pen = pg.mkPen((255, 200, 0, 150), width=1)
        self.hline = pg.InfiniteLine(angle=0, pen=pen, movable=False)
        self.vline = pg.InfiniteLine(angle=90, pen=pen, movable=False)
        self.box.addItem(self.hline, ignoreBounds=True)
        self.box.addItem(self.vline, ignoreBounds=True)
        self.markers: list[QGraphicsEllipseItem] = []
        self.bands: list[QGraphicsRectItem] = []  # interpolated slices, in coronal and sagittal
        self.ruler_line = pg.PlotDataItem(pen=pg.mkPen((255, 120, 255), width=2), symbol="o", symbolSize=5,
                                          symbolBrush=(255, 120, 255))
        self.ruler_text = pg.TextItem(color=(255, 160, 255), anchor=(0, 1))
        self.box.addItem(self.ruler_line, ignoreBounds=True)
        self.box.addItem(self.ruler_text, ignoreBounds=True)
        self.ruler: tuple[int, tuple[float, float, float, float]] | None = None  # (slice, x0, y0, x1, y1)
        self._drawn = None  # what the image and markers show now, to redraw only on change
        self._cursor_at_press = None
        self.title = QLabel(plane, self)
        self.title.setStyleSheet("color: #ddd; background: transparent; font-weight: bold;")
        self.letters = {k: QLabel("", self) for k in ("left", "right", "top", "bottom")}
        for lab in self.letters.values():
            lab.setStyleSheet("color: #f0c000; background: transparent; font-weight: bold;")
        self.box.scrolled.connect(lambda d: self.state.step(self.plane, d))
        self.box.clicked.connect(self._clicked)
        self.box.shift_clicked.connect(lambda x, y: self.add_requested.emit(self._to_voxel(x, y)))
        self.box.window_drag.connect(self._window_drag)
        self.box.ruler_drag.connect(self._ruler_drag)
        self.box.paint_drag.connect(lambda x, y, phase: self.paint.emit(self.plane, self._to_voxel(x, y), phase))
        self.box.grab = self._grab
        self.box.marker_drag.connect(self._marker_drag)
        state.masks_changed.connect(self._draw_masks)
        state.review_changed.connect(lambda: self._draw_masks(force=True))  # (colours follow statuses)
        self.scene().sigMouseMoved.connect(self._mouse_moved)
        state.volume_changed.connect(self._volume_changed)
        state.cursor_changed.connect(self.refresh)
        state.window_changed.connect(self._levels)
        state.findings_changed.connect(lambda: self.refresh(force=True))
        state.review_changed.connect(self._draw_markers)
        state.overlay_changed.connect(lambda: self.refresh(force=True))
        state.display_changed.connect(self._display_changed)

    # -- geometry --------------------------------------------------------------------
    def _mm(self, row: float, col: float) -> tuple[float, float]:
        sr, sc = self.state.plane_spacing(self.plane)
        return col * sc, row * sr

    def _volume_changed(self):
        vol = self.state.volume
        letters = orientation_letters(vol.direction)  # +col, +row, +index
        right = {"axial": letters[0], "coronal": letters[0], "sagittal": letters[1]}[self.plane]
        down = {"axial": letters[1], "coronal": OPPOSITE[letters[2]], "sagittal": OPPOSITE[letters[2]]}[self.plane]
        for key, text in (("right", right), ("left", OPPOSITE[right]), ("bottom", down), ("top", OPPOSITE[down])):
            self.letters[key].setText(text)
        self.ruler = None
        self._draw_bands()
        self.refresh(force=True)
        self.reset_zoom()

    def reset_zoom(self):
        self.box.autoRange(padding=0.02)

    def ensure_visible(self, irc):
        """Pan (keeping the zoom) so that the voxel lies well inside the view."""
        row, col = self.state.to_plane(self.plane, irc)
        x, y = self._mm(row + 0.5, col + 0.5)
        (x0, x1), (y0, y1) = self.box.viewRange()
        mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        if not (x0 + mx <= x <= x1 - mx and y0 + my <= y <= y1 - my):
            self.box.translateBy(x=x - (x0 + x1) / 2, y=y - (y0 + y1) / 2)

    def _draw_bands(self):
        """Slices made by interpolation, marked across the coronal and sagittal views."""
        for b in self.bands:
            self.box.removeItem(b)
        self.bands = []
        vol = self.state.volume
        if self.plane == "axial" or not vol.interpolated_slices:
            return
        top = vol.shape[0] - 1
        sr, sc = self.state.plane_spacing(self.plane)
        width = vol.shape[2] if self.plane == "coronal" else vol.shape[1]
        runs = np.split(np.array(vol.interpolated_slices), np.flatnonzero(np.diff(vol.interpolated_slices) > 1) + 1)
        for run in runs:
            row0 = top - int(run[-1])  # displayed rows run head to foot
            band = QGraphicsRectItem(0, row0 * sr, width * sc, len(run) * sr)
            band.setPen(QPen(Qt.NoPen))
            band.setBrush(QColor(255, 150, 0, 70))
            band.setToolTip(f"{len(run)} interpolated slice(s): no measured data")
            self.box.addItem(band, ignoreBounds=True)
            self.bands.append(band)

    def resizeEvent(self, ev):  # noqa: N802
        super().resizeEvent(ev)
        if not hasattr(self, "letters"):  # pyqtgraph resizes during its own __init__
            return
        w, h = self.width(), self.height()
        self.title.move(6, 4)
        self.letters["left"].move(6, h // 2 - 8)
        self.letters["right"].move(w - 16, h // 2 - 8)
        self.letters["top"].move(w // 2 - 4, 4)
        self.letters["bottom"].move(w // 2 - 4, h - 22)

    # -- drawing ---------------------------------------------------------------------
    def _levels(self):
        c, w = self.state.window
        self.image.setLevels((c - w / 2, c + w / 2))

    def refresh(self, force: bool = False):
        """Moving the cursor within this plane only moves the crosshair; the image and markers are
        redrawn when the plane itself (or what is shown on it) changes."""
        st = self.state
        if st.volume is None:
            return
        axis = PLANES.index(self.plane)
        key = (id(st.volume), int(st.cursor[axis]))
        if force or key != self._drawn:
            self._drawn = key
            self._draw_image()
            self._draw_markers()
        row, col = st.to_plane(self.plane, st.cursor)
        x, y = self._mm(row + 0.5, col + 0.5)
        self.hline.setPos(y)
        self.vline.setPos(x)
        title = f"{self.plane}  {st.cursor[axis] + 1}/{st.volume.shape[axis]}"
        interpolated = self.plane == "axial" and int(st.cursor[0]) in st.volume.interpolated_slices
        self.title.setText(title + ("  — interpolated slice, no measured data" if interpolated else ""))
        self.title.setStyleSheet("background: transparent; font-weight: bold; color: "
                                 + ("#ff9a00;" if interpolated else "#ddd;"))
        self.title.adjustSize()
        self._draw_ruler()

    def _draw_image(self):
        st = self.state
        img = st.plane_image(self.plane)
        sr, sc = st.plane_spacing(self.plane)
        rect = QRectF(0, 0, img.shape[1] * sc, img.shape[0] * sr)
        c, w = st.window
        self.image.setImage(img, autoLevels=False, levels=(c - w / 2, c + w / 2))
        self.image.setRect(rect)
        ov = st.plane_overlay(self.plane) if st.seg_visible else None
        self.overlay.setVisible(ov is not None)
        if ov is not None:
            self.overlay.setImage(ov, autoLevels=False, levels=(0, 255), lut=overlay_lut(st.seg_opacity))
            self.overlay.setRect(rect)
        self.masks.setRect(rect)
        self._draw_masks(force=True)

    def _draw_masks(self, force: bool = False):
        """The masks on this plane, each in its finding's colour; redrawn when voxels changed."""
        st = self.state
        labels = st.plane_masks(self.plane) if st.masks_visible and st.volume is not None else None
        if labels is None:
            self.masks.setVisible(False)
            return
        axis = PLANES.index(self.plane)
        key = (id(st.review.masks), st.review.masks.version, int(st.cursor[axis]))
        if not force and key == self._masks_drawn:
            return
        self._masks_drawn = key
        self.masks.setImage(mask_colors(st)[labels], autoLevels=False, levels=(0, 255))
        self.masks.setVisible(True)

    def _draw_markers(self):
        for m in self.markers:
            self.box.removeItem(m)
        self.markers = []
        self.marker_shapes = []
        st = self.state
        for d in st.visible():
            radius = max(d.diameter_mm, 3.0) / 2  # a point of unmeasured size: a small marker
            depth = st.depth_mm(self.plane, d.center_irc)
            if depth >= radius:
                continue
            r = max(1.5, float(np.sqrt(radius**2 - depth**2))) + 2.0  # drawn just outside the nodule
            row, col = st.to_plane(self.plane, d.center_irc)
            x, y = self._mm(row + 0.5, col + 0.5)
            # the detector's findings as circles; the reader's (added, imported) as squares
            shape = QGraphicsEllipseItem if d.source == "detector" else QGraphicsRectItem
            item = shape(x - r, y - r, 2 * r, 2 * r)
            item.setPen(marker_pen(d))
            mal = "no malignancy model" if d.p_malignant is None else f"p_malignant {d.p_malignant:.2f}"
            p_nod = "" if d.p_nodule is None else f"p_nodule {d.p_nodule:.2f}, "
            item.setToolTip(f"{d.status} ({d.source}): {p_nod}{mal}, {d.diameter_mm:.1f} mm ({d.size_category})")
            self.box.addItem(item)
            self.markers.append(item)
            self.marker_shapes.append((d, item, x, y, r))

    # -- interaction -----------------------------------------------------------------
    def _to_voxel(self, x_mm: float, y_mm: float):
        sr, sc = self.state.plane_spacing(self.plane)
        return self.state.from_plane(self.plane, y_mm / sr - 0.5, x_mm / sc - 0.5)

    def _clicked(self, x, y):
        if self.state.volume is not None and not self.state.ruler_mode:
            self._cursor_at_press = self.state.cursor.copy()
            self.state.set_cursor(self._to_voxel(x, y))

    def _grab(self, x: float, y: float) -> bool:
        """Whether a drag from (x, y) mm takes a marker: by its rim (within 6 pixels) to resize
        it, from inside to move it."""
        px = max(self.box.viewPixelSize())
        best = None
        for row, item, cx, cy, r in self.marker_shapes:
            d = float(np.hypot(x - cx, y - cy))
            if abs(d - r) <= 6 * px:
                best = ("rim", row, item, cx, cy, r)
                break
            if d < r and best is None:
                best = ("move", row, item, cx, cy, r)
        self._grabbed = best
        if best is not None:
            self.picked.emit(best[1].id)
        return best is not None

    def _marker_drag(self, x0, y0, x1, y1, finished):
        """The grabbed marker follows the mouse; at the release the finding is moved or resized
        (one undoable step)."""
        if self._grabbed is None:
            return
        mode, row, item, cx, cy, r = self._grabbed
        if mode == "move":
            item.setPos(x1 - x0, y1 - y0)
        else:
            r1 = max(1.5, float(np.hypot(x1 - cx, y1 - cy)))
            item.setRect(cx - r1, cy - r1, 2 * r1, 2 * r1)
        if not finished:
            return
        self._grabbed = None
        review, vol = self.state.review, self.state.volume
        if mode == "move":
            delta = np.subtract(self._to_voxel(x1, y1), self._to_voxel(x0, y0))
            review.move(row.id, vol.irc_to_xyz(np.add(row.center_irc, delta)))
        else:
            # the marker is drawn 2 mm outside the nodule's section at this depth
            inplane = max(0.5, float(np.hypot(x1 - cx, y1 - cy)) - 2.0)
            review.resize(row.id, 2.0 * float(np.hypot(inplane, self.state.depth_mm(self.plane, row.center_irc))))

    def _display_changed(self):
        self.hline.setVisible(self.state.crosshair_visible)
        self.vline.setVisible(self.state.crosshair_visible)
        self.box.ruler_mode = self.state.ruler_mode
        self.box.paint_mode = bool(self.state.paint_mode)
        if not self.state.paint_mode:
            self.brush.setVisible(False)
        if not self.state.ruler_mode:
            self.ruler = None
        self._draw_ruler()

    def _ruler_drag(self, x0, y0, x1, y1, finished):
        axis = PLANES.index(self.plane)
        self.ruler = (int(self.state.cursor[axis]), (x0, y0, x1, y1))
        self._draw_ruler()
        if finished:
            self.measured.emit(self.ruler_length())

    def ruler_length(self) -> float:
        """The ruler's length in mm (data coordinates are millimetres in the plane)."""
        if self.ruler is None:
            return 0.0
        x0, y0, x1, y1 = self.ruler[1]
        return float(np.hypot(x1 - x0, y1 - y0))

    def _draw_ruler(self):
        axis = PLANES.index(self.plane)
        shown = self.ruler is not None and self.ruler[0] == int(self.state.cursor[axis])
        self.ruler_line.setVisible(shown)
        self.ruler_text.setVisible(shown)
        if shown:
            x0, y0, x1, y1 = self.ruler[1]
            self.ruler_line.setData([x0, x1], [y0, y1])
            self.ruler_text.setText(f"{self.ruler_length():.1f} mm")
            self.ruler_text.setPos(x1, y1)

    def _window_drag(self, dx, dy, finished):
        c, w = self.state.window
        self.state.set_window(c - dy * 2.0, w + dx * 4.0)

    def mouseDoubleClickEvent(self, ev):  # noqa: N802
        # the first click of the double click moved the cursor: a double click only maximises
        if self._cursor_at_press is not None:
            self.state.set_cursor(self._cursor_at_press)
            self._cursor_at_press = None
        self.maximise.emit()
        ev.accept()

    def _mouse_moved(self, pos):
        if self.state.volume is None:
            return
        p = self.box.mapSceneToView(pos)
        if self.state.paint_mode:
            r = self.state.brush_mm
            self.brush.setRect(p.x() - r, p.y() - r, 2 * r, 2 * r)
            self.brush.setVisible(True)
        irc = np.rint(self._to_voxel(p.x(), p.y())).astype(int)
        inside = bool(np.all(irc >= 0) and np.all(irc < np.array(self.state.volume.shape)))
        self.hovered.emit(irc if inside else None)
