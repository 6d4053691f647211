"""3D view: a semi-transparent lung surface (from the lung mask) with the nodules as spheres
coloured by malignancy and the patient's directions (R/L, A/P, S/I) at the ends of the axes;
drag to rotate, wheel to zoom, click a nodule to go there. The camera is set for a new scan
only: changing the threshold or the findings leaves it where the reader turned it.

It is a QOpenGLWindow in a window container, not a QOpenGLWidget: a QOpenGLWidget makes Qt
composite the whole main window through OpenGL, which under software GL (Xvfb, remote desktops)
slowed every slice-view repaint twentyfold (12 instead of 240 frames/s, measured)."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QMatrix4x4, QVector4D
from PySide6.QtWidgets import QLabel

from lungview.core.geometry import orientation_letters
from lungview.gui.slice_view import OPPOSITE, marker_color
from lungview.gui.state import ViewerState

SURFACE_MM = 5.0  # grid of the lung surface mesh


def placeholder(text: str) -> QLabel:
    label = QLabel(text)
    label.setAlignment(Qt.AlignCenter)
    label.setWordWrap(True)
    label.setStyleSheet("color: #aaa; background: #0a0a10;")
    label.gl = None
    return label


def make_3d_view(state: ViewerState):
    """A widget holding the 3D view; its `gl` attribute is the view itself (None without GL)."""
    from PySide6.QtGui import QGuiApplication, QOpenGLContext

    context = QOpenGLContext()
    if QGuiApplication.platformName() in ("offscreen", "minimal") or not context.create():
        return placeholder("3D view unavailable: no OpenGL on this display")
    try:
        from PySide6.QtWidgets import QWidget

        gl_window = View3D(state)
        container = QWidget.createWindowContainer(gl_window)
        container.setMinimumSize(200, 150)
        container.gl = gl_window
        gl_window.container = container
        return container
    except Exception as exc:  # noqa: BLE001 - no OpenGL here: the slice views still work
        label = placeholder(f"3D view unavailable ({type(exc).__name__}: {exc})")
        label.gl = None
        return label


def lung_surface(lung_small: np.ndarray, step: int, spacing_xyz) -> tuple[np.ndarray, np.ndarray] | None:
    """Vertices (mm, x-y-z) and faces of the lung mask's surface on a coarse grid."""
    import pyqtgraph as pg

    sx, sy, sz = spacing_xyz
    fz = max(1, int(round(SURFACE_MM / sz)))
    fxy = max(1, int(round(SURFACE_MM / (sx * step))))
    small = lung_small[::fz, ::fxy, ::fxy].astype(np.float32)
    if not small.any():
        return None
    padded = np.pad(small, 1)
    # pyqtgraph's isosurface indexes (x, y, z) = array axes; ours are (index, row, col).
    verts, faces = pg.isosurface(padded, 0.5)
    verts = verts - 1.0
    scale = np.array([sz * fz, sy * step * fxy, sx * step * fxy])
    verts = verts * scale
    return verts[:, ::-1].copy(), faces  # to (x, y, z)


class View3D:  # the real class is built lazily so that importing this module needs no OpenGL
    def __new__(cls, state: ViewerState):
        import pyqtgraph.opengl as gl
        from pyqtgraph.opengl.GLViewWidget import GLViewMixin
        from PySide6.QtOpenGL import QOpenGLWindow

        class _View(GLViewMixin, QOpenGLWindow):
            def __init__(self, state):
                super().__init__()
                self.container = None
                self.state = state
                self.setBackgroundColor((10, 10, 16))
                self.surface = None
                self._surface_of = None  # the lung mask the surface was built from
                self.spheres = []
                self.labels = []
                self.centers = np.zeros((0, 3))
                self.build_seconds = 0.0
                self._press = None
                state.volume_changed.connect(self.new_volume)
                state.findings_changed.connect(self.rebuild)
                state.review_changed.connect(self.rebuild)  # (the surface is kept: spheres only)

            def rect(self):  # what pyqtgraph's text items ask of a GLViewWidget
                from PySide6.QtCore import QRect

                return QRect(0, 0, self.width(), self.height())

            def _mm(self, irc):
                sx, sy, sz = self.state.volume.spacing_xyz
                i, r, c = irc
                return np.array([c * sx, r * sy, i * sz])

            def new_volume(self):
                """A new scan: orientation labels and the camera; findings follow."""
                for item in self.labels:
                    self.removeItem(item)
                self.labels = []
                st = self.state
                if st.volume is None:
                    return
                extent = self._mm(np.array(st.volume.shape) - 1)
                letters = orientation_letters(st.volume.direction)  # +col, +row, +index
                mid = extent / 2
                for axis, letter in zip((0, 1, 2), letters):  # 3D x = col, y = row, z = index
                    for sign, text in ((1, letter), (-1, OPPOSITE[letter])):
                        pos = mid.copy()
                        pos[axis] = mid[axis] + sign * (extent[axis] / 2 + 12.0)
                        label = gl.GLTextItem(pos=pos, text=text, color=(240, 192, 0, 255))
                        self.addItem(label)
                        self.labels.append(label)
                self.opts["center"] = pg_vector(mid)
                self.setCameraPosition(distance=float(np.linalg.norm(extent)) * 1.1, elevation=15, azimuth=-90)
                self.rebuild()

            def rebuild(self):
                """The lung surface when the lung mask changed; the spheres of the visible
                findings every time. The camera stays where the reader put it."""
                import time

                t0 = time.perf_counter()
                st = self.state
                f = st.findings
                if f.lung_small is not self._surface_of or st.volume is None:
                    if self.surface is not None:
                        self.removeItem(self.surface)
                    self.surface, self._surface_of = None, f.lung_small
                    if st.volume is not None and f.lung_small is not None:
                        mesh = lung_surface(f.lung_small, f.lung_step, st.volume.spacing_xyz)
                        if mesh is not None:
                            md = gl.MeshData(vertexes=mesh[0], faces=mesh[1])
                            self.surface = gl.GLMeshItem(meshdata=md, color=(0.55, 0.7, 1.0, 0.12), smooth=True,
                                                         shader="balloon", glOptions="additive")
                            self.addItem(self.surface)
                dets = st.visible() if st.volume is not None else []
                masks = st.review.masks
                masked = {d.id: masks.changed_at(d.id) for d in dets if masks is not None and masks.has(d.id)}
                shapes = [(d.id, d.center_xyz, d.diameter_mm, d.source, masked.get(d.id)) for d in dets]
                if shapes and shapes == getattr(self, "_shapes", None):  # a status changed: recolour only
                    for item, d in zip(self.spheres, dets):
                        item.setColor(self._color(d, d.id in masked))
                    self.update()
                    self.build_seconds = time.perf_counter() - t0
                    return
                self._shapes = shapes
                for item in self.spheres:
                    self.removeItem(item)
                self.spheres = []
                if st.volume is None:
                    return
                self.centers = np.array([self._mm(d.center_irc) for d in dets]).reshape(-1, 3)
                for d, c in zip(dets, self.centers):
                    # a finding with a mask as its mesh; else the detector's as spheres, the
                    # reader's as octahedra; colour by status
                    mesh = self._mask_mesh(d.id) if d.id in masked else None
                    if mesh is not None:
                        md = gl.MeshData(vertexes=mesh[0], faces=mesh[1])
                        item = gl.GLMeshItem(meshdata=md, color=self._color(d, True), smooth=True, shader="shaded")
                    else:
                        rows, cols = (10, 16) if d.source == "detector" else (2, 4)
                        md = gl.MeshData.sphere(rows=rows, cols=cols, radius=max(1.5, d.diameter_mm / 2))
                        item = gl.GLMeshItem(meshdata=md, color=self._color(d), smooth=d.source == "detector",
                                             shader="shaded")
                        item.translate(*c)
                    self.addItem(item)
                    self.spheres.append(item)
                self.build_seconds = time.perf_counter() - t0

            def _mask_mesh(self, fid: str):
                """Vertices (mm, x-y-z) and faces of a finding's mask surface, cached until its
                voxels change."""
                import pyqtgraph as pg

                masks = self.state.review.masks
                key = (id(masks), masks.changed_at(fid))
                cache = self.__dict__.setdefault("_meshes", {})  # finding id -> (key, mesh)
                if cache.get(fid, (None,))[0] != key:
                    box, crop = masks.mask(fid)
                    verts, faces = pg.isosurface(np.pad(crop, 1).astype(np.float32), 0.5)
                    start = np.array([s.start for s in box], dtype=np.float64) - 1.0
                    verts = (verts + start) * np.asarray(self.state.volume.spacing_irc)  # (index, row, col) mm
                    cache[fid] = (key, (verts[:, ::-1].copy(), faces))
                return cache[fid][1]

            @staticmethod
            def _color(d, mask: bool = False):
                col = marker_color(d)
                alpha = 0.35 if d.status == "rejected" else 0.8 if mask else 0.95
                return (col.redF(), col.greenF(), col.blueF(), alpha)

            def project(self, points: np.ndarray) -> np.ndarray:
                """Screen pixels (x, y) of mm points."""
                w, h = self.width(), self.height()
                viewport = (0, 0, self.deviceWidth(), self.deviceHeight())
                m = QMatrix4x4(self.projectionMatrix(viewport, viewport)) * QMatrix4x4(self.viewMatrix())
                out = []
                for p in points:
                    v = m.map(QVector4D(float(p[0]), float(p[1]), float(p[2]), 1.0))
                    wv = v.w() or 1e-9
                    out.append(((v.x() / wv + 1) / 2 * w, (1 - v.y() / wv) / 2 * h))
                return np.array(out).reshape(-1, 2)

            def nodule_at(self, x: float, y: float, tolerance: float = 20.0) -> int | None:
                if not len(self.centers):
                    return None
                d = np.linalg.norm(self.project(self.centers) - np.array([x, y]), axis=1)
                k = int(np.argmin(d))
                return k if d[k] <= tolerance else None

            def mouseDoubleClickEvent(self, ev):  # noqa: N802
                self.parent_window_maximise()

            def parent_window_maximise(self):
                win = self.container.window() if self.container is not None else None
                if hasattr(win, "toggle_maximised"):
                    win.toggle_maximised(self.container)

            def mousePressEvent(self, ev):  # noqa: N802
                self._press = ev.position()
                super().mousePressEvent(ev)

            def mouseReleaseEvent(self, ev):  # noqa: N802
                pos = ev.position()
                if self._press is not None and (pos - self._press).manhattanLength() < 4:
                    k = self.nodule_at(pos.x(), pos.y())
                    if k is not None:
                        self.state.set_cursor(self.state.visible()[k].center_irc)
                self._press = None
                super().mouseReleaseEvent(ev)

        return _View(state)


def pg_vector(v):
    from pyqtgraph import Vector

    return Vector(float(v[0]), float(v[1]), float(v[2]))
