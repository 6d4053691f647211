"""The reader's basics, driven with keys, clicks, drags and the wheel: models dialog, navigation
in a zoomed view and in the table's order, overlay toggles, maximising, window/level typed,
zoom reset, crosshair, ruler, notices, interpolated slices."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtWidgets import QFileDialog

from lungview.core import CtVolume
from lungview.gui.panels import COLUMNS
from lungview.io.write import write_volume
from tests.gui.conftest import center_of


def _open(qtbot, w, path, detect=False):
    signal = w.detection_done if detect else w.scan_loaded
    with qtbot.waitSignal(signal, timeout=120000) as sig:
        w.open_path(path)
    assert sig.args == [True]


@pytest.fixture
def detected(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(demo_models=True)
    _open(qtbot, w, path, detect=True)
    w.panel.slider.setValue(0)  # every candidate: enough rows to sort and step through
    assert len(w.state.visible()) >= 3
    return w


def test_models_dialog_cancelled_pickers_change_nothing(qtbot, make_window, monkeypatch, tmp_path):
    w = make_window(detect=False)
    w.settings.setValue("seg_model", "/models/seg_mine.pt")
    w.choose_models()
    dialog = w.models_dialog
    assert dialog.paths["seg_model"].text() == "/models/seg_mine.pt"
    assert "missing" in dialog.origins["seg_model"].text()
    assert dialog.origins["cls_model"].text().startswith("default: ")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    for key in ("seg_model", "cls_model", "mal_model"):  # every picker opened and cancelled
        qtbot.mouseClick(dialog.browse[key], Qt.LeftButton)
    assert dialog.paths["seg_model"].text() == "/models/seg_mine.pt"
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)
    assert w.settings.value("seg_model") == "/models/seg_mine.pt" and not w.settings.value("cls_model")
    # and a real choice, saved
    chosen = tmp_path / "cls_other.pt"
    chosen.write_bytes(b"x")
    w.choose_models()
    dialog = w.models_dialog
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(chosen), "")))
    qtbot.mouseClick(dialog.browse["cls_model"], Qt.LeftButton)
    qtbot.mouseClick(dialog.default["seg_model"], Qt.LeftButton)
    assert "cannot be used" in dialog.origins["cls_model"].text()  # b"x" is no checkpoint
    qtbot.mouseClick(dialog.save_button, Qt.LeftButton)
    assert w.settings.value("cls_model") == str(chosen) and w.settings.value("seg_model") == ""


def test_models_dialog_shows_a_classifiers_working_threshold(qtbot, make_window, monkeypatch, tmp_path):
    """The nodule classifier's line says at which p it lists findings: the book's 0.5 for the
    default, the card's own threshold for a fine-tuned one picked with Browse…"""
    from dataclasses import replace

    from lungview.models.checkpoint import load_checkpoint, save_checkpoint
    from lungview.models.registry import resolve_models

    w = make_window(detect=False, demo_models=True)
    w.choose_models()
    dialog = w.models_dialog
    assert dialog.origins["cls_model"].text().endswith("findings at p ≥ 0.50")
    assert "p ≥" not in dialog.origins["seg_model"].text()
    demo = load_checkpoint(resolve_models(use_user_dir=False)["nodule"].path, "nodule")
    tuned = save_checkpoint(tmp_path / "cls_tuned.pt", demo.module, replace(demo.card, working_threshold=0.77),
                            demo.kwargs)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(tuned), "")))
    qtbot.mouseClick(dialog.browse["cls_model"], Qt.LeftButton)
    assert dialog.origins["cls_model"].text() == "chosen here; findings at p ≥ 0.77"
    qtbot.mouseClick(dialog.cancel_button, Qt.LeftButton)


def test_n_pans_a_zoomed_view_to_the_nodule(qtbot, detected):
    w = detected
    axial = w.views["axial"]
    axial.box.scaleBy((0.2, 0.2))  # zoomed in five times ...
    axial.box.translateBy(x=-400, y=-400)  # ... and panned off into a corner
    qtbot.keyClick(w, Qt.Key_N)
    d = w.state.visible()[w.detect_index]
    row, col = w.state.to_plane("axial", d.center_irc)
    x, y = axial._mm(row + 0.5, col + 0.5)
    (x0, x1), (y0, y1) = axial.box.viewRange()
    assert x0 < x < x1 and y0 < y < y1
    assert x1 - x0 < 0.5 * w.state.volume.shape[2] * w.state.volume.spacing_xyz[0]  # still zoomed


def test_n_and_p_follow_the_tables_order(qtbot, detected):
    w = detected
    w.panel.table.sortItems(COLUMNS.index("z"), Qt.DescendingOrder)  # by z, head first
    rows = w.state.visible()
    order = w.panel.ordered()
    assert [rows[i].center_xyz[2] for i in order] == sorted((d.center_xyz[2] for d in rows), reverse=True)
    table = w.panel.table
    qtbot.mouseClick(table.viewport(), Qt.LeftButton, pos=table.visualItemRect(table.item(0, 0)).center())
    seen = [w.detect_index]
    for _ in range(2):
        qtbot.keyClick(w, Qt.Key_N)
        seen.append(w.detect_index)
    assert seen == order[:3]
    assert tuple(w.state.cursor) == tuple(np.rint(rows[order[2]].center_irc).astype(int))
    qtbot.keyClick(w, Qt.Key_P)
    assert w.detect_index == order[1]


def test_s_key_and_check_box_stay_in_step(qtbot, detected):
    w = detected
    box = w.panel.overlay_box
    qtbot.keyClick(w, Qt.Key_S)
    assert w.state.seg_visible and box.isChecked()
    qtbot.mouseClick(box, Qt.LeftButton, pos=QPoint(6, box.height() // 2))
    assert not w.state.seg_visible and not box.isChecked()
    qtbot.keyClick(w, Qt.Key_S)
    assert w.state.seg_visible and box.isChecked() and w.views["axial"].overlay.isVisible()


def test_status_count_follows_the_threshold(qtbot, detected):
    w = detected
    w.panel.slider.setValue(90)
    n = len([d for d in w.state.findings.detections if d.p_nodule >= 0.9])
    assert w.count.text().startswith(f"{n} of {len(w.state.findings.detections)} candidates")
    w.panel.slider.setValue(0)
    assert w.count.text().startswith(f"{len(w.state.findings.detections)} of ")


def test_table_shows_every_column(qtbot, detected):
    w = detected
    table = w.panel.table
    for width in (1300, 1000):
        w.resize(width, 850)
        qtbot.wait(50)
        assert table.horizontalHeader().length() <= table.viewport().width() + 1, width
        assert all(not table.isColumnHidden(c) and table.columnWidth(c) >= 30 for c in range(table.columnCount()))
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == list(COLUMNS)
    assert COLUMNS[-3:] == ("x", "y", "z") and {"st", "type", "mal", "RADS"} <= set(COLUMNS)


def test_double_click_maximises_without_moving_the_crosshair_and_restores_even(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    before = tuple(w.state.cursor)
    sizes = [v.size() for v in (*w.views.values(), w.view3d)]
    cor = w.views["coronal"]
    x, y = center_of(cor, (5, 5, 5))
    qtbot.mouseDClick(cor.viewport(), Qt.LeftButton, pos=QPoint(int(x), int(y)))
    assert cor.isVisible() and not w.views["axial"].isVisible()
    assert tuple(w.state.cursor) == before
    qtbot.mouseDClick(cor.viewport(), Qt.LeftButton, pos=QPoint(int(x), int(y)))
    qtbot.wait(50)
    assert tuple(w.state.cursor) == before
    after = [v.size() for v in (*w.views.values(), w.view3d)]
    assert after == sizes
    widths = {s.width() for s in after}
    assert max(widths) - min(widths) <= 2  # four even quarters


def test_window_level_typed_zoom_reset_and_crosshair(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    box = w.window_level
    box.center.lineEdit().selectAll()
    qtbot.keyClicks(box.center.lineEdit(), "50")
    qtbot.keyClick(box.center.lineEdit(), Qt.Key_Return)
    box.width_box.lineEdit().selectAll()
    qtbot.keyClicks(box.width_box.lineEdit(), "350")
    qtbot.keyClick(box.width_box.lineEdit(), Qt.Key_Return)
    assert w.state.window == (50.0, 350.0) and w.views["axial"].image.levels == pytest.approx((-125.0, 225.0))
    w.setFocus()
    qtbot.keyClick(w, Qt.Key_3)
    assert box.center.value() == 400 and box.width_box.value() == 1800  # the boxes follow the presets
    axial = w.views["axial"]
    full = axial.box.viewRange()
    axial.box.scaleBy((0.3, 0.3))
    assert axial.box.viewRange() != full
    qtbot.keyClick(w, Qt.Key_Home)
    np.testing.assert_allclose(axial.box.viewRange(), full, rtol=1e-6)
    qtbot.keyClick(w, Qt.Key_C)
    assert not axial.hline.isVisible() and not axial.vline.isVisible()
    qtbot.keyClick(w, Qt.Key_C)
    assert axial.hline.isVisible()


def test_ruler_measures_in_millimetres(qtbot, make_window, gui_scan):
    path, ph = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    qtbot.keyClick(w, Qt.Key_L)
    cursor = tuple(w.state.cursor)
    axial = w.views["axial"]
    a, b = (cursor[0], 40, 40), (cursor[0], 40 + 30, 40 + 40)  # 30 rows and 40 columns apart
    (ax, ay), (bx, by) = center_of(axial, a), center_of(axial, b)
    vp = axial.viewport()
    qtbot.mousePress(vp, Qt.LeftButton, pos=QPoint(int(ax), int(ay)))
    for t in np.linspace(0, 1, 8)[1:]:
        qtbot.mouseMove(vp, QPoint(int(ax + t * (bx - ax)), int(ay + t * (by - ay))))
    qtbot.mouseRelease(vp, Qt.LeftButton, pos=QPoint(int(bx), int(by)))
    sx, sy, _ = ph.volume.spacing_xyz
    want = float(np.hypot(30 * sy, 40 * sx))  # 1.8 mm pixels: 90 mm
    assert axial.ruler_length() == pytest.approx(want, abs=2 * sx)
    assert w.message.text() == f"ruler: {axial.ruler_length():.1f} mm"
    assert axial.ruler_text.isVisible() and axial.ruler_text.toPlainText().endswith(" mm")
    assert tuple(w.state.cursor) == cursor  # measuring does not move the cursor
    qtbot.keyClick(w, Qt.Key_Up)
    assert not axial.ruler_line.isVisible()  # drawn on its own slice only
    qtbot.keyClick(w, Qt.Key_L)
    assert axial.ruler is None


def test_a_label_map_is_said_so_and_not_detected(qtbot, make_window, tmp_path):
    hu = np.zeros((30, 64, 64), np.int16)
    hu[10:20, 20:40, 20:40] = 1
    path = write_volume(CtVolume(hu=hu, spacing_xyz=(1.0, 1.0, 2.0), origin_xyz=(0, 0, 0)), tmp_path / "label.nrrd")
    w = make_window(demo_models=True)
    _open(qtbot, w, path)
    qtbot.wait(200)
    assert w.banner.isVisible() and "does not look like CT" in w.banner.text.text()
    assert "2 distinct values" in w.banner.text.text()
    assert not w.jobs and w.state.findings.detections == [] and w.pipeline_runs == 0
    qtbot.mouseClick(w.banner.close_button, Qt.LeftButton)
    assert not w.banner.isVisible()


def test_reader_warnings_stay_visible_through_progress(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(demo_models=True)
    _open(qtbot, w, path, detect=True)  # progress messages came and went
    assert w.banner.isVisible() and "padding" in w.banner.text.text()


def test_interpolated_slices_are_shown_as_such(qtbot, make_window, small_phantom, tmp_path):
    from lungview.synthetic import write_phantom

    path = write_phantom(small_phantom, tmp_path, "dicom")
    sorted(path.iterdir())[20].unlink()
    w = make_window(detect=False)
    _open(qtbot, w, path)
    assert w.state.volume.interpolated_slices == (20,)
    assert "interpolated" in w.banner.text.text()
    w.state.set_cursor((20, 10, 10))
    assert "interpolated slice" in w.views["axial"].title.text()
    w.state.set_cursor((21, 10, 10))
    assert "interpolated" not in w.views["axial"].title.text()
    (band,) = w.views["coronal"].bands
    sr, _ = w.state.plane_spacing("coronal")
    top = w.state.volume.shape[0] - 1
    assert band.rect().top() == pytest.approx((top - 20) * sr) and band.rect().height() == pytest.approx(sr)


def test_wheel_zoom_keeps_working_with_the_ruler_off(qtbot, make_window, gui_scan):
    """Ctrl+wheel zooms the view under the mouse (the ruler mode changes left drags only)."""
    from PySide6.QtGui import QWheelEvent
    from PySide6.QtWidgets import QApplication

    path, _ = gui_scan
    w = make_window(detect=False)
    _open(qtbot, w, path)
    axial = w.views["axial"]
    before = axial.box.viewRange()[0]
    pos = QPointF(axial.viewport().width() / 2, axial.viewport().height() / 2)
    ev = QWheelEvent(pos, axial.viewport().mapToGlobal(pos), QPoint(0, 0), QPoint(0, 120), Qt.NoButton,
                     Qt.ControlModifier, Qt.NoScrollPhase, False)
    QApplication.sendEvent(axial.viewport(), ev)
    after = axial.box.viewRange()[0]
    assert after[1] - after[0] < before[1] - before[0]


def test_models_dialog_save_and_rerun(qtbot, make_window, gui_scan):
    path, _ = gui_scan
    w = make_window(detect=False, demo_models=True)
    _open(qtbot, w, path)
    assert w.detect_job is None
    w.choose_models()
    dialog = w.models_dialog
    assert "demo" in dialog.origins["seg_model"].text()
    with qtbot.waitSignal(w.detection_done, timeout=120000) as sig:
        qtbot.mouseClick(dialog.rerun_button, Qt.LeftButton)
    assert sig.args == [True] and not dialog.isVisible() and w.state.findings.detections


def test_models_dialog_backend_choice_runs_detection_in_it(qtbot, make_window, gui_scan, monkeypatch):
    """The backend picked in Models… with the keyboard is saved, shown in the device badge and in
    the findings panel, and runs the re-run detection; a runtime that is not installed is listed,
    with how to install it, but cannot be picked."""
    path, _ = gui_scan
    w = make_window(detect=False, demo_models=True, backend="torch")
    _open(qtbot, w, path)
    assert "PyTorch" in w.badge.text() and "OpenVINO" not in w.badge.text()
    w.choose_models()
    combo = w.models_dialog.backend
    assert combo.currentData() == "torch"
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key_End)  # the last entry: OpenVINO
    assert combo.currentData() == "openvino"
    with qtbot.waitSignal(w.detection_done, timeout=120000) as sig:
        qtbot.mouseClick(w.models_dialog.rerun_button, Qt.LeftButton)
    assert sig.args == [True] and w.state.findings.detections
    assert w.settings.value("backend") == "openvino" and "OpenVINO" in w.badge.text()
    assert "OpenVINO" in w.panel.summary.text()  # what ran this detection
    from lungview.inference import backends

    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    w.choose_models()
    combo = w.models_dialog.backend
    last = combo.count() - 1
    assert "not installed (pip install 'lungview[openvino]')" in combo.itemText(last)
    assert not combo.model().item(last).isEnabled() and combo.currentData() == "auto"  # the saved one is gone
    qtbot.mouseClick(w.models_dialog.cancel_button, Qt.LeftButton)
