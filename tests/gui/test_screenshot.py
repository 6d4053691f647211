"""Screenshots checked for the markers at the pixels where the nodules are."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PySide6.QtCore import QPointF

from lungview.gui.slice_view import malignancy_color
from tests.conftest import REPO
from tests.gui.conftest import book_options, center_of


def _ring_colors(image, cx, cy, r):
    """RGB samples on a circle of radius r (pixels) around (cx, cy)."""
    out = []
    for a in np.linspace(0, 2 * np.pi, 48, endpoint=False):
        x, y = int(round(cx + r * np.cos(a))), int(round(cy + r * np.sin(a)))
        c = image.pixelColor(x, y)
        out.append((c.red(), c.green(), c.blue()))
    return np.array(out)


def test_markers_are_drawn_where_the_nodules_are(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(**book_options())
    with qtbot.waitSignal(w.detection_done, timeout=120000):
        w.open_path(path)
    dets = w.state.visible()
    assert dets
    w._go_to(0)
    qtbot.wait(100)
    d = dets[0]
    for plane, view in w.views.items():
        image = view.grab().toImage()
        cx, cy = center_of(view, d.center_irc)
        # marker radius in pixels: the nodule's radius in this plane (+2 mm) times pixels per mm
        a = view.mapFromScene(view.box.mapViewToScene(QPointF(0.0, 0.0)))
        b = view.mapFromScene(view.box.mapViewToScene(QPointF(10.0, 0.0)))
        px_per_mm = abs(b.x() - a.x()) / 10.0
        r = (d.diameter_mm / 2 + 2.0) * px_per_mm
        want = malignancy_color(d.p_malignant)
        ring = np.vstack([_ring_colors(image, cx, cy, r + dr) for dr in (-1, 0, 1)])
        close = np.abs(ring - [want.red(), want.green(), want.blue()]).sum(axis=1) < 60
        assert close.mean() > 0.5, f"{plane}: marker colour on {close.mean():.0%} of the ring"
        # and the nodule itself is bright (soft tissue) inside the ring in the lung window
        centre = image.pixelColor(int(cx), int(cy))
        assert centre.red() > 150, plane


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (CI runs the suite under xvfb-run)")
def test_screenshot_command_with_3d_view(tmp_path, gui_scan):
    path, _ = gui_scan
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", LUNGVIEW_HOME=str(tmp_path / "home"))
    opts = book_options()
    proc = subprocess.run([sys.executable, "-m", "lungview", str(path), "--seg-model", opts["seg_model"],
                           "--cls-model", opts["cls_model"], "--device", "cpu", "--screenshot", str(shot)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PySide6.QtGui import QImage

    img = QImage(str(shot))
    assert img.width() >= 1000 and img.height() >= 700
    # the 3D view (bottom right quadrant of the views) shows the nodule's sphere in the marker
    # colour (no malignancy model: one neutral colour), which no placeholder text would
    from lungview.gui.slice_view import NO_MALIGNANCY_COLOR

    quad = np.array([img.pixelColor(x, y).getRgb()[:3] for x in range(int(img.width() * 0.36), int(img.width() * 0.66), 3)
                     for y in range(int(img.height() * 0.5), int(img.height() * 0.95), 3)])
    marker = np.abs(quad - np.array(NO_MALIGNANCY_COLOR)).sum(axis=1) < 90
    assert marker.sum() >= 10, "no sphere in the 3D view"
    assert len({tuple(c // 16) for c in quad}) > 8  # and the lung surface shading around it


def test_screenshot_of_a_bad_path_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lungview", str(tmp_path / "missing"), "--screenshot",
                           str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
