"""Findings in and out: LUNA16 and the book's CSVs read back by the csv module, Slicer's
.mrk.json validated against Slicer's own published schema and re-imported, LIDC-IDRI reads
against a contour worked out by hand and against LUNA16's annotation of the same nodule."""

import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from lungview.core import CtVolume, LungViewError
from lungview.io.markups import read_markups
from lungview.review import sphere
from lungview.review.exchange import export, import_file, lidc_findings
from lungview.review.workspace import Workspace
from tests.conftest import LIDC, need_shared

SCHEMA = Path(__file__).resolve().parents[1] / "data" / "markups-schema-v1.0.3.json"
UID_A, UID_B = "1.2.826.0.1.3680043.10.1416.1", "1.2.826.0.1.3680043.10.1416.2"


def vol(uid, shape=(20, 64, 64), spacing=(0.5, 0.5, 2.0), origin=(-16.0, -16.0, -20.0)):
    return CtVolume(hu=np.zeros(shape, np.int16), spacing_xyz=spacing, origin_xyz=origin, series_uid=uid)


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    for uid in (UID_A, UID_B):
        w.add_scan(vol(uid), tmp_path / uid)
    review = w.load_review(UID_A)
    a = review.add(sphere((1.5, -2.25, 3.125), 8.0, status="confirmed", type="part-solid", malignancy="malignant",
                          rating=4, solid_mm=5.0, note="grew"))
    review.add(sphere((10.0, 0.0, 0.0), 5.0, status="rejected"))
    review.add(sphere((-10.0, 0.0, 0.0), 6.0))  # unreviewed: in neither LUNA16 file
    w.save_review(UID_A, review)
    yield w
    w.close()
    assert a


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_luna16_and_candidates_csv_as_luna16_and_the_book_write_them(ws, tmp_path):
    assert export(ws, "luna16", tmp_path / "annotations.csv") == 1
    header, *body = rows(tmp_path / "annotations.csv")
    assert header == ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
    assert body == [[UID_A, "1.5000", "-2.2500", "3.1250", "8.000"]]
    assert export(ws, "candidates", tmp_path / "candidates.csv") == 2
    header, *body = rows(tmp_path / "candidates.csv")
    assert header == ["seriesuid", "coordX", "coordY", "coordZ", "class"]
    assert body == [[UID_A, "1.5000", "-2.2500", "3.1250", "1"], [UID_A, "10.0000", "0.0000", "0.0000", "0"]]


def test_candidates_import_labels_by_class_skips_unknown_scans_and_repeats(ws, tmp_path):
    path = tmp_path / "candidates.csv"
    path.write_text("seriesuid,coordX,coordY,coordZ,class\n"
                    f"{UID_B},1,2,3,1\n{UID_B},4,5,6,0\n9.9.9,0,0,0,1\n")
    report = import_file(ws, path)
    assert report.added == {UID_B: 2} and report.unknown_scans == {"9.9.9": 1}
    assert "1 row(s) of 1 other scan(s) skipped" in report.summary()
    got = ws.load_review(UID_B).findings
    assert [(f.center_xyz, f.status, f.diameter_mm, f.source) for f in got] == [
        ((1.0, 2.0, 3.0), "confirmed", 0.0, "imported from candidates.csv"),
        ((4.0, 5.0, 6.0), "rejected", 0.0, "imported from candidates.csv")]
    assert got[0].lung_rads is None  # a point of unknown size has no category
    again = import_file(ws, path)
    assert again.known == 2 and sum(again.added.values()) == 0


def test_mrk_json_validates_against_slicers_schema_and_reimports(ws, tmp_path):
    out = tmp_path / "a.mrk.json"
    with pytest.raises(LungViewError, match="one scan"):
        review_b = ws.load_review(UID_B)
        review_b.add(sphere((0.0, 0.0, 0.0), 4.0))
        ws.save_review(UID_B, review_b)
        export(ws, "mrk", out)
    assert export(ws, "mrk", out, UID_A) == 3
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    assert doc["markups"][0]["controlPoints"][0]["position"] == [1.5, -2.25, 3.125]
    assert doc["markups"][0]["display"]["glyphSize"] == 8.0
    before = ws.load_review(UID_A).findings
    report = import_file(ws, out, UID_B)
    assert report.added == {UID_B: 3}
    back = ws.load_review(UID_B).findings[-3:]
    for a, b in zip(before, back):
        assert b.center_xyz == a.center_xyz and b.diameter_mm == pytest.approx(a.diameter_mm, abs=0.05)
        assert (b.status, b.type, b.malignancy, b.rating, b.note) == (a.status, a.type, a.malignancy, a.rating, a.note)


def test_mrk_reader_takes_ras_micrometres_and_rois(tmp_path):
    path = tmp_path / "slicer.mrk.json"
    path.write_text(json.dumps({"@schema": "x", "markups": [
        {"type": "Fiducial", "coordinateSystem": "RAS", "coordinateUnits": "um", "controlPoints": [
            {"label": "F-1", "position": [1000.0, -2000.0, 3000.0], "positionStatus": "defined"},
            {"label": "F-2", "position": [0, 0, 0], "positionStatus": "undefined"}]},
        {"type": "ROI", "coordinateSystem": "LPS", "center": [5, 6, 7], "size": [10, 8, 6],
         "controlPoints": [{"label": "R", "position": [5, 6, 7]}]},
        {"type": "Line", "controlPoints": [{"position": [0, 0, 0]}, {"position": [1, 1, 1]}]}]}))
    a, b = read_markups(path)
    assert a.center_xyz == (-1.0, 2.0, 3.0) and a.label == "F-1" and a.size_mm is None
    assert b.center_xyz == (5.0, 6.0, 7.0) and b.size_mm == (10.0, 8.0, 6.0)
    path.write_text('{"markups": [{"type": "Fiducial", "controlPoints": [{"position": [1, "x", 2]}]}]}')
    with pytest.raises(LungViewError, match="slicer.mrk.json: a control point's position is not three numbers"):
        read_markups(path)


LIDC_XML = """<?xml version="1.0" encoding="UTF-8"?>
<LidcReadMessage xmlns="http://www.nih.gov"><ResponseHeader><SeriesInstanceUid>{uid}</SeriesInstanceUid></ResponseHeader>
{sessions}</LidcReadMessage>"""


def session(reader, nodules, non_nodules=0):
    body = "".join(nodules) + "<nonNodule><nonNoduleID>x</nonNoduleID></nonNodule>" * non_nodules
    return f"<readingSession><servicingRadiologistID>{reader}</servicingRadiologistID>{body}</readingSession>"


def square(x0, y0, n, zs, malignancy, texture=5):
    """A reader's nodule: an n x n pixel square outline on each of the slices at zs (mm)."""
    edge = [(x0 + i, y0) for i in range(n)] + [(x0 + n - 1, y0 + i) for i in range(1, n)] + \
           [(x0 + n - 1 - i, y0 + n - 1) for i in range(1, n)] + [(x0, y0 + n - 1 - i) for i in range(1, n - 1)]
    rois = "".join(f"<roi><imageZposition>{z}</imageZposition><imageSOP_UID>1.2</imageSOP_UID><inclusion>TRUE</inclusion>"
                   + "".join(f"<edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap>" for x, y in edge)
                   + "</roi>" for z in zs)
    return (f"<unblindedReadNodule><noduleID>n</noduleID><characteristics><calcification>6</calcification>"
            f"<texture>{texture}</texture><malignancy>{malignancy}</malignancy></characteristics>{rois}"
            "</unblindedReadNodule>")


def point(x, y, z):
    return (f"<unblindedReadNodule><noduleID>s</noduleID><roi><imageZposition>{z}</imageZposition>"
            f"<inclusion>TRUE</inclusion><edgeMap><xCoord>{x}</xCoord><yCoord>{y}</yCoord></edgeMap></roi>"
            "</unblindedReadNodule>")


def test_lidc_consensus_of_squares_worked_by_hand(ws, tmp_path):
    # three readers draw 10 x 10 pixels (5 x 5 mm) on slices z = -10, -8, -6 (index 5, 6, 7);
    # a fourth draws nothing there but a 6 x 6 square elsewhere and a small point.
    sessions = [session(r, [square(20, 30, 10, (-10, -8, -6), m)]) for r, m in (("r1", 4), ("r2", 5), ("r3", 2))]
    sessions.append(session("r4", [square(50, 10, 6, (0, 2), 3), point(5, 5, 0)], non_nodules=2))
    path = tmp_path / "read.xml"
    path.write_text(LIDC_XML.format(uid=UID_B, sessions="".join(sessions)))
    report = import_file(ws, path, vol=vol(UID_B))
    assert report.added == {UID_B: 2} and report.left_out == {"small": 1, "non_nodules": 2}
    accepted, single = ws.load_review(UID_B).findings
    # centre of pixels 20..29, 30..39 on slices 5..7: x = -16 + 24.5 * 0.5, y = -16 + 34.5 * 0.5, z = -8
    assert accepted.center_xyz == pytest.approx((-3.75, 1.25, -8.0))
    # 300 voxels of 0.5 mm3 each: the sphere of 150 mm3
    assert accepted.diameter_mm == pytest.approx((6 * 150 / np.pi) ** (1 / 3))
    assert accepted.long_axis_mm == pytest.approx(np.hypot(4.5, 4.5) + 0.5)
    assert accepted.short_axis_mm == pytest.approx(2 * 4.5 / np.sqrt(2) + 0.5)
    assert (accepted.status, accepted.malignancy, accepted.rating) == ("confirmed", "malignant", 4)
    assert accepted.note == "marked by 3 of 4 LIDC readers"
    assert single.status == "unsure" and single.note == "marked by 1 of 4 LIDC readers"
    assert single.malignancy == "unknown"  # median 3
    # each reader's contour is kept as that reader's mask; the finding's own is what half drew
    masks = ws.load_masks(UID_B, vol(UID_B))
    assert set(masks.readers[accepted.id]) == {"r1", "r2", "r3"} and set(masks.readers[single.id]) == {"r4"}
    assert masks.count(accepted.id) == 300 and masks.count(single.id) == 72  # 10x10x3, 6x6x2
    with pytest.raises(LungViewError, match="read.xml: reads series .*, not the scan's"):
        lidc_findings(path, vol(UID_A))  # (a read of another series)


def test_lidc_idri_0001_consensus_agrees_with_luna16(tmp_path):
    need_shared(LIDC)
    from lungview.io import open_volume
    from lungview.io.annotations import read_annotations

    scan = open_volume(LIDC / "dicom")
    (truth,) = read_annotations(LIDC / "luna16-annotations.csv")
    with Workspace(tmp_path / "ws") as w:
        w.add_scan(scan, LIDC / "dicom")
        report = import_file(w, LIDC / "lidc-reads.xml", vol=scan)
        (f,) = w.load_review(scan.series_uid).findings
    assert report.left_out["small"] > 0
    assert np.linalg.norm(np.subtract(f.center_xyz, truth.center_xyz)) < 5.0
    assert f.diameter_mm == pytest.approx(truth.diameter_mm, rel=0.15)
    assert f.status == "confirmed" and f.malignancy == "malignant"
