"""Reading a scan as a person does: keys A R U M T K Delete, Shift+click, undo and redo from the
keyboard with the Edit menu naming the step, the filter and the count, and a workspace that
brings everything back in a new window without running detection again."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from lungview.gui.panels import COLUMNS
from tests.gui.conftest import center_of


def statuses(w):
    return {f.id: f.status for f in w.state.review.findings}


def cell(w, fid, column):
    table = w.panel.table
    for r in range(table.rowCount()):
        k = table.item(r, 0).data(Qt.UserRole)
        if w.state.visible()[k].id == fid:
            return table.item(r, COLUMNS.index(column)).text()
    return None


@pytest.fixture
def reading(qtbot, make_window, gui_scan, tmp_path):
    path, ph = gui_scan
    w = make_window(workspace=str(tmp_path / "ws"))
    with qtbot.waitSignal(w.detection_done, timeout=120000) as sig:
        w.open_path(path)
    assert sig.args == [True]
    w.panel.slider.setValue(0)  # every candidate, so that there is something to reject
    assert len(w.state.visible()) >= 3
    return w, ph, path, tmp_path / "ws"


def test_keys_edit_the_review_and_undo_redo_every_step(qtbot, reading):
    w, ph, _, _ = reading
    table = w.panel.table
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=table.visualItemRect(table.item(0, 0)).center())
    first = w.selected().id
    qtbot.keyClick(w, Qt.Key_A)
    assert w.state.review.get(first).status == "confirmed" and cell(w, first, "st") == "✓"
    second = w.selected().id
    assert second != first and w.state.review.get(second).status == "unreviewed"  # moved on
    qtbot.keyClick(w, Qt.Key_R)
    assert w.state.review.get(second).status == "rejected"
    third = w.selected().id
    qtbot.keyClick(w, Qt.Key_U)
    qtbot.keyClick(w, Qt.Key_M)
    qtbot.keyClick(w, Qt.Key_T)
    f = w.state.review.get(third)
    assert (f.status, f.malignancy, f.type) == ("unsure", "benign", "part-solid")
    assert cell(w, third, "mal") == "ben" and cell(w, third, "type") == "part"
    # the detector's finding cannot be deleted
    qtbot.keyClick(w, Qt.Key_Delete)
    assert third in statuses(w) and "only rejected" in w.message.text()
    # K: a nodule at the crosshair, put on a phantom nodule: refined to its size
    n = max(ph.nodules, key=lambda n: n.diameter_mm)
    w.state.set_cursor(n.center_irc)
    qtbot.keyClick(w, Qt.Key_K)
    added = w.selected()
    assert added.source == "user" and added.diameter_mm == pytest.approx(n.equivalent_diameter_mm, rel=0.2)
    assert np.linalg.norm(np.subtract(added.center_xyz, n.center_xyz)) < 2.0
    assert cell(w, added.id, "st") == "·◆"
    # Shift+click in the axial view: another one, where the click was
    axial = w.views["axial"]
    target = (w.state.cursor[0], w.state.cursor[1] + 20, w.state.cursor[2] + 20)
    x, y = center_of(axial, target)
    qtbot.mouseClick(axial.viewport(), Qt.LeftButton, Qt.ShiftModifier, QPoint(int(x), int(y)))
    clicked = w.selected()
    assert clicked.source == "user" and clicked.id != added.id
    assert np.allclose(w.state.volume.xyz_to_irc(np.array(clicked.center_xyz)), target, atol=3.0)
    qtbot.keyClick(w, Qt.Key_Delete)
    assert clicked.id not in statuses(w)
    assert w.undo_action.text() == "Undo Delete nodule"
    # undo everything, one key press per step, back to the detector's results alone
    names = []
    while w.state.review.undo_name not in (None, "Detection results"):
        names.append(w.undo_action.text())
        qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)
    assert names == ["Undo Delete nodule", "Undo Add nodule", "Undo Add nodule", "Undo Set type to part-solid",
                     "Undo Set malignancy to benign", "Undo Mark unsure", "Undo Reject nodule",
                     "Undo Confirm nodule"]
    assert set(statuses(w).values()) == {"unreviewed"}
    for _ in names:
        qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert statuses(w)[first] == "confirmed" and statuses(w)[second] == "rejected" and clicked.id not in statuses(w)
    assert w.redo_action.text() == "Redo" and not w.redo_action.isEnabled()


def test_filter_count_and_a_new_window_restores_everything(qtbot, reading, make_window):
    w, _, path, ws = reading
    ids = [r.id for r in w.state.visible()]
    w.state.review.set_status(ids[0], "confirmed")
    w.state.review.set_status(ids[1], "rejected")
    reviewed, total = w.state.reviewed_count()
    assert (reviewed, total) == (2, len(ids))
    assert w.panel.reviewed.text().startswith(f"2 of {len(ids)} reviewed")
    w.panel.filter.setCurrentText("confirmed")
    assert w.panel.table.rowCount() == 1 and w.state.visible()[0].id == ids[0]
    w.panel.filter.setCurrentText("all")
    # a second LungView on the same workspace is told, and keeps nothing
    other = make_window(workspace=str(ws), detect=False)
    assert any("in use by another LungView" in n for n in other.banner.notices)
    assert other.workspace is None
    other.close()
    before = {f.id: f for f in w.state.review.findings}
    w.close()  # flushes the autosave
    again = make_window(workspace=str(ws))
    with qtbot.waitSignal(again.scan_loaded, timeout=30000):
        again.open_path(path)
    qtbot.wait(200)
    assert again.pipeline_runs == 0  # the saved results, not a new run
    assert {f.id: f for f in again.state.review.findings} == before
    assert again.state.findings.detections and "from the workspace" in again.message.text()
    again.panel.slider.setValue(0)
    assert again.panel.table.rowCount() == len(before)


def test_file_import_and_export_through_the_menus(qtbot, reading, monkeypatch, tmp_path):
    import json

    from PySide6.QtWidgets import QFileDialog

    w, ph, _, _ = reading
    uid = w.state.volume.series_uid
    csv_path = tmp_path / "annotations.csv"
    n = ph.nodules[0]
    csv_path.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                        f"{uid},{n.center_xyz[0]},{n.center_xyz[1]},{n.center_xyz[2]},{n.diameter_mm}\n"
                        "9.9.9,0,0,0,5\n")
    before = len(w.state.review)
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(csv_path)], ""))
    menu_action(w, "Import findings…").trigger()
    assert len(w.state.review) == before + 1 and "1 row(s) of 1 other scan(s) skipped" in w.message.text()
    imported = w.state.review.findings[-1]
    assert imported.source == "imported from annotations.csv" and imported.status == "confirmed"
    out = tmp_path / "x.mrk.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    menu_action(w, "Slicer markups (.mrk.json)…").trigger()
    points = [m["controlPoints"][0]["position"] for m in json.loads(out.read_text())["markups"]]
    assert len(points) == len(w.state.review) and list(imported.center_xyz) in points
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)  # the import is one undoable step
    assert len(w.state.review) == before


def menu_action(w, text):
    from PySide6.QtGui import QAction

    (action,) = [a for a in w.findChildren(QAction) if a.text() == text]
    return action


def test_a_rerun_marks_what_changed_in_the_table(qtbot, reading):
    w, _, _, _ = reading
    with qtbot.waitSignal(w.detection_done, timeout=120000):
        qtbot.keyClick(w, Qt.Key_D, Qt.ControlModifier)  # the same models again: nothing moves
    assert "against the last run: 0 new, 0 gone, 0 with p_nodule moved" in w.message.text()
    rows = w.state.visible()
    a, b, c = rows[0].id, rows[1].id, rows[2].id
    counts = w.state.set_rerun_changes({"added": [a], "gone": [b], "matched": {c: (0.1, 0.9), a: (0.5, 0.6)}})
    assert counts == {"new": 1, "gone": 1, "up": 1, "down": 0}
    assert cell(w, a, "p_nod").endswith(" new") and cell(w, b, "p_nod").endswith(" gone")
    assert cell(w, c, "p_nod").endswith(" ↑")
