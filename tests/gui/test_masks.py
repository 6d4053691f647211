"""Masks and markers with the mouse, as a reader does: B and a drag paint the selected finding's
mask, E erases, [ ] change the radius, H keeps paint out of air, G fills from the detector's
measurement, Ctrl+Z / Ctrl+Shift+Z undo and redo each stroke; a marker dragged from inside
moves its finding and by its rim resizes it; a new window on the workspace shows the masks."""

import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt

from tests.gui.conftest import center_of


@pytest.fixture
def painting(qtbot, make_window, gui_scan, tmp_path):
    path, ph = gui_scan
    w = make_window(workspace=str(tmp_path / "ws"), detect=False)
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        w.open_path(path)
    n = max(ph.nodules, key=lambda n: n.diameter_mm)
    w.state.set_cursor(n.center_irc)
    qtbot.keyClick(w, Qt.Key_K)  # a nodule to paint on, selected
    return w, ph, n, path, tmp_path / "ws"


def drag(qtbot, view, a, b, steps=8, modifier=Qt.NoModifier):
    """A left drag from voxel a to voxel b in a slice view, at a hand's pace (pyqtgraph drops
    mouse moves closer together than its rate limit, 100 per second)."""
    (ax, ay), (bx, by) = center_of(view, a), center_of(view, b)
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.LeftButton, modifier, QPoint(int(ax), int(ay)))
    for t in np.linspace(0, 1, steps + 1)[1:]:
        qtbot.wait(15)
        qtbot.mouseMove(vp, QPoint(int(round(ax + t * (bx - ax))), int(round(ay + t * (by - ay)))))
    qtbot.wait(15)
    qtbot.mouseRelease(vp, Qt.LeftButton, modifier, QPoint(int(bx), int(by)))


def test_brush_eraser_radius_and_undo(qtbot, painting):
    w, ph, n, _, _ = painting
    fid = w.selected().id
    masks = w.state.review.masks
    axial = w.views["axial"]
    i, r, c = (int(v) for v in w.state.cursor)
    qtbot.keyClick(w, Qt.Key_B)
    assert w.state.paint_mode == "brush" and w.brush_action.isChecked()
    assert w.message.text().startswith("brush: radius 3.0 mm")
    qtbot.keyClick(w, Qt.Key_BracketRight)
    assert w.state.brush_mm == pytest.approx(3.75) and w.message.text() == "brush radius 3.8 mm"
    qtbot.keyClick(w, Qt.Key_BracketLeft)
    qtbot.keyClick(w, Qt.Key_BracketLeft)
    assert w.state.brush_mm == pytest.approx(2.4)
    # a horizontal stroke of 10 columns on the axial slice: a band 2 brush radii high
    drag(qtbot, axial, (i, r + 12, c - 5), (i, r + 12, c + 5))
    painted = masks.count(fid)
    sx, sy, _ = w.state.volume.spacing_xyz  # 1.8 mm pixels: the band is 3 pixels high, 11 + 2 wide
    assert painted == np.count_nonzero(masks.labels) and 25 <= painted <= 45
    assert set(np.flatnonzero(masks.labels.any(axis=(1, 2)))) == {i}  # on the slice shown only
    f = w.state.review.get(fid)
    assert f.volume_mm3 == pytest.approx(painted * np.prod(w.state.volume.spacing_xyz))
    assert w.undo_action.text() == "Undo Paint mask"
    # the stroke shows in the axial view where it was painted, in the finding's colour
    img = axial.masks.image
    assert img[r + 12, c, 3] > 0 and img[r - 12, c, 3] == 0
    # Ctrl+Z takes the whole stroke back, Ctrl+Shift+Z brings it again
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)
    assert masks.count(fid) == 0 and not masks.labels.any() and axial.masks.image[r + 12, c, 3] == 0
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert masks.count(fid) == painted
    # E: the eraser through the middle of the band
    qtbot.keyClick(w, Qt.Key_E)
    assert w.state.paint_mode == "eraser" and not w.brush_action.isChecked() and w.eraser_action.isChecked()
    drag(qtbot, axial, (i, r + 6, c), (i, r + 18, c), steps=4)
    assert 0 < masks.count(fid) < painted and masks.labels[i, r + 12, c] == 0
    assert w.undo_action.text() == "Undo Erase mask"
    erased = masks.count(fid)
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)
    assert masks.count(fid) == painted
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert masks.count(fid) == erased
    # the ruler turns painting off, and the menus follow
    qtbot.keyClick(w, Qt.Key_L)
    assert w.state.paint_mode is None and not w.eraser_action.isChecked() and w.ruler_action.isChecked()


def test_hu_range_keeps_paint_out_of_air(qtbot, painting):
    w, ph, n, _, _ = painting
    fid = w.selected().id
    hu = w.state.volume.hu
    i = int(w.state.cursor[0])
    air = np.argwhere(hu[i] < -990)  # outside the body
    r, c = (int(v) for v in air[len(air) // 2])
    qtbot.keyClick(w, Qt.Key_H)
    qtbot.keyClick(w, Qt.Key_B)
    assert "only -800 to 3000 HU" in w.message.text()
    drag(qtbot, w.views["axial"], (i, r, c), (i, r, c + 2), steps=2)
    assert w.state.review.masks.count(fid) == 0
    qtbot.keyClick(w, Qt.Key_H)  # off: the same stroke paints
    drag(qtbot, w.views["axial"], (i, r, c), (i, r, c + 2), steps=2)
    assert w.state.review.masks.count(fid) > 0


def test_fill_from_the_detector_then_reopen_shows_the_masks(qtbot, painting, make_window):
    w, ph, n, path, ws = painting
    fid = w.selected().id
    unfilled = w.state.review.get(fid)
    qtbot.keyClick(w, Qt.Key_G)
    masks = w.state.review.masks
    assert w.message.text().startswith("mask filled from region grown from its centre")
    f = w.state.review.get(fid)
    # the phantom's nodule: its exact volume; 1.8 x 1.8 x 4 mm voxels blur the edge
    assert f.volume_mm3 == pytest.approx(n.volume_mm3, rel=0.25)
    assert masks.count(fid) * np.prod(w.state.volume.spacing_xyz) == pytest.approx(f.volume_mm3)
    filled = masks.count(fid)
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)  # the fill is one undo step
    assert masks.count(fid) == 0 and w.state.review.get(fid) == unfilled
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert masks.count(fid) == filled and w.state.review.get(fid) == f
    before = masks.labels.copy()
    w.close()  # flushes the autosave
    again = make_window(workspace=str(ws), detect=False)
    with qtbot.waitSignal(again.scan_loaded, timeout=30000):
        again.open_path(path)
    back = again.state.review.masks
    np.testing.assert_array_equal(back.labels == back.label_of[fid], before == masks.label_of[fid])
    again.state.set_cursor(n.center_irc)
    row, col = (int(v) for v in np.rint(n.center_irc[1:]))
    assert again.views["axial"].masks.isVisible() and again.views["axial"].masks.image[row, col, 3] > 0


def test_drag_a_marker_to_move_it_and_its_rim_to_resize_it(qtbot, painting):
    w, ph, n, _, _ = painting
    f = w.selected()
    axial = w.views["axial"]
    w.state.set_cursor(np.rint(f.center_irc))
    i, r, c = (int(v) for v in np.rint(f.center_irc))
    # from inside the marker, 6 columns to the right: the finding moves 6 pixels along x
    drag(qtbot, axial, (i, r, c), (i, r, c + 6))
    moved = w.state.review.get(f.id)
    sx = w.state.volume.spacing_xyz[0]
    assert moved.center_xyz[0] - f.center_xyz[0] == pytest.approx(6 * sx, abs=0.5 * sx)
    assert moved.center_xyz[1:] == pytest.approx(f.center_xyz[1:], abs=0.5 * sx)
    assert tuple(w.state.cursor) == (i, r, c)  # no pan, no cursor move
    assert w.undo_action.text() == "Undo Move nodule"
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)
    assert w.state.review.get(f.id).center_xyz == f.center_xyz
    # by its rim (drawn 2 mm outside the nodule), outwards by 5 pixels: 5 pixels more of radius
    axial._draw_markers()
    (_, _, cx, cy, rim), = [m for m in axial.marker_shapes if m[0].id == f.id]
    sr, sc = w.state.plane_spacing("axial")
    start = (i, (cy) / sr - 0.5, (cx + rim) / sc - 0.5)
    end = (i, start[1], start[2] + 5)
    drag(qtbot, axial, start, end)
    resized = w.state.review.get(f.id)
    depth = w.state.depth_mm("axial", f.center_irc)
    want = 2 * np.hypot(rim + 5 * sc - 2.0, depth)
    assert resized.diameter_mm == pytest.approx(want, abs=2 * sc)
    assert resized.long_axis_mm == resized.short_axis_mm == resized.diameter_mm
    assert w.undo_action.text() == "Undo Resize nodule"
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier)
    assert w.state.review.get(f.id) == f.finding
    qtbot.keyClick(w, Qt.Key_Z, Qt.ControlModifier | Qt.ShiftModifier)
    assert w.state.review.get(f.id) == resized
