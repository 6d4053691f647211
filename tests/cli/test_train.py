"""`lungview train` and `lungview models list|show|use`, as a script drives them."""

import datetime
import json

import pytest

from lungview.cli import main
from tests.conftest import reviewed_workspace


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_list_use_and_roll_back(phantom_scans, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    reviewed_workspace(tmp_path / "ws", phantom_scans).close()
    code, out, err = run(capsys, "train", "--workspace", str(tmp_path / "ws"), "--role", "nodule", "--epochs", "1",
                         "--json")
    assert code == 0, err
    assert "training on CPU" in err
    trained = json.loads(out)
    assert trained["verdict"] in ("accepted", "refused") and trained["parent"] == "demo-nodule"
    assert trained["counts"]["train"]["scans"] + trained["counts"]["validation"]["scans"] == 3
    assert {"sensitivity", "fp_per_scan", "cpm"} <= set(trained["before"]) == set(trained["after"])
    code, out, _ = run(capsys, "models", "list", "--json")
    rows = json.loads(out)
    assert all(set(r) == {"id", "role", "path", "parent", "active", "verdict", "reason", "metrics", "created"}
               for r in rows)
    assert {r["role"] for r in rows} == {"segmentation", "nodule", "malignancy"}
    assert all(r["verdict"] in ("accepted", "refused") for r in rows)
    (mine,) = [r for r in rows if r["id"] == trained["id"]]
    assert mine["active"] == (trained["verdict"] == "accepted")
    datetime.datetime.fromisoformat(mine["created"])  # ISO 8601
    assert sum(r["active"] for r in rows if r["role"] == "nodule") == 1
    # rollback to the demo weights, then forward again
    assert run(capsys, "models", "use", "demo-nodule")[0] == 0
    assert [r["id"] for r in json.loads(run(capsys, "models", "list", "--json")[1])
            if r["active"] and r["role"] == "nodule"] == ["demo-nodule"]
    assert run(capsys, "models", "use", trained["id"])[0] == 0
    code, out, _ = run(capsys, "models", "show", trained["id"])
    card = json.loads(out)["card"]
    assert card["parent"] == "demo-nodule" and card["role"] == "nodule" and card["recipe"]["epochs"] == 1
    assert card["working_threshold"] == trained["working_threshold"] == trained["after"]["threshold"]
    # and detection uses the active one, at its working threshold unless told another
    from lungview.models.registry import resolve_models

    assert str(resolve_models()["nodule"].path) == trained["path"]
    scan = str(phantom_scans[0][1])
    code, out, err = run(capsys, "detect", scan, "--json")
    assert code == 0, err
    (record,) = json.loads(out)["scans"]
    assert record["threshold"] == record["working_threshold"] == trained["working_threshold"]
    assert all(d["p_nodule"] >= trained["working_threshold"] for d in record["detections"])
    (every,) = json.loads(run(capsys, "detect", scan, "--json", "--threshold", "0")[1])["scans"]
    assert len(record["detections"]) == sum(d["p_nodule"] >= trained["working_threshold"]
                                            for d in every["detections"])
    assert every["threshold"] == 0


def test_train_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    from lungview.review.workspace import Workspace

    Workspace(tmp_path / "ws").close()
    for argv, text in ((("--role", "nodule"), "no reviewed findings to learn nodule from"),
                       (("--role", "segmentation"), "no reviewed findings to learn segmentation from")):
        code, _, err = run(capsys, "train", "--workspace", str(tmp_path / "ws"), *argv)
        assert code == 2 and err.count("\n") == 1 and text in err, err
    code, _, err = run(capsys, "models", "use", "nodule-19990101")
    assert code == 2 and "no model 'nodule-19990101'" in err


def test_tensorboard_logs_each_epoch(phantom_scans, tmp_path, monkeypatch, capsys):
    """--tensorboard writes the book's kind of event file: read back by TensorBoard's own reader,
    the training loss and the validation metrics, one point per epoch, the values of the run's
    history."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    reviewed_workspace(tmp_path / "ws", phantom_scans).close()
    code, out, err = run(capsys, "train", "--workspace", str(tmp_path / "ws"), "--role", "nodule", "--epochs", "2",
                         "--tensorboard", str(tmp_path / "runs"), "--json")
    assert code == 0, err
    history = json.loads(out)["history"]
    (run_dir,) = (tmp_path / "runs").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    loss = events.Scalars("nodule/loss/trn")
    assert [e.step for e in loss] == [1, 2]
    assert [e.value for e in loss] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    cpm = events.Scalars("nodule/cpm/val")
    assert [e.value for e in cpm] == pytest.approx([h["validation"]["cpm"] for h in history], rel=1e-6)
