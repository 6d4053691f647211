import csv
import json

import pytest

from lungview.cli import main
from lungview.synthetic import make_phantom, write_phantom
from tests.conftest import BOOK_MODELS, need_shared
from tests.models.test_checkpoints import CLS, SEG


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    ph = make_phantom(33, size=256, slices=70, pixel_mm=1.4, slice_mm=3.0, nodules=3)
    return write_phantom(ph, tmp_path_factory.mktemp("scan"), "mhd"), ph


def book_args():
    need_shared(BOOK_MODELS)
    return ["--seg-model", str(BOOK_MODELS / SEG), "--cls-model", str(BOOK_MODELS / CLS), "--device", "cpu"]


def test_detect_json_csv_and_evaluate(scan_dir, tmp_path, capsys):
    path, ph = scan_dir
    out_csv = tmp_path / "det.csv"
    assert main(["detect", str(path), *book_args(), "--threshold", "0", "--json", "--out", str(out_csv)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (scan,) = doc["scans"]
    assert set(scan) >= {"path", "series_uid", "device", "timings_s", "detections"}
    assert scan["device"].startswith("CPU")
    assert set(scan["timings_s"]) == {"lung_mask", "segmentation", "grouping", "classification", "malignancy",
                                      "measurement"}
    assert scan["models"]["segmentation"]["origin"] == "option"
    assert len(scan["detections"]) == scan["candidates"] > 0  # threshold 0: every candidate
    det = scan["detections"][0]
    assert set(det) == {"center_xyz", "center_irc", "diameter_mm", "volume_mm3", "p_nodule", "p_malignant",
                        "malignancy_source", "size_category"}
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(scan["detections"])
    assert list(rows[0])[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert main(["evaluate", str(out_csv), str(path.parent / "annotations.csv"), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)["evaluations"]
    assert [e["rule"] for e in ev] == ["luna16", "book"]
    assert ev[0]["nodules"] == len(ph.nodules) and ev[0]["scans"] == 1
    assert set(ev[0]["froc"]) == {"0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"}
    assert main(["evaluate", str(out_csv), str(path.parent / "annotations.csv")]) == 0
    text = capsys.readouterr().out
    assert "rule luna16:" in text and "complete miss" in text and "CPM" in text


def test_detect_text_output_names_device_and_models(scan_dir, capsys):
    path, _ = scan_dir
    assert main(["detect", str(path), *book_args()]) == 0
    out = capsys.readouterr().out
    assert "device: CPU" in out and "segmentation book UNetWrapper" in out and "timings:" in out


def test_detect_errors(scan_dir, tmp_path, capsys):
    path, _ = scan_dir
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["detect", str(path), "--seg-model", str(bad), "--cls-model", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lungview: error: {bad}: not a PyTorch checkpoint or damaged (invalid load key, 'n'.)"] or \
        (len(err) == 1 and str(bad) in err[0])
    assert main(["detect", str(tmp_path / "nope"), *book_args()]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["detect", str(path), *book_args(), "--threshold", "2"]) == 2
    assert main(["detect", str(path), *book_args(), "--out", "x.txt"]) == 2
    assert main(["evaluate", str(tmp_path / "none.csv"), str(tmp_path / "a.csv")]) == 2
