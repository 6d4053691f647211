"""`lungview annotations list|import|export`: the workspace's findings for scripts and other tools."""

from __future__ import annotations

import json
import sys

LIST_KEYS = ("id", "source", "status", "center_xyz", "long_axis_mm", "short_axis_mm", "diameter_mm",
             "volume_mm3", "type", "malignancy", "lung_rads", "p_nodule", "p_malignant")


def add_commands(sub, parser_class) -> None:
    ann = sub.add_parser("annotations", help="list, import and export the findings of a workspace")
    verbs = ann.add_subparsers(dest="verb", parser_class=parser_class, required=True)

    ls = verbs.add_parser("list", help="the scans of a workspace and their findings")
    ls.add_argument("--workspace", required=True, metavar="DIR")
    ls.add_argument("--scan", metavar="UID", help="only this series")
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(func=cmd_list)

    im = verbs.add_parser("import", help="LUNA16 annotations.csv, the book's candidates.csv, Slicer .mrk.json, "
                                         "LIDC-IDRI XML reads")
    im.add_argument("files", nargs="+", metavar="FILE")
    im.add_argument("--workspace", required=True, metavar="DIR")
    im.add_argument("--scan", metavar="PATH", help="add this scan to the workspace first (and import into it "
                                                   "a file that names no series, a .mrk.json)")
    im.add_argument("--series", help="SeriesInstanceUID of --scan when its folder holds several")
    im.set_defaults(func=cmd_import)

    ex = verbs.add_parser("export", help="write the findings as LUNA16 / candidates CSV, Slicer .mrk.json, "
                                         "DICOM SEG or SR, or LungView's full CSV")
    ex.add_argument("--workspace", required=True, metavar="DIR")
    ex.add_argument("--format", required=True, choices=("luna16", "candidates", "mrk", "seg", "sr", "csv"))
    ex.add_argument("--out", required=True, metavar="PATH")
    ex.add_argument("--scan", metavar="UID", help="only this series")
    ex.set_defaults(func=cmd_export)
    for p in (ls, im, ex):
        p.add_argument("--debug", action="store_true", help="show tracebacks")


def _finding_json(f) -> dict:
    d = f.to_dict()
    out = {k: d[k] for k in LIST_KEYS}
    out["center_xyz"] = [round(v, 3) for v in d["center_xyz"]]
    for k in ("long_axis_mm", "short_axis_mm", "diameter_mm", "volume_mm3"):
        out[k] = round(d[k], 2)
    out.update(mean_diameter_mm=d["mean_diameter_mm"], rating=d["rating"], note=d["note"])
    return out


def cmd_list(args) -> int:
    from lungview.review.workspace import Workspace

    ws = Workspace(args.workspace, writable=False)
    entries = [ws.entry(args.scan)] if args.scan else ws.scans()
    scans = []
    for e in entries:
        review = ws.load_review(e.series_uid)
        reviewed, total = review.reviewed()
        scans.append({"series_uid": e.series_uid, "path": e.path, "description": e.description,
                      "status": ws.status(e.series_uid, review), "reviewed": reviewed, "total": total,
                      "lung_rads": review.scan_lung_rads(),
                      "findings": [_finding_json(f) for f in review.findings]})
    if args.json:
        print(json.dumps({"scans": scans}, indent=2))
        return 0
    if not scans:
        print(f"{ws.root}: no scans yet")
    for s in scans:
        print(f"{s['series_uid']}  {s['status']}  {s['reviewed']} of {s['total']} reviewed  "
              f"Lung-RADS {s['lung_rads']}  {s['path']}")
        for n, f in enumerate(s["findings"], 1):
            x, y, z = f["center_xyz"]
            p = "" if f["p_nodule"] is None else f"p={f['p_nodule']:.2f}"
            print(f"  N{n:<3} {f['status']:10} {f['type']:12} {f['malignancy']:9} "
                  f"{f['mean_diameter_mm']:5.1f} mm  ({x:7.1f} {y:7.1f} {z:7.1f})  "
                  f"{f['lung_rads'] or '-':3} {p:7} {f['source']}")
    return 0


def cmd_import(args) -> int:
    from lungview.review.exchange import import_file
    from lungview.review.workspace import Workspace

    with Workspace(args.workspace) as ws:
        scan_uid = vol = None
        if args.scan:
            from lungview.io import open_volume

            vol = open_volume(args.scan, series=args.series)
            ws.add_scan(vol, args.scan)
            scan_uid = vol.series_uid
        for path in args.files:
            print(import_file(ws, path, scan_uid, vol).summary())
    return 0


def cmd_export(args) -> int:
    from lungview.review.exchange import export
    from lungview.review.workspace import Workspace

    from lungview.inference.measure import mask_provider

    ws = Workspace(args.workspace, writable=False)
    n = export(ws, args.format, args.out, args.scan, mask_provider)
    sys.stderr.write(f"{args.out}: {n} finding(s) written\n")
    return 0

