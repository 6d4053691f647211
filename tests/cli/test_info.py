import json
import subprocess
import sys

import pytest

from lungview.cli import main

KEYS = {"shape", "spacing", "origin", "direction", "hu_min", "hu_max", "modality", "series_uid",
        "files", "other_series", "warnings"}


def test_info_json(phantom_dicom, small_phantom, capsys):
    assert main(["info", str(phantom_dicom), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert KEYS <= set(info)
    assert info["shape"] == list(small_phantom.volume.shape)
    assert info["spacing"] == pytest.approx(list(small_phantom.volume.spacing_xyz))
    assert info["origin"] == pytest.approx(list(small_phantom.volume.origin_xyz), abs=1e-4)
    assert info["direction"] == [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    assert info["modality"] == "CT" and info["files"] == small_phantom.volume.shape[0]
    assert info["hu_min"] >= -1024 and info["hu_max"] > 300
    assert info["other_series"] == []
    assert all(isinstance(w, str) and w for w in info["warnings"])


def test_info_text_lists_other_series(tmp_path, small_phantom, capsys):
    from lungview.core import CtVolume
    from lungview.io.write import write_dicom_series
    from lungview.synthetic import write_phantom

    write_phantom(small_phantom, tmp_path / "a", "dicom")
    v = small_phantom.volume
    write_dicom_series(CtVolume(hu=v.hu[:12].copy(), spacing_xyz=v.spacing_xyz, origin_xyz=v.origin_xyz,
                                series_uid="1.2.3.4.9"), tmp_path / "b")
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "shape        60 x 128 x 128" in out
    assert "other series 1.2.3.4.9 (CT, 12 files" in out
    assert main(["info", str(tmp_path), "--series", "1.2.3.4.9", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shape"][0] == 12


def test_info_real_scan_json(capsys):
    from tests.conftest import LIDC, need_shared

    assert main(["info", str(need_shared(LIDC) / "dicom"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["shape"] == [133, 512, 512] and info["files"] == 133


def test_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == f"lungview: error: {tmp_path / 'missing'}: no such file or folder\n"
    assert main(["info"]) == 2
    assert capsys.readouterr().err.startswith("lungview: error: the following arguments are required")
    assert main(["info", str(tmp_path), "--series", "1.2"]) == 2
    assert "no DICOM images found" in capsys.readouterr().err


def test_debug_shows_the_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lungview", "info", str(tmp_path / "x.nii"), "--debug"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.rstrip().endswith("no such file or folder")
