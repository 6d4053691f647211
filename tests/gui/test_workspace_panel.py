"""The workspace panel, driven as a reader does: Ctrl+Shift+W shows it, "Add folder…" finds every
series below a folder (DICOM and volume files), "Detect all" runs the worker over the new ones
and each row's status follows, Esc cancels it, a double-click opens a scan with its stored
results (no detection run again), and the row of the scan being read counts its review."""

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from lungview.gui.workspace_panel import COLUMNS


def column(w, name):
    t = w.workspace_panel.table
    return [t.item(r, COLUMNS.index(name)).text() for r in range(t.rowCount())]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two scans below one folder: a DICOM series and a MetaImage, with a CSV beside them."""
    from lungview.synthetic import make_phantom, write_phantom

    root = tmp_path_factory.mktemp("scans")
    for seed, fmt in ((31, "dicom"), (32, "mhd")):
        ph = make_phantom(seed, size=128, slices=48, pixel_mm=2.6, slice_mm=5.0, nodules=2)
        write_phantom(ph, root / f"patient{seed}", fmt)
    return root


def test_add_a_folder_detect_all_and_open(qtbot, make_window, folder, tmp_path, monkeypatch):
    w = make_window(workspace=str(tmp_path / "ws"), detect=False, demo_models=True)
    qtbot.keyClick(w, Qt.Key_W, Qt.ControlModifier | Qt.ShiftModifier)
    assert w.workspace_dock.isVisible() and w.workspace_panel.table.rowCount() == 0
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", lambda *a, **k: str(folder))
    qtbot.mouseClick(w.workspace_panel.add_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.workspace_panel.table.rowCount() == 2, timeout=30000)
    assert column(w, "status") == ["new", "new"]
    assert sorted(p.split("/")[-2] for p in column(w, "path")) == ["patient31", "patient32"]
    assert w.message.text() == f"{folder}: 2 scan(s) in the workspace"
    # Detect all, cancelled at once with Esc: nothing half-stored, the window is not stuck
    qtbot.mouseClick(w.workspace_panel.detect_button, Qt.LeftButton)
    qtbot.keyClick(w, Qt.Key_Escape)
    qtbot.waitUntil(lambda: not w.jobs, timeout=30000)
    assert w.message.text() == "detect all cancelled" and not w.progress.isVisible()
    assert all(s in ("new", "detected") for s in column(w, "status"))
    # and run to the end
    qtbot.mouseClick(w.workspace_panel.detect_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: not w.jobs, timeout=120000)
    assert column(w, "status") == ["detected", "detected"], w.message.toolTip()
    assert w.message.text().startswith("detect all: ")
    assert all(int(n) > 0 for n in column(w, "findings"))
    runs = w.pipeline_runs
    # a double-click opens the first scan with what detect all stored: no new run
    t = w.workspace_panel.table
    spot = t.visualItemRect(t.item(0, 0)).center()
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        qtbot.mouseClick(t.viewport(), Qt.LeftButton, pos=spot)  # a double click: press, release, press...
        qtbot.mouseDClick(t.viewport(), Qt.LeftButton, pos=spot)
    qtbot.wait(100)
    assert w.pipeline_runs == runs and w.state.volume.series_uid == w.workspace_panel.rows[0][0]
    assert len(w.state.review) == int(column(w, "findings")[0])
    # reading it: its row follows the review
    fid = w.state.review.findings[0].id
    w.state.review.set_status(fid, "confirmed")
    assert column(w, "status")[0] == "in review" and column(w, "confirmed")[0] == "1"
    assert column(w, "reviewed")[0] == f"1 of {len(w.state.review)}"


def test_catalog_finds_series_and_volume_files(folder):
    from lungview.io import open_volume
    from lungview.io.catalog import find_scans

    found, skipped = find_scans(folder)
    assert len(found) == 2 and not skipped
    for scan in found:
        vol = open_volume(scan.path, series=scan.series_uid)  # what the workspace will open
        assert vol.series_uid == scan.series_uid and tuple(vol.shape) == scan.shape
        np.testing.assert_allclose(scan.spacing_xyz, vol.spacing_xyz, rtol=1e-4)
