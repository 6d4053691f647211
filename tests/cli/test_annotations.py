"""`lungview annotations` and `detect --workspace` as scripts use them: the JSON keys the issue
names, one-line errors with exit 2, and a detection re-run that leaves the reader's work alone."""

import json

import pytest

from lungview.cli import main
from lungview.review.workspace import Workspace
from lungview.synthetic import make_phantom, write_phantom

LIST_KEYS = {"id", "source", "status", "center_xyz", "long_axis_mm", "short_axis_mm", "diameter_mm",
             "volume_mm3", "type", "malignancy", "lung_rads", "p_nodule", "p_malignant"}


@pytest.fixture(scope="module")
def phantom_scan(tmp_path_factory):
    ph = make_phantom(5, size=128, slices=60, pixel_mm=2.8, slice_mm=5.0, nodules=3)
    return write_phantom(ph, tmp_path_factory.mktemp("scan"), "nrrd"), ph


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lungview: error: "), err
    return err[0]


def test_detect_into_a_workspace_twice_keeps_the_readers_decisions(phantom_scan, tmp_path, capsys):
    path, ph = phantom_scan
    ws_dir = tmp_path / "ws"
    assert main(["detect", str(path), "--workspace", str(ws_dir), "--threshold", "0.3"]) == 0
    capsys.readouterr()
    assert main(["annotations", "list", "--workspace", str(ws_dir), "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (scan,) = listing["scans"]
    from lungview.io import open_volume

    assert scan["series_uid"] == open_volume(path).series_uid and scan["status"] == "detected"
    assert scan["findings"] and all(set(f) >= LIST_KEYS for f in scan["findings"])
    assert all(f["status"] == "unreviewed" and f["source"] == "detector" and f["p_nodule"] >= 0.3
               for f in scan["findings"])
    first = scan["findings"][0]
    with Workspace(ws_dir) as ws:  # the reader rejects one and adds one
        review = ws.load_review(scan["series_uid"])
        review.set_status(first["id"], "rejected")
        from lungview.review import sphere

        review.add(sphere((0.0, 0.0, -200.0), 7.0, status="confirmed"))
        ws.save_review(scan["series_uid"], review)
        stored = ws.load_detections(scan["series_uid"])
    assert stored["threshold"] == 0.3 and len(stored["detections"]) >= len(scan["findings"])  # every candidate kept
    assert main(["detect", str(path), "--workspace", str(ws_dir), "--threshold", "0.3"]) == 0
    assert "0 new finding(s)" in capsys.readouterr().err
    assert main(["annotations", "list", "--workspace", str(ws_dir), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["scans"][0]
    assert len(again["findings"]) == len(scan["findings"]) + 1
    assert again["findings"][0]["id"] == first["id"] and again["findings"][0]["status"] == "rejected"
    assert again["status"] == "in review" and again["findings"][-1]["source"] == "user"
    assert main(["annotations", "list", "--workspace", str(ws_dir)]) == 0
    text = capsys.readouterr().out
    assert "in review" in text and "rejected" in text


def test_errors_are_one_line_and_exit_2(phantom_scan, tmp_path, capsys):
    path, ph = phantom_scan
    ws_dir = tmp_path / "ws"
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["annotations", "import", str(bad), "--workspace", str(ws_dir), "--scan", str(path)]) == 2
    assert "bad.csv: missing column(s) seriesuid" in one_error_line(capsys)
    assert main(["annotations", "list", "--workspace", str(tmp_path / "none")]) == 2
    assert "not a LungView workspace" in one_error_line(capsys)
    assert main(["annotations", "export", "--workspace", str(ws_dir), "--format", "luna16", "--out",
                 str(tmp_path / "x.csv"), "--scan", "9.9"]) == 2
    assert "no scan 9.9 in this workspace" in one_error_line(capsys)
    assert main(["annotations", "export", "--workspace", str(ws_dir), "--format", "luna16", "--out",
                 str(tmp_path / "missing" / "deeper" / "x.csv")]) == 0  # folders are made
    assert "0 finding(s) written" in capsys.readouterr().err
    with Workspace(ws_dir):
        assert main(["annotations", "import", str(bad), "--workspace", str(ws_dir)]) == 2
        assert "workspace in use by another LungView" in one_error_line(capsys)
    assert main(["annotations", "export", "--workspace", str(ws_dir), "--format", "seg", "--out",
                 str(tmp_path / "x.dcm")]) == 2
    assert "no confirmed nodule to export" in one_error_line(capsys)
    with Workspace(ws_dir) as ws:
        (entry,) = ws.scans()
        review = ws.load_review(entry.series_uid)
        from lungview.review import sphere

        review.add(sphere((0.0, 0.0, -200.0), 7.0, status="confirmed"))
        ws.save_review(entry.series_uid, review)
    assert main(["annotations", "export", "--workspace", str(ws_dir), "--format", "sr", "--out",
                 str(tmp_path / "x.dcm")]) == 2
    assert ".nrrd: not a DICOM series; SEG and SR need the DICOM images" in one_error_line(capsys)
    assert not (tmp_path / "x.dcm").exists()
    # a folder that cannot be written (a file stands where the folder should be)
    (tmp_path / "blocked").write_text("a file")
    assert main(["annotations", "export", "--workspace", str(ws_dir), "--format", "csv", "--out",
                 str(tmp_path / "blocked" / "x.csv")]) == 2
    assert "x.csv: cannot write" in one_error_line(capsys)
