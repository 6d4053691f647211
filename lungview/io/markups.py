"""3D Slicer markups files (.mrk.json, schema v1.0.3): points and ROIs in, one point list per
finding out.

Slicer stores positions in LPS (DICOM's patient coordinates, LungView's own) or RAS (x and y
negated), in mm or um. An ROI has a centre and a size along its own axes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from lungview.core import LungViewError
from lungview.core.atomic import write_text_atomic

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"


@dataclass(frozen=True)
class Markup:
    """One point (or ROI centre) in LPS mm, with what Slicer shows beside it."""

    center_xyz: tuple[float, float, float]
    label: str = ""
    description: str = ""
    name: str = ""  # the markup node's name
    size_mm: tuple[float, float, float] | None = None  # an ROI's extent; None for a point
    id: str = ""  # the control point's id
    color: tuple[float, float, float] | None = None


def _vector(value, path, what) -> tuple[float, float, float]:
    try:
        x, y, z = (float(v) for v in value)
    except (TypeError, ValueError):
        raise LungViewError(f"{path}: {what} is not three numbers") from None
    return x, y, z


def read_markups(path: str | os.PathLike) -> list[Markup]:
    """Every defined control point of every point list, and every ROI, in LPS mm."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LungViewError(f"{path}: not a Slicer markups file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("markups"), list):
        raise LungViewError(f"{path}: not a Slicer markups file (no \"markups\" list)")
    out = []
    for m in data["markups"]:
        if not isinstance(m, dict):
            raise LungViewError(f"{path}: a markup is not an object")
        system = m.get("coordinateSystem", "LPS")
        if system not in ("LPS", "RAS"):
            raise LungViewError(f"{path}: unknown coordinate system {system!r}")
        units = m.get("coordinateUnits", "mm")
        units = units[0] if isinstance(units, list) and units else units
        scale = {"mm": 1.0, "um": 0.001}.get(units)
        if scale is None:
            raise LungViewError(f"{path}: unknown coordinate units {units!r}")

        def lps(v, what):
            x, y, z = _vector(v, path, what)
            x, y, z = x * scale, y * scale, z * scale
            return (-x, -y, z) if system == "RAS" else (x, y, z)

        name = str(m.get("name", ""))
        kind = m.get("type")
        points = [p for p in m.get("controlPoints", []) or []
                  if isinstance(p, dict) and p.get("positionStatus", "defined") == "defined"]
        if kind == "ROI":
            if "center" in m:
                center = lps(m["center"], "an ROI's centre")
            elif points:
                center = lps(points[0].get("position"), "an ROI's centre")
            else:
                continue
            size = tuple(abs(s) * scale for s in _vector(m.get("size", (0, 0, 0)), path, "an ROI's size"))
            first = points[0] if points else {}
            out.append(Markup(center, str(first.get("label", name)), str(first.get("description", "")), name,
                              size, str(first.get("id", ""))))
        elif kind == "Fiducial":
            for p in points:
                out.append(Markup(lps(p.get("position"), "a control point's position"), str(p.get("label", "")),
                                  str(p.get("description", "")), name, None, str(p.get("id", ""))))
        # lines, curves, planes and angles are not nodules: left out
    return out


def markups_json(markups: list[Markup]) -> dict:
    """One point list per markup (so each finding is its own node in Slicer, with its own
    name, colour and sphere of its size), in LPS mm."""
    nodes = []
    for m in markups:
        display = {"visibility": True, "pointLabelsVisibility": True, "glyphType": "Sphere3D"}
        if m.size_mm is not None:  # the sphere drawn at the nodule's size, not the screen's
            display.update(useGlyphScale=False, glyphSize=float(max(m.size_mm)))
        if m.color is not None:
            display.update(color=list(m.color), selectedColor=list(m.color))
        nodes.append({
            "type": "Fiducial", "name": m.name, "coordinateSystem": "LPS", "coordinateUnits": "mm",
            "locked": False, "labelFormat": "%N-%d",
            "controlPoints": [{
                "id": m.id or "1", "label": m.label, "description": m.description, "associatedNodeID": "",
                "position": [float(v) for v in m.center_xyz],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "selected": True, "locked": False, "visibility": True, "positionStatus": "defined"}],
            "measurements": [],
            "display": display,
        })
    return {"@schema": SCHEMA, "markups": nodes}


def write_markups(path: str | os.PathLike, markups: list[Markup]) -> None:
    try:
        write_text_atomic(path, json.dumps(markups_json(markups), indent=2) + "\n")
    except OSError as exc:
        raise LungViewError(f"{path}: cannot write ({exc.strerror})") from None
