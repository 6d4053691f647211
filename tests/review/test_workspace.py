"""The workspace: per-scan files that load back exactly, one writer at a time, clear errors for
damaged or foreign files, and autosave off the calling thread."""

import json
import threading

import numpy as np
import pytest

from lungview.core import CtVolume, LungViewError
from lungview.core.findings import Detection
from lungview.review import Review, sphere
from lungview.review.autosave import Autosaver
from lungview.review.workspace import Workspace


def volume(uid="1.2.826.0.1.3680043.10.1416.99"):
    return CtVolume(hu=np.zeros((4, 8, 8), np.int16), spacing_xyz=(0.7, 0.7, 2.5), origin_xyz=(0, 0, 0),
                    series_uid=uid, series_description="chest 2.5 mm")


def det(x, p):
    return Detection(center_xyz=(x, 0.0, 0.0), center_irc=(0, 0, 0), diameter_mm=6.0, volume_mm3=113.1,
                     long_axis_mm=7.0, short_axis_mm=5.0, p_nodule=p, p_malignant=None,
                     malignancy_source="no malignancy model", size_category="6-8 mm")


def scan_result(dets):
    return {"path": "scan", "series_uid": volume().series_uid, "detections": [d.to_dict() for d in dets]}


def test_review_round_trip_status_and_detection_runs(tmp_path):
    vol = volume()
    with Workspace(tmp_path / "ws") as ws:
        ws.add_scan(vol, tmp_path / "scan")
        uid = vol.series_uid
        assert ws.status(uid) == "new" and ws.load_detections(uid) is None
        assert ws.record_detection(vol, tmp_path / "scan", scan_result([det(0, 0.9), det(40, 0.6), det(80, 0.2)]),
                                   threshold=0.5) == (0, 2)
        assert ws.status(uid) == "detected"
        review = ws.load_review(uid)
        a, b = review.findings
        review.set_status(a.id, "confirmed")
        review.add(sphere((5.0, 5.0, 5.0), 4.0, note="added"))
        ws.save_review(uid, review)
        assert ws.status(uid) == "in review"
        # the detector again: the decision stays, the known finding is matched, nothing new above 0.5
        assert ws.record_detection(vol, tmp_path / "scan", scan_result([det(1, 0.95)]), threshold=0.5) == (1, 0)
        back = ws.load_review(uid)
        assert back.get(a.id).status == "confirmed" and back.get(a.id).p_nodule == 0.95
        assert [f.id for f in back.findings] == [f.id for f in review.findings]
        for f in back.findings:
            if f.status == "unreviewed":
                back.set_status(f.id, "rejected")
        ws.save_review(uid, back)
        assert ws.status(uid) == "reviewed"
        (entry,) = ws.scans()
        assert entry.description == "chest 2.5 mm" and entry.shape == (4, 8, 8) and entry.path.endswith("scan")
        ws.save_view(uid, {"slice": [2, 4, 4], "window": [-600, 1500]})
        assert ws.load_view(uid) == {"slice": [2, 4, 4], "window": [-600, 1500]}
    # nothing of the scan's own is written, and every file is versioned JSON
    for f in (tmp_path / "ws").rglob("*.json"):
        assert json.loads(f.read_text())["version"] == 1


def test_one_writer_at_a_time_readers_welcome(tmp_path):
    first = Workspace(tmp_path)
    with pytest.raises(LungViewError, match=r"in use by another LungView \(pid \d+\)"):
        Workspace(tmp_path)
    Workspace(tmp_path, writable=False).scans()  # reading is fine
    first.close()
    Workspace(tmp_path).close()  # released


def test_damaged_foreign_and_newer_files_are_named(tmp_path):
    with pytest.raises(LungViewError, match="not a LungView workspace"):
        Workspace(tmp_path / "nothing", writable=False)
    ws = Workspace(tmp_path)
    vol = volume()
    ws.add_scan(vol, tmp_path)
    path = ws.folder(vol.series_uid) / "review.json"
    path.write_text('{"version": 1, "review": {"findings": [{"id": 3}]}}')
    with pytest.raises(LungViewError, match=r"review\.json: damaged review"):
        ws.load_review(vol.series_uid)
    path.write_text("{not json")
    with pytest.raises(LungViewError, match=r"review\.json: not a LungView workspace file"):
        ws.load_review(vol.series_uid)
    path.write_text('{"version": 7, "review": {}}')
    with pytest.raises(LungViewError, match="workspace version 7; this LungView reads up to 1"):
        ws.load_review(vol.series_uid)
    with pytest.raises(LungViewError, match="no scan 9.9 in this workspace"):
        ws.entry("9.9")
    with pytest.raises(LungViewError, match="cannot name a workspace entry"):
        ws.folder("../etc")
    ws.close()


def test_autosave_writes_the_newest_state_off_the_calling_thread(tmp_path):
    ws = Workspace(tmp_path)
    vol = volume()
    ws.add_scan(vol, tmp_path)
    review = Review(vol.series_uid)
    writers = []
    saver = Autosaver(ws, on_saved=lambda uid, kind, s: writers.append(threading.current_thread().name))
    for i in range(100):
        review.add(sphere((float(i), 0.0, 0.0), 5.0))
        saver.schedule(vol.series_uid, "review", review.to_dict())
    assert saver.flush()
    assert len(ws.load_review(vol.series_uid)) == 100
    assert 1 <= len(writers) < 100 and set(writers) == {"lungview-autosave"}  # a burst: few writes
    review.set_status(review.findings[0].id, "confirmed")
    saver.schedule(vol.series_uid, "review", review.to_dict())
    assert saver.close()
    assert ws.load_review(vol.series_uid).findings[0].status == "confirmed"
    ws.close()


def test_autosave_reports_a_failed_write_and_keeps_the_edit(tmp_path):
    ws = Workspace(tmp_path)
    vol = volume()
    ws.add_scan(vol, tmp_path)
    errors = []
    saver = Autosaver(ws, on_error=errors.append)
    folder = ws.folder(vol.series_uid)
    (folder / "review.json").mkdir()  # the file cannot be replaced: a directory is in its place
    review = Review(vol.series_uid)
    review.add(sphere((0.0, 0.0, 0.0), 5.0))
    saver.schedule(vol.series_uid, "review", review.to_dict())
    assert not saver.flush(timeout=0.8)
    assert errors and "could not save" in errors[0] and "review.json" in errors[0]
    (folder / "review.json").rmdir()
    assert saver.flush(timeout=5.0)  # retried
    assert len(ws.load_review(vol.series_uid)) == 1
    saver.close()
    ws.close()
