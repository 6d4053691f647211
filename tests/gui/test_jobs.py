"""No viewer job can leave the window stuck: loads and detections cancelled, superseded and
repeated as a reader does it, and the window closed in the middle of a load."""

import os
import subprocess
import sys
import textwrap
import time

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

import lungview.io.dicom
from lungview.synthetic import make_phantom, write_phantom
from tests.conftest import REPO


@pytest.fixture(scope="module")
def dicom_scan(tmp_path_factory):
    ph = make_phantom(4, size=128, slices=80, pixel_mm=2.8, slice_mm=2.5, nodules=3, kinds=("solid",),
                      diameter_mm=(12, 20))
    return write_phantom(ph, tmp_path_factory.mktemp("dicom"), "dicom")


@pytest.fixture
def slow_disk(monkeypatch):
    """Every slice takes 20 ms to arrive, as from a network share: loads last long enough to
    be interrupted by hand."""
    real = lungview.io.dicom.read_stored_pixels

    def slow(h):
        time.sleep(0.02)
        return real(h)

    monkeypatch.setattr(lungview.io.dicom, "read_stored_pixels", slow)


def idle(w) -> bool:
    return not w.jobs and not w.progress.isVisible() and not w.cancel_button.isVisible()


def boxes(w):
    return [b for b in w.findChildren(QMessageBox) if b.isVisible()]


def test_esc_during_a_load_cancels_quietly(qtbot, make_window, dicom_scan, slow_disk):
    w = make_window(interactive=True)
    w.open_path(dicom_scan)
    qtbot.waitUntil(lambda: w.message.text().startswith("decoding slices"), timeout=20000)
    qtbot.keyClick(w, Qt.Key_Escape)
    qtbot.waitUntil(lambda: idle(w), timeout=10000)
    assert w.message.text() == "cancelled" and w.state.volume is None
    assert boxes(w) == []  # no "cancelled" error dialog


def test_opening_a_second_scan_during_detection(qtbot, make_window, dicom_scan, gui_scan):
    second, ph = gui_scan
    w = make_window(demo_models=True)
    w.open_path(dicom_scan)
    qtbot.waitUntil(lambda: w.message.text().startswith("segmentation"), timeout=60000)
    first_job = w.detect_job
    with qtbot.waitSignal(w.detection_done, timeout=120000, check_params_cb=lambda ok: ok) as sig:
        w.open_path(second)
    assert sig.args == [True] and w.detect_job != first_job
    assert w.state.volume.shape == ph.volume.shape and w.state.findings.detections
    qtbot.waitUntil(lambda: idle(w), timeout=10000)
    assert boxes(w) == []


def test_rerunning_detection_three_times_fast(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(demo_models=True)
    with qtbot.waitSignal(w.detection_done, timeout=120000):
        w.open_path(path)
    runs = w.pipeline_runs
    with qtbot.waitSignal(w.detection_done, timeout=120000, check_params_cb=lambda ok: ok):
        for _ in range(3):
            qtbot.keyClick(w, Qt.Key_D, Qt.ControlModifier)
    qtbot.waitUntil(lambda: idle(w), timeout=20000)
    assert 1 <= w.pipeline_runs - runs <= 2  # the second request was dropped before it ran
    assert w.state.findings.detections and boxes(w) == []


def test_stale_results_do_not_leave_the_progress_bar(qtbot, make_window, gui_scan):
    """Two opens in a row: the first load's result arrives stale and must still end its job."""
    path, _ = gui_scan
    w = make_window(detect=False)
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        w.open_path(path)
        w.open_path(path)
    qtbot.waitUntil(lambda: idle(w), timeout=10000)  # the dropped first load ended its job too
    assert w.state.volume is not None and w.message.text() != "cancelled"


def test_job_ids_are_unique_across_workers(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(demo_models=True)
    with qtbot.waitSignal(w.detection_done, timeout=120000):
        w.open_path(path)
    assert w.load_job != w.detect_job
    assert not set(w.loader.ran_on) & set(w.compute.ran_on)


def test_screenshot_exits_2_when_detection_fails(tmp_path, gui_scan):
    path, _ = gui_scan
    bad = tmp_path / "cls_bad.pt"
    bad.write_bytes(b"not a checkpoint")
    shot = tmp_path / "shot.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", LUNGVIEW_HOME=str(tmp_path / "home"))
    proc = subprocess.run([sys.executable, "-m", "lungview", str(path), "--cls-model", str(bad), "--device", "cpu",
                           "--screenshot", str(shot)], capture_output=True, text=True, timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "detection failed" in proc.stderr and str(bad) in proc.stderr and not shot.exists()


CLOSE_DURING_LOAD = """
import sys, time, threading
import lungview.io.dicom as dicom
real = dicom.read_stored_pixels
def slow(h):
    time.sleep(0.02)
    return real(h)
dicom.read_stored_pixels = slow
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from lungview.cli import viewer_parser
from lungview.gui import app as gui_app
import lungview.gui.main_window as mw
made = []
original = mw.MainWindow.__init__
def init(self, *a, **k):
    original(self, *a, **k)
    made.append(self)
    QTimer.singleShot(50, close_when_loading)
mw.MainWindow.__init__ = init
def close_when_loading():
    w = made[0]
    if w.message.text().startswith("decoding slices"):
        w.close()  # as the window's close button does
    else:
        QTimer.singleShot(20, close_when_loading)
code = gui_app.run(viewer_parser().parse_args([sys.argv[1], "--device", "cpu"]))
left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive()]
visible = [type(x).__name__ for x in QApplication.topLevelWidgets() if x.isVisible()]
print("exit", code, "visible", visible, "threads", left, "loaded", made[0].state.volume is not None)
"""


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs an X server (CI runs the suite under xvfb-run)")
def test_closing_the_window_during_a_load_ends_the_process(tmp_path, dicom_scan):
    """The whole application on the X display, 3D view included, closed while it loads."""
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", LUNGVIEW_HOME=str(tmp_path / "home"))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CLOSE_DURING_LOAD), str(dicom_scan)],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "exit 0 visible [] threads [] loaded False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert time.monotonic() - t0 < 30 and "Traceback" not in proc.stderr
