import csv
import json

import pytest

from lungview.cli import main
from lungview.inference.pipeline import STEPS
from lungview.synthetic import make_phantom, write_phantom
from tests.conftest import BOOK_MODELS, need_shared
from tests.inference import luna16_reference
from tests.models.test_checkpoints import CLS, SEG


@pytest.fixture(scope="module")
def scan_dir(tmp_path_factory):
    """A phantom laid out as LUNA16 is: subset0/<series uid>.mhd with annotations.csv beside."""
    ph = make_phantom(33, size=256, slices=70, pixel_mm=1.4, slice_mm=3.0, nodules=3)
    root = tmp_path_factory.mktemp("luna16")
    path = write_phantom(ph, root / "subset0", "mhd")
    (root / "subset0" / "annotations.csv").rename(root / "annotations.csv")
    return path, ph


def book_args():
    need_shared(BOOK_MODELS)
    return ["--seg-model", str(BOOK_MODELS / SEG), "--cls-model", str(BOOK_MODELS / CLS), "--device", "cpu"]


DETECTION_KEYS = {"center_xyz", "center_irc", "diameter_mm", "volume_mm3", "long_axis_mm", "short_axis_mm",
                  "mean_diameter_mm", "p_nodule", "p_malignant", "malignancy_source", "size_category",
                  "size_source", "notes"}


def test_detect_json_csv_and_evaluate_as_luna16(scan_dir, tmp_path, capsys):
    path, ph = scan_dir
    uid = ph.volume.series_uid
    assert path.name == f"{uid}.mhd" and uid.count(".") > 5  # a UID full of dots, as LUNA16's
    out_csv = tmp_path / "det.csv"
    assert main(["detect", str(path), *book_args(), "--threshold", "0", "--json", "--out", str(out_csv)]) == 0
    doc = json.loads(capsys.readouterr().out)
    (scan,) = doc["scans"]
    assert scan["series_uid"] == uid  # the file name minus .mhd, not cut at its first dot
    assert scan["device"].startswith("CPU")
    assert set(scan["timings_s"]) == set(STEPS)
    assert scan["models"]["segmentation"]["origin"] == "option"
    assert len(scan["detections"]) == scan["candidates"] > 0  # threshold 0: every candidate
    det = scan["detections"][0]
    assert set(det) == DETECTION_KEYS
    assert det["p_malignant"] is None and det["malignancy_source"] == "no malignancy model"
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == len(scan["detections"])
    assert list(rows[0])[:5] == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    assert {r["seriesuid"] for r in rows} == {uid}
    # LUNA16's seriesuids.csv lists a second scan that had no detection at all: it counts
    uids = tmp_path / "seriesuids.csv"
    uids.write_text(f"{uid}\n1.2.3.4.5.6.7.8.9\n")
    annotations = path.parent.parent / "annotations.csv"
    assert main(["evaluate", str(out_csv), str(annotations), "--seriesuids", str(uids), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ev = doc["evaluations"]
    assert [e["rule"] for e in ev] == ["luna16", "book"]
    assert ev[0]["nodules"] == len(ph.nodules) and ev[0]["scans"] == 2 and not doc["warnings"]
    assert set(ev[0]["froc"]) == {"0.125", "0.25", "0.5", "1.0", "2.0", "4.0", "8.0"}
    # the same file scored by the restatement of LUNA16's script
    results = [{"seriesuid": r["seriesuid"], "coordX": r["coordX"], "coordY": r["coordY"], "coordZ": r["coordZ"],
                "probability": r["probability"]} for r in rows]
    truth = {uid: [{"coordX": n.center_xyz[0], "coordY": n.center_xyz[1], "coordZ": n.center_xyz[2],
                    "diameter_mm": n.diameter_mm, "state": "Included"} for n in ph.nodules]}
    _, cpm = luna16_reference.froc_and_cpm([uid, "1.2.3.4.5.6.7.8.9"], results, truth, max_marks=100)
    assert ev[0]["cpm"] == pytest.approx(cpm, abs=1e-3)
    # without the list: the scans of the detections file, with a warning
    assert main(["evaluate", str(out_csv), str(annotations)]) == 0
    captured = capsys.readouterr()
    assert "rule luna16:" in captured.out and "complete miss" in captured.out and "CPM" in captured.out
    assert "no --seriesuids" in captured.err


def test_detect_text_output_names_device_and_models(scan_dir, capsys):
    path, _ = scan_dir
    assert main(["detect", str(path), *book_args(), "--threshold", "0"]) == 0
    out = capsys.readouterr().out
    assert "device: CPU" in out and "segmentation book UNetWrapper" in out and "timings:" in out
    # the table's sizes are the JSON's, not rounded a second time (6.95 of 6.9497 would print 7.0)
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["x", "mm"])
    rows = [line.split() for line in lines[header + 1:]]
    assert main(["detect", str(path), *book_args(), "--threshold", "0", "--json"]) == 0
    (scan,) = json.loads(capsys.readouterr().out)["scans"]
    assert len(rows) == len(scan["detections"]) > 0
    for row, d in zip(rows, scan["detections"]):
        assert row[5:8] == [f"{d[k]:.2f}" for k in ("diameter_mm", "long_axis_mm", "short_axis_mm")]


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


def test_detect_split_over_two_processes_equals_one(tmp_path, capsys):
    """`lungview detect --nproc 2` (torchrun): each process takes every other scan, reading the
    next while it runs the current; process 0 writes the results of all in the order of the paths,
    the same as one process, and a scan that cannot be read is reported and skipped."""
    import os
    import subprocess
    import sys

    paths = []
    for seed in range(81, 87):
        ph = make_phantom(seed, size=160, slices=50, pixel_mm=2.0, slice_mm=2.5, nodules=2, kinds=("solid",),
                          diameter_mm=(8, 16))
        paths.append(str(write_phantom(ph, tmp_path / str(seed), "mhd")))
    bad = tmp_path / "broken.mhd"
    bad.write_text("ObjectType = Image\nNDims = 3\n")
    paths.insert(3, str(bad))
    assert main(["detect", *paths, "--threshold", "0", "--out", str(tmp_path / "one.json")]) == 2
    assert "broken.mhd" in capsys.readouterr().err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "lungview", "detect", *paths, "--threshold", "0", "--out",
                           str(tmp_path / "two.json"), "--nproc", "2"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "1 of 7 scan(s) failed" in done.stderr and "broken.mhd" in done.stderr
    assert "Traceback" not in done.stderr and "exitcode" not in done.stderr  # our lines, not torchrun's
    one = json.loads((tmp_path / "one.json").read_text())["scans"]
    two = json.loads((tmp_path / "two.json").read_text())["scans"]
    assert [s["path"] for s in two] == [s["path"] for s in one] == [p for p in paths if p != str(bad)]
    for a, b in zip(one, two):
        assert a["series_uid"] == b["series_uid"] and len(a["detections"]) == len(b["detections"]) > 0
        for da, db in zip(a["detections"], b["detections"]):
            assert da["center_xyz"] == pytest.approx(db["center_xyz"], abs=1e-6)
            assert da["p_nodule"] == pytest.approx(db["p_nodule"], abs=1e-6)


def test_detect_backend_option_names_what_ran(scan_dir, tmp_path, capsys, monkeypatch):
    """`--backend` picks the runtime and the output says which ran (the default, auto, is OpenVINO on
    a CPU where it is installed); a runtime that is missing, or one asked for on a GPU, is one line."""
    monkeypatch.setenv("LUNGVIEW_HOME", str(tmp_path / "home"))
    path, _ = scan_dir
    runs = {}
    for backend in ("torch", "onnxruntime", "auto"):
        assert main(["detect", str(path), "--device", "cpu", "--precision", "fp32", "--backend", backend,
                     "--json"]) == 0
        (scan,) = json.loads(capsys.readouterr().out)["scans"]
        runs[backend] = scan
    assert runs["torch"]["backend"].startswith("PyTorch") and runs["torch"]["timings_s"]["export"] == 0
    assert runs["onnxruntime"]["backend"].startswith("ONNX Runtime")
    assert runs["auto"]["backend"].startswith("OpenVINO")
    assert len({len(s["detections"]) for s in runs.values()}) == 1  # fp32: the same findings on each
    assert main(["detect", str(path), "--device", "cpu"]) == 0  # the text output names it too
    assert "networks run by OpenVINO" in capsys.readouterr().out
    from lungview.inference import backends

    monkeypatch.setattr(backends, "installed", lambda name: name == "torch")
    assert main(["detect", str(path), "--device", "cpu", "--backend", "openvino"]) == 2
    err = capsys.readouterr().err
    assert "OpenVINO is not installed: pip install 'lungview[openvino]'" in err and err.count("\n") == 1
