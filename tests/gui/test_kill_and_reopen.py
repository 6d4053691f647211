"""The whole reading, end to end, as the issue's "done when" says: a reader opens a DICOM scan,
runs detection, confirms a nodule (A), rejects the others (R), adds one (K), paints its mask (B,
a click) and fills the confirmed one's (G); LungView is killed with SIGKILL a second later; the
workspace then holds everything, and exports SEG, SR, .mrk.json and LUNA16 CSV that highdicom,
dciodvfy and Slicer's schema accept."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

CHILD = r"""
import json, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
import numpy as np
from PySide6.QtCore import QEventLoop, QPoint, QPointF, QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication
from lungview.gui.main_window import MainWindow, Options
from lungview.synthetic import make_phantom

scan, ws, out = sys.argv[1:4]
ph = make_phantom(12, size=192, slices=64, pixel_mm=1.8, slice_mm=4.0, nodules=3, kinds=("solid",),
                  diameter_mm=(14, 24))
app = QApplication(sys.argv[:1])
w = MainWindow(Options(interactive=False, demo_models=True, device="cpu", view3d=False, workspace=ws),
               QSettings(out + "/s.ini", QSettings.IniFormat))
w.resize(1300, 850)
w.show()
w.activateWindow()
while not w.isActiveWindow():
    QTest.qWait(50)
loop = QEventLoop()
w.detection_done.connect(lambda ok: loop.quit())
w.open_path(scan)
loop.exec()
big = max(ph.nodules, key=lambda n: n.diameter_mm)
rows = w.state.visible()
k = min(range(len(rows)), key=lambda i: np.linalg.norm(np.subtract(rows[i].center_xyz, big.center_xyz)))
w._go_to(k)
QTest.keyClick(w, Qt.Key_A)
while w.selected() is not None and w.selected().status == "unreviewed":
    QTest.keyClick(w, Qt.Key_R)
w._go_to(k)
QTest.keyClick(w, Qt.Key_G)
other = min(ph.nodules, key=lambda n: n.diameter_mm)
w.state.set_cursor(other.center_irc)
QTest.keyClick(w, Qt.Key_K)
added = w.selected().id
axial = w.views["axial"]
_, r, c = other.center_irc
sr, sc = w.state.plane_spacing("axial")
spot = axial.mapFromScene(axial.box.mapViewToScene(QPointF((c + 0.5) * sc, (r + 0.5) * sr)))
QTest.keyClick(w, Qt.Key_B)
QTest.keyClick(w, Qt.Key_BracketRight)
QTest.mouseClick(axial.viewport(), Qt.LeftButton, Qt.NoModifier, QPoint(int(spot.x()), int(spot.y())))
from PySide6.QtCore import QTimer
QTimer.singleShot(1000, loop.quit)  # every edit is saved within a second (QTest.qWait would
loop.exec()  # hold the GIL and stall the saver thread; the application's event loop does not)
review = w.state.review
print(json.dumps({"findings": [f.to_dict() for f in review.findings], "added": added,
                  "masks": {f.id: review.masks.count(f.id) for f in review.findings if review.masks.has(f.id)}}),
      flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_read_kill_reopen_and_export(tmp_path, make_window, qtbot):
    import highdicom as hd
    import jsonschema

    from lungview.io import open_volume
    from lungview.io.annotations import read_annotations
    from lungview.review.exchange import export
    from lungview.review.workspace import Workspace
    from lungview.synthetic import make_phantom, write_phantom
    from tests.review.test_dicom_export import dciodvfy_errors
    from tests.review.test_exchange import SCHEMA

    ph = make_phantom(12, size=192, slices=64, pixel_mm=1.8, slice_mm=4.0, nodules=3, kinds=("solid",),
                      diameter_mm=(14, 24))
    scan = write_phantom(ph, tmp_path / "scan", "dicom")
    ws = tmp_path / "ws"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(scan), str(ws), str(tmp_path)],
                             stdout=subprocess.PIPE, text=True, env=env)
    line = child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    state = json.loads(line)
    statuses = {f["id"]: f["status"] for f in state["findings"]}
    assert "confirmed" in statuses.values() and "rejected" in statuses.values()
    assert len(state["masks"]) == 2 and state["added"] in state["masks"]
    # reopened in a new window: every finding, status and mask as it was
    w = make_window(workspace=str(ws))
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        w.open_path(str(scan))
    qtbot.wait(100)
    assert w.pipeline_runs == 0
    assert [f.to_dict() for f in w.state.review.findings] == state["findings"]
    assert {fid: w.state.review.masks.count(fid) for fid in state["masks"]} == state["masks"]
    w.close()
    # and exported in every format, each read back by an independent reader
    vol = open_volume(scan)
    with Workspace(ws) as workspace:
        from lungview.inference.measure import mask_provider

        assert export(workspace, "seg", tmp_path / "seg.dcm", mask_of_scan=mask_provider) == 1
        assert export(workspace, "sr", tmp_path / "sr.dcm", mask_of_scan=mask_provider) == 1
        assert export(workspace, "mrk", tmp_path / "f.mrk.json") == len(statuses)
        assert export(workspace, "luna16", tmp_path / "annotations.csv") == 1
    confirmed = next(f for f in state["findings"] if f["status"] == "confirmed")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert seg.get_segment_description(1).tracking_uid == confirmed["id"]
    voxels = seg.get_volume().array  # the painted (filled) mask, voxel for voxel
    assert int(np.count_nonzero(voxels)) == state["masks"][confirmed["id"]]
    assert dciodvfy_errors(tmp_path / "seg.dcm") == [] and dciodvfy_errors(tmp_path / "sr.dcm") == []
    jsonschema.validate(json.loads((tmp_path / "f.mrk.json").read_text()), json.loads(SCHEMA.read_text()))
    (row,) = read_annotations(tmp_path / "annotations.csv")
    assert row.series_uid == vol.series_uid and row.diameter_mm == pytest.approx(confirmed["diameter_mm"], abs=1e-3)
