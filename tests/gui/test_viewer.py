import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from lungview.gui.panels import COLUMNS
from tests.conftest import REPO
from tests.gui.conftest import book_options, center_of


def _open(qtbot, w, path):
    with qtbot.waitSignal(w.scan_loaded, timeout=30000) as sig:
        w.open_path(path)
    assert sig.args == [True]


def test_open_scroll_click_and_window_level(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    st = w.state
    assert st.volume.shape == ph.volume.shape
    assert tuple(st.cursor) == tuple(np.array(ph.volume.shape) // 2)
    i0 = st.cursor[0]
    qtbot.keyClick(w, Qt.Key_Up)
    assert st.cursor[0] == i0 + 1
    qtbot.keyClick(w, Qt.Key_PageDown)
    assert st.cursor[0] == i0 - 9
    # Clicking in the axial view moves the cursor there; the other views follow.
    axial, coronal = w.views["axial"], w.views["coronal"]
    target = (st.cursor[0], 60, 130)
    x, y = center_of(axial, target)
    qtbot.mouseClick(axial.viewport(), Qt.LeftButton, pos=QPoint(int(x), int(y)))
    assert abs(st.cursor[1] - 60) <= 1 and abs(st.cursor[2] - 130) <= 1
    assert abs(coronal.vline.value() - (st.cursor[2] + 0.5) * st.volume.spacing_xyz[0]) < 1e-6
    # Status bar: HU, xyz, irc under the cursor.
    text = w.position.text()
    assert f"HU {st.hu_at_cursor():5d}" in text and "xyz (" in text and f"irc ({st.cursor[0]}" in text
    # Window/level presets and right-drag.
    qtbot.keyClick(w, Qt.Key_2)
    assert st.window == (40.0, 400.0)
    lo, hi = axial.image.levels
    assert (lo, hi) == (-160.0, 240.0)
    qtbot.keyClick(w, Qt.Key_1)
    assert st.window == (-600.0, 1500.0)


def test_aspect_follows_voxel_spacing(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    coronal = w.views["coronal"]
    rect = coronal.image.mapRectToView(coronal.image.boundingRect())
    sx, _, sz = ph.volume.spacing_xyz
    assert rect.width() == ph.volume.shape[2] * sx and rect.height() == ph.volume.shape[0] * sz
    assert coronal.letters["left"].text() == "R" and coronal.letters["top"].text() == "S"


def test_detection_on_the_worker_table_slider_and_navigation(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(**book_options())
    with qtbot.waitSignal(w.detection_done, timeout=120000) as sig:
        w.open_path(path)
    assert sig.args == [True]
    assert w.compute.ran_on[w.detect_job] != threading.get_ident()
    st = w.state
    all_dets = st.findings.detections
    assert all_dets and w.panel.table.rowCount() == len(st.visible())
    w.panel.slider.setValue(0)
    assert w.panel.table.rowCount() == len(all_dets) >= len([d for d in all_dets if d.p_nodule >= 0.5])
    w.panel.slider.setValue(50)
    rows = st.visible()
    assert rows, "the book models find the phantom's large solid nodules"
    w.panel.table.selectRow(0)
    k = w.panel.table.item(0, 0).data(Qt.UserRole)
    assert tuple(st.cursor) == tuple(np.rint(rows[k].center_irc).astype(int))
    qtbot.keyClick(w, Qt.Key_N)
    assert tuple(st.cursor) == tuple(np.rint(rows[(w.detect_index)].center_irc).astype(int))
    # markers: one circle per visible nodule cut by the axial plane through it
    assert len(w.views["axial"].markers) >= 1
    # overlay toggle
    qtbot.keyClick(w, Qt.Key_S)
    assert st.seg_visible and w.views["axial"].overlay.isVisible()
    # no malignancy model: a dash, never a made-up probability; sorting keeps the rows consistent
    p_mal, p_nod = COLUMNS.index("p_mal"), COLUMNS.index("p_nod")
    assert {w.panel.table.item(r, p_mal).text() for r in range(w.panel.table.rowCount())} == {"—"}
    w.panel.table.sortItems(p_nod, Qt.AscendingOrder)
    values = [float(w.panel.table.item(r, p_nod).text().rstrip(" ⚠")) for r in range(w.panel.table.rowCount())]
    assert values == sorted(values)
    assert "book UNetWrapper" in w.panel.models.text() and not w.panel.warning.isVisible()


def test_cancel_detection_leaves_no_findings(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(**book_options())
    _open(qtbot, w, path)
    qtbot.waitUntil(lambda: w.message.text().startswith("segmentation"), timeout=60000)
    with qtbot.waitSignal(w.detection_done, timeout=60000) as sig:
        w.cancel_jobs()
    assert sig.args == [False]
    assert w.state.findings.detections == [] and w.message.text() == "cancelled"
    assert not w.progress.isVisible() and not w.cancel_button.isVisible()


def test_errors_become_messages_not_crashes(qtbot, make_window, tmp_path):
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 64)
    w = make_window(detect=False)
    with qtbot.waitSignal(w.scan_loaded, timeout=10000) as sig:
        w.open_path(bad)
    assert sig.args == [False]
    assert w.message.text().startswith(str(bad)) and "not a DICOM file" in w.message.text()
    assert w.state.volume is None


def test_help_lists_shortcuts(qtbot, make_window):
    w = make_window(detect=False)
    qtbot.keyClick(w, Qt.Key_F1)
    assert "Window / level" in w.help_box.text() and "Next / previous detection" in w.help_box.text()
    w.help_box.close()


def test_double_click_maximises_any_view(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    sag = w.views["sagittal"]
    qtbot.mouseDClick(sag.viewport(), Qt.LeftButton, pos=QPoint(50, 50))
    assert sag.isVisible() and not w.views["axial"].isVisible() and not w.view3d.isVisible()
    qtbot.mouseDClick(sag.viewport(), Qt.LeftButton, pos=QPoint(50, 50))
    assert all(v.isVisible() for v in w.views.values()) and w.view3d.isVisible()


def test_wheel_scrolls_the_view_under_the_mouse_and_recent_files(qtbot, make_window, gui_scan):
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    path, _ = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    cor = w.views["coronal"]
    r0 = w.state.cursor[1]
    pos = QPointF(cor.viewport().width() / 2, cor.viewport().height() / 2)
    ev = QWheelEvent(pos, cor.viewport().mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120), Qt.NoButton,
                     Qt.NoModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(cor.viewport(), ev)
    assert w.state.cursor[1] == r0 + 1
    assert [a.text() for a in w.recent_menu.actions()] == [str(path)]


def test_drop_and_series_picker(qtbot, make_window, gui_scan, tmp_path):
    from PySide6.QtCore import QMimeData, QPointF, QUrl
    from PySide6.QtGui import QDropEvent

    from lungview.core import CtVolume
    from lungview.io.write import write_dicom_series

    path, ph = gui_scan
    folder = tmp_path / "two"
    v = ph.volume
    write_dicom_series(v, folder / "a")
    write_dicom_series(CtVolume(hu=v.hu[:20].copy(), spacing_xyz=v.spacing_xyz, origin_xyz=v.origin_xyz,
                                series_uid="1.2.3.4.77", slice_thickness_mm=2.0), folder / "b")
    w = make_window(detect=False, interactive=True)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(folder))])
    drop = QDropEvent(QPointF(100, 100), Qt.CopyAction, mime, Qt.LeftButton, Qt.NoModifier)
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        w.dropEvent(drop)
    assert w.state.volume.shape == v.shape and w.state.volume.other_series
    dialog = w.series_dialog
    assert dialog.isVisible()
    table = dialog.table
    rows = {table.item(r, 5).text(): [table.item(r, c).text() for c in range(5)] for r in range(table.rowCount())}
    assert rows["1.2.3.4.77"][0] == "LungView phantom" and rows["1.2.3.4.77"][2] == "20"
    assert rows["1.2.3.4.77"][3] == "2.00 mm"
    shown = rows[v.series_uid]
    assert shown[0].endswith("(shown)") and shown[2] == str(v.shape[0]) and shown[3] == f"{v.spacing_xyz[2]:.2f} mm"
    # the reader picks the other series with the mouse and opens it
    other = next(r for r in range(table.rowCount()) if table.item(r, 5).text() == "1.2.3.4.77")
    rect = table.visualItemRect(table.item(other, 0))
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=rect.center())
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        qtbot.mouseClick(dialog.open_button, Qt.LeftButton)
    assert w.state.volume.shape[0] == 20 and w.state.volume.series_uid == "1.2.3.4.77"
    assert w.series_dialog is dialog  # chosen: the picker does not come back


def _in_xcb_process(name):
    """OpenGL windows need a real display: run the test again in a process on the xcb platform."""
    env = dict(os.environ, QT_QPA_PLATFORM="xcb")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"{__file__}::{name}"],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


def _red_blob(image):
    """Centre (logical pixels) and size of the red (malignant, shaded) sphere in a GL frame: the
    lung surface is blue, the orientation letters yellow."""
    arr = np.array([[image.pixelColor(x, y).getRgb()[:3] for x in range(image.width())]
                    for y in range(image.height())], dtype=int)
    r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
    red = (r > 70) & (g < 0.4 * r) & (b < 0.6 * r)
    ys, xs = np.nonzero(red)
    return (xs.mean(), ys.mean(), red.sum()) if red.any() else (None, None, 0)


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (CI runs the suite under xvfb-run)")
def test_3d_view_picks_the_sphere_where_it_is_drawn(qtbot, gui_scan):
    from PySide6.QtGui import QGuiApplication

    if QGuiApplication.platformName() != "xcb":
        _in_xcb_process("test_3d_view_picks_the_sphere_where_it_is_drawn")
        return
    import pyqtgraph.opengl as gl
    from PySide6.QtCore import QPointF
    from PySide6.QtGui import QMouseEvent

    from lungview.core.findings import Detection
    from lungview.gui.state import Findings, ViewerState
    from lungview.gui.view3d import make_3d_view

    _, ph = gui_scan
    st = ViewerState()
    view = make_3d_view(st)
    assert view.gl is not None, "the 3D view could not open an OpenGL window"
    view.resize(600, 450)
    view.show()
    st.set_volume(ph.volume)
    labels = sorted(item.text for item in view.gl.items if isinstance(item, gl.GLTextItem))
    assert labels == ["A", "I", "L", "P", "R", "S"]
    n = ph.nodules[0]
    det = Detection(n.center_xyz, n.center_irc, 30.0, 1.0, 30.0, 30.0, 0.99, 1.0, "model: test", "15-30 mm")
    m = ph.nodules[1]
    low = Detection(m.center_xyz, m.center_irc, 30.0, 1.0, 30.0, 30.0, 0.2, 0.0, "model: test", "15-30 mm")
    st.set_findings(Findings(detections=[det, low], lung_small=ph.lung_mask[:, ::2, ::2], lung_step=2))
    st.review.merge_detections([det, low])  # what the main window does with a detection run
    g = view.gl
    surface = g.surface
    assert surface is not None and len(g.spheres) == 1
    qtbot.wait(100)
    frame = g.grabFramebuffer()
    scale = frame.width() / g.width()
    x, y, count = _red_blob(frame.scaled(g.width(), g.height()))
    assert count > 20, "the sphere is not in the frame"
    # the threshold moves: spheres change, the surface and the camera stay
    g.setCameraPosition(distance=g.opts["distance"] * 0.8, azimuth=30)
    camera = (g.opts["distance"], g.opts["azimuth"], g.opts["elevation"])
    st.set_threshold(0.1)
    assert g.surface is surface and len(g.spheres) == 2
    assert (g.opts["distance"], g.opts["azimuth"], g.opts["elevation"]) == camera
    st.set_threshold(0.5)
    qtbot.wait(100)
    x, y, count = _red_blob(g.grabFramebuffer().scaled(g.width(), g.height()))
    assert count > 20 and scale > 0

    def click(px, py):
        for kind in (QMouseEvent.MouseButtonPress, QMouseEvent.MouseButtonRelease):
            ev = QMouseEvent(kind, QPointF(px, py), QPointF(px, py), Qt.LeftButton, Qt.LeftButton, Qt.NoModifier)
            (g.mousePressEvent if kind == QMouseEvent.MouseButtonPress else g.mouseReleaseEvent)(ev)

    st.set_cursor((0, 0, 0))
    click(x + 60 if x < 300 else x - 60, y)  # beside the sphere: nothing happens
    assert tuple(st.cursor) == (0, 0, 0)
    click(x, y)  # on the red pixels: the cursor goes to the nodule
    assert tuple(st.cursor) == tuple(np.rint(n.center_irc).astype(int))
    # a mask: drawn as its surface instead of the sphere, halfway between voxels in and out
    fid = st.visible()[0].id
    box = tuple(slice(int(round(v)) - 1, int(round(v)) + 2) for v in n.center_irc)
    st.review.set_mask(fid, box, np.ones((3, 3, 3), bool))
    (item,) = g.spheres
    verts = item.opts["meshdata"].vertexes()
    sx, sy, sz = ph.volume.spacing_xyz
    lo = [(box[2].start - 0.5) * sx, (box[1].start - 0.5) * sy, (box[0].start - 0.5) * sz]
    hi = [(box[2].stop - 0.5) * sx, (box[1].stop - 0.5) * sy, (box[0].stop - 0.5) * sz]
    np.testing.assert_allclose(verts.min(axis=0), lo, atol=1e-3)
    np.testing.assert_allclose(verts.max(axis=0), hi, atol=1e-3)
    view.close()
    g.destroy()  # release the GL window before the application goes
    view.deleteLater()
    qtbot.wait(50)
