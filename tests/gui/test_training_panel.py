"""The training panel driven as a reader does: Ctrl+T, the data it will use, Start, the curves
growing epoch by epoch, the before/after table and the verdict, the versions with Use (rollback),
and Stop, which leaves no file and the active model in use."""

import pytest
from PySide6.QtCore import Qt

from tests.conftest import reviewed_workspace


@pytest.fixture
def training(qtbot, make_window, phantom_scans, tmp_path, monkeypatch):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    reviewed_workspace(tmp_path / "ws", phantom_scans).close()
    w = make_window(workspace=str(tmp_path / "ws"), detect=False)
    qtbot.keyClick(w, Qt.Key_T, Qt.ControlModifier)
    assert w.training_dock.isVisible()
    return w, phantom_scans


def test_start_curves_result_and_use(qtbot, training):
    from lungview.models.versions import active_version

    w, phantoms = training
    panel = w.training_panel
    assert "train</b>: 2 scan(s)" in panel.data.text() and "validation</b>: 1 scan(s)" in panel.data.text()
    assert "count as negatives" in panel.data.text()
    panel.epochs.setValue(2)
    qtbot.mouseClick(panel.start, Qt.LeftButton)
    assert not panel.start.isEnabled() and panel.stop.isEnabled() and panel.device.text().startswith("CPU")
    assert "PyTorch" in panel.device.text()  # whatever runs detection: training is PyTorch
    qtbot.waitUntil(lambda: len(panel.history) >= 1, timeout=120000)  # the curves grow while it trains
    assert len(panel.loss_curve.getData()[0]) >= 1
    qtbot.waitUntil(lambda: w.train_job is None, timeout=120000)
    assert len(panel.history) == 2 and list(panel.loss_curve.getData()[0]) == [1, 2]
    assert [panel.compare.item(r, 0).text() for r in range(4)] == ["threshold", "sensitivity", "fp_per_scan", "cpm"]
    verdict = panel.verdict.text()
    assert "accepted" in verdict or "refused" in verdict
    ids = panel.version_ids
    new = next(i for i in ids if i.startswith("nodule-"))
    # roll back to the demo weights with Use
    panel.versions.selectRow(ids.index("demo-nodule"))
    qtbot.mouseClick(panel.use, Qt.LeftButton)
    assert active_version("nodule").id == "demo-nodule"
    assert panel.versions.item(ids.index("demo-nodule"), 2).text() == "✓"
    panel.versions.selectRow(panel.version_ids.index(new))
    qtbot.mouseClick(panel.use, Qt.LeftButton)
    assert active_version("nodule").id == new and "Ctrl+D re-runs detection" in w.message.text()
    # detection with it moves the threshold slider to its own working threshold, and says so
    from lungview.models.checkpoint import load_checkpoint

    working = load_checkpoint(active_version("nodule").path, "nodule").card.threshold
    with qtbot.waitSignal(w.scan_loaded, timeout=30000):
        w.open_path(str(phantoms[0][1]))
    with qtbot.waitSignal(w.detection_done, timeout=120000):
        qtbot.keyClick(w, Qt.Key_D, Qt.ControlModifier)
    assert w.state.threshold == pytest.approx(working)
    assert w.panel.slider.value() == round(working * 100) and w.panel.value.text() == f"{working:.2f}"
    assert any(f"working threshold is {working:.2f}" in text for text in w.banner.notices) == (working != 0.5)


def test_stop_writes_nothing_and_keeps_the_active_model(qtbot, training):
    from lungview.models.registry import user_model_dir
    from lungview.models.versions import active_version

    w, _ = training
    panel = w.training_panel
    panel.epochs.setValue(50)
    qtbot.mouseClick(panel.start, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=120000)
    qtbot.mouseClick(panel.stop, Qt.LeftButton)
    qtbot.waitUntil(lambda: w.train_job is None, timeout=60000)
    assert panel.verdict.text().startswith("stopped: nothing was written")
    assert panel.start.isEnabled() and not panel.stop.isEnabled()
    trained = user_model_dir() / "trained"
    assert not trained.exists() or not any(trained.iterdir())
    assert active_version("nodule").id == "demo-nodule"
