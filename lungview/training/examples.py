"""Training examples from a workspace's reviews: what the reader confirmed, rejected, added,
labelled or outlined, per scan, and each scan's side (train or validation), fixed once and kept.

Plain Python (no Qt, no torch): the CLI, the training panel and the tests read the same examples.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from lungview.core import LungViewError

ROLES = ("nodule", "malignancy", "segmentation")
VALIDATION_SHARE = 0.2


@dataclass(frozen=True)
class Example:
    scan: str  # series UID
    center_xyz: tuple[float, float, float]
    label: int  # nodule: 1 nodule, 0 not; malignancy: 1 malignant, 0 benign
    why: str  # "confirmed", "added", "rejected", "candidate of a reviewed scan", "benign", "malignant"
    diameter_mm: float = 0.0


def examples_of(review, detections: dict | None, role: str, reviewed: bool,
                masked: set[str] | frozenset = frozenset()) -> list[Example]:
    """A scan's examples. Nodule: confirmed findings and the reader's own (not rejected) are
    positives, rejected ones negatives; in a reviewed scan, the detector's candidates that no
    finding covers are negatives too. Malignancy: confirmed nodules labelled benign or malignant.
    Segmentation: findings with a mask (`masked`: painted, filled or an LIDC read's), rejected
    findings as crops where nothing should be marked."""
    out = []
    uid = review.series_uid
    for f in review.findings:
        if role == "segmentation":
            if f.status == "rejected":
                out.append(Example(uid, f.center_xyz, 0, "rejected", f.diameter_mm))
            elif f.id in masked:
                out.append(Example(uid, f.center_xyz, 1, "mask", f.diameter_mm))
            continue
        if role == "malignancy":
            if f.status == "confirmed" and f.malignancy in ("benign", "malignant"):
                out.append(Example(uid, f.center_xyz, int(f.malignancy == "malignant"), f.malignancy, f.diameter_mm))
            continue
        if f.status == "rejected":
            out.append(Example(uid, f.center_xyz, 0, "rejected", f.diameter_mm))
        elif f.status == "confirmed":
            out.append(Example(uid, f.center_xyz, 1, "confirmed", f.diameter_mm))
        elif f.source != "detector" and f.status != "unsure":
            out.append(Example(uid, f.center_xyz, 1, "added", f.diameter_mm))
    if role == "nodule" and reviewed and detections:
        for d in detections.get("detections", []):
            c = np.asarray(d["center_xyz"], dtype=float)
            covered = any(math.dist(c, f.center_xyz) < max(f.diameter_mm / 2, d["diameter_mm"] / 2, 3.0)
                          for f in review.findings)
            if not covered:
                out.append(Example(uid, tuple(float(v) for v in c), 0, "candidate of a reviewed scan",
                                   float(d["diameter_mm"])))
    return out


def review_from_truth(review, truths) -> tuple[int, int]:
    """What a reader with the truth at hand does (benches, demonstrations): every finding on a
    nodule ((centre xyz, diameter mm) pairs) confirmed, every other one rejected. Returns
    (confirmed, rejected)."""
    confirmed = 0
    for f in review.findings:
        hit = any(math.dist(f.center_xyz, c) < max(d / 2, 3.0) for c, d in truths)
        review.set_status(f.id, "confirmed" if hit else "rejected")
        confirmed += hit
    return confirmed, len(review) - confirmed


def _rank(uid: str) -> int:
    return int.from_bytes(hashlib.blake2b(uid.encode(), digest_size=8).digest(), "big")


def split_scans(scans: list[str], fixed: dict[str, str], requested: list[str] | None = None) -> dict[str, str]:
    """Each scan's side: the ones fixed before keep theirs; `requested` ones go to validation
    (refused for a scan a model already learned from); the others are assigned once, by a hash
    of the UID (about VALIDATION_SHARE of them), with at least one validation scan when there are
    two or more."""
    sides = {u: fixed[u] for u in scans if u in fixed}
    for u in requested or []:
        if sides.get(u) == "train":
            raise LungViewError(f"scan {u} was trained on before: it cannot become a validation scan")
        sides[u] = "validation"
    new = sorted((u for u in scans if u not in sides), key=_rank)
    for u in new:
        sides[u] = "validation" if _rank(u) % 1000 < VALIDATION_SHARE * 1000 else "train"
    if len(scans) >= 2 and "validation" not in sides.values() and new:
        sides[new[0]] = "validation"  # (the first of the new ones by hash: deterministic)
    if sides and "train" not in sides.values() and new:
        sides[new[-1]] = "train"
    return sides


@dataclass
class TrainingData:
    role: str
    examples: dict[str, list[Example]]  # per scan
    sides: dict[str, str]
    notes: list[str] = field(default_factory=list)
    masks_of: object = None  # segmentation: (uid, vol) -> the scan's Masks

    def scans(self, side: str) -> list[str]:
        return [u for u in self.examples if self.sides.get(u) == side]

    def examples_on(self, side: str) -> list[Example]:
        """Every example of the scans on that side (train or validation)."""
        return [e for u in self.scans(side) for e in self.examples[u]]

    def counts(self) -> dict:
        per_scan = {u: {"side": self.sides.get(u), "positives": sum(e.label for e in ex),
                        "negatives": sum(1 - e.label for e in ex)} for u, ex in self.examples.items()}
        total = {side: {"scans": len(self.scans(side)),
                        "positives": sum(per_scan[u]["positives"] for u in self.scans(side)),
                        "negatives": sum(per_scan[u]["negatives"] for u in self.scans(side))}
                 for side in ("train", "validation")}
        return {"per_scan": per_scan, **total}


def training_data(ws, role: str, requested_validation: list[str] | None = None) -> TrainingData:
    """The examples of every scan of the workspace that has some, and their sides."""
    if role not in ROLES:
        raise LungViewError(f"no fine-tuning recipe for {role!r} yet; choose from {', '.join(ROLES)}")
    examples, notes = {}, []
    for e in ws.scans():
        review = ws.load_review(e.series_uid)
        reviewed = ws.status(e.series_uid, review) == "reviewed"
        masked = frozenset(ws.masked_ids(e.series_uid)) if role == "segmentation" else frozenset()
        detections = ws.load_detections(e.series_uid) if role == "nodule" and reviewed else None
        ex = examples_of(review, detections, role, reviewed, masked)
        if role == "segmentation" and not any(x.label for x in ex):
            continue  # no mask in this scan: nothing to learn the outline from
        if ex:
            examples[e.series_uid] = ex
    if role == "nodule":
        notes.append("in scans marked reviewed (every finding reviewed), the detector's other candidates "
                     "count as negatives")
    for u in requested_validation or []:
        if u not in examples:
            raise LungViewError(f"scan {u} has no training examples (or is not in {ws.root})")
    if role == "segmentation":
        notes.append("the U-Net learns from findings with a mask; rejected findings are crops where nothing "
                     "should be marked")
    sides = split_scans(list(examples), ws.splits(), requested_validation)
    return TrainingData(role, examples, sides, notes, masks_of=ws.load_masks)
