"""LUNA16 as a training source: its layout, each scan's examples as the training code reads a
workspace's (training.examples.Example), and its splits.

The layout (https://luna16.grand-challenge.org/Data/): subset0 ... subset9 folders of
`<series UID>.mhd` (+ .raw) files, `annotations.csv` (seriesuid, coordX, coordY, coordZ,
diameter_mm), `candidates.csv` or `candidates_V2.csv` (seriesuid, coordX, coordY, coordZ, class),
and, for malignancy, the book's `annotations_with_malignancy.csv` (its p2ch14 adds `mal_bool` to
the annotations). As the book's p2ch14 LunaDataset: the annotated nodules are the positives, the
class-0 candidates the negatives; malignancy learns from the annotated nodules with `mal_bool`.

Splits: the book's (its LunaDataset's val_stride=10: every tenth series of the sorted series list,
starting with the first, is validation) or LUNA16's ten folds (fold K: the scans of subsetK).

Plain Python (no Qt, no torch).
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungview.core import LungViewError
from lungview.io.annotations import Annotation, read_annotations
from lungview.training.examples import ROLES, Example, TrainingData

BOOK_VAL_STRIDE = 10  # p2ch11-14 LunaDataset(val_stride=10)
CANDIDATE_FILES = ("candidates_V2.csv", "candidates.csv")  # the newer list first
MALIGNANCY_FILE = "annotations_with_malignancy.csv"
_SUBSET = re.compile(r"subset(\d+)$")


@dataclass
class Luna16:
    root: Path
    scans: dict[str, Path]  # series UID -> its .mhd
    subset: dict[str, int]  # series UID -> K of subsetK
    annotations: list[Annotation]
    candidates: list[tuple[str, tuple[float, float, float], int]]  # (uid, centre xyz, class)
    candidates_file: str
    malignancy: list[Annotation] | None = None  # the book's annotations_with_malignancy.csv
    skipped: list[str] = field(default_factory=list)  # rows of series not in the subsets


def _read_candidates(path: Path) -> list[tuple[str, tuple[float, float, float], int]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("seriesuid", "coordX", "coordY", "coordZ", "class")
                       if c not in (reader.fieldnames or [])]
            if missing:
                raise LungViewError(f"{path}: missing column(s) {', '.join(missing)}")
            out = []
            for n, row in enumerate(reader, start=2):
                try:
                    xyz = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
                    cls = int(float(row["class"]))
                except (TypeError, ValueError):
                    raise LungViewError(f"{path}: line {n} has a non-numeric coordinate or class") from None
                out.append((row["seriesuid"], xyz, cls))
            return out
    except OSError as exc:
        raise LungViewError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LungViewError(f"{path}: not a CSV file ({exc})") from None


def open_luna16(root: str | os.PathLike) -> Luna16:
    """LUNA16's layout under `root`: one clear error when a part is missing."""
    root = Path(root)
    if not root.is_dir():
        raise LungViewError(f"{root}: not a folder")
    subsets = sorted((int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _SUBSET.match(p.name)))
    if not subsets:
        raise LungViewError(f"{root}: no subset0 ... subset9 folders (LUNA16's layout)")
    scans, subset = {}, {}
    for k, folder in subsets:
        for mhd in sorted(folder.glob("*.mhd")):
            uid = mhd.name[:-len(".mhd")]
            if uid in scans:
                raise LungViewError(f"{mhd}: series {uid} is in {scans[uid].parent.name} too")
            scans[uid], subset[uid] = mhd, k
    if not scans:
        raise LungViewError(f"{root}: no .mhd scans in {', '.join(p.name for _, p in subsets)}")
    ann_path = root / "annotations.csv"
    if not ann_path.exists():
        raise LungViewError(f"{ann_path}: missing (LUNA16's nodule annotations)")
    cand_path = next((root / f for f in CANDIDATE_FILES if (root / f).exists()), None)
    if cand_path is None:
        raise LungViewError(f"{root}: no candidates_V2.csv or candidates.csv (LUNA16's candidates)")
    annotations = read_annotations(ann_path)
    candidates = _read_candidates(cand_path)
    malignancy = None
    if (root / MALIGNANCY_FILE).exists():
        malignancy = read_annotations(root / MALIGNANCY_FILE)
        if malignancy and "mal_bool" not in malignancy[0].extra:
            raise LungViewError(f"{root / MALIGNANCY_FILE}: missing column mal_bool (the book's malignancy label)")
    skipped = sorted(({a.series_uid for a in annotations} | {c[0] for c in candidates}) - set(scans))
    return Luna16(root, scans, subset, [a for a in annotations if a.series_uid in scans],
                  [c for c in candidates if c[0] in scans], cand_path.name,
                  None if malignancy is None else [a for a in malignancy if a.series_uid in scans], skipped)


def luna16_sides(luna: Luna16, fold: int | None = None) -> dict[str, str]:
    """Each scan's side: LUNA16's fold K (the scans of subsetK validate), or without a fold the
    book's split (every tenth of the sorted series UIDs, from the first)."""
    uids = sorted(luna.scans)
    if fold is not None:
        if fold not in set(luna.subset.values()):
            raise LungViewError(f"{luna.root}: no subset{fold} for fold {fold}")
        return {u: "validation" if luna.subset[u] == fold else "train" for u in uids}
    return {u: "validation" if i % BOOK_VAL_STRIDE == 0 else "train" for i, u in enumerate(uids)}


def _is_malignant(a: Annotation) -> int:
    value = str(a.extra.get("mal_bool", "")).strip().lower()
    if value not in ("true", "false", "1", "0", "1.0", "0.0"):
        raise LungViewError(f"{MALIGNANCY_FILE}: series {a.series_uid} has mal_bool {value!r} (True or False)")
    return int(value in ("true", "1", "1.0"))


def luna16_examples(luna: Luna16, role: str, max_negatives: int | None = None,
                    seed: int = 0) -> dict[str, list[Example]]:
    """Per scan, as the book's p2ch14 LunaDataset: nodule, the annotations positive and the
    class-0 candidates negative (at most `max_negatives` per scan, a seeded draw); malignancy, the
    annotations of annotations_with_malignancy.csv labelled by mal_bool; segmentation, the
    annotations (their masks grown in the scan)."""
    if role not in ROLES:
        raise LungViewError(f"no training recipe for {role!r}; choose from {', '.join(ROLES)}")
    out: dict[str, list[Example]] = {}
    if role == "malignancy":
        if luna.malignancy is None:
            raise LungViewError(f"{luna.root}: malignancy needs the book's {MALIGNANCY_FILE} (annotations with "
                                "mal_bool)")
        for a in luna.malignancy:
            m = _is_malignant(a)
            out.setdefault(a.series_uid, []).append(
                Example(a.series_uid, a.center_xyz, m, "malignant" if m else "benign", a.diameter_mm))
        return out
    for a in luna.annotations:
        out.setdefault(a.series_uid, []).append(
            Example(a.series_uid, a.center_xyz, 1, "annotated" if role == "nodule" else "mask", a.diameter_mm))
    if role == "nodule":
        negatives: dict[str, list[Example]] = {}
        for uid, xyz, cls in luna.candidates:
            if cls == 0:
                negatives.setdefault(uid, []).append(Example(uid, xyz, 0, "candidate"))
        rng = np.random.default_rng(seed)
        for uid in sorted(negatives):
            neg = negatives[uid]
            if max_negatives is not None and len(neg) > max_negatives:
                neg = [neg[i] for i in sorted(rng.choice(len(neg), max_negatives, replace=False))]
            out.setdefault(uid, []).extend(neg)
    return out


class AnnotationMasks:
    """Segmentation targets for a LUNA16 scan, which has no masks: each annotated nodule's mask
    as LungView measures it (inference.measure.mask_at: grown in the scan from the annotated
    centre), what the book's buildAnnotationMask approximates with a thresholded box."""

    def __init__(self, vol, annotations: list[Annotation]):
        from lungview.inference.measure import mask_at

        self.labels = np.zeros(vol.shape, dtype=np.uint16)
        for n, a in enumerate(annotations, start=1):
            box, mask = mask_at(vol, a.center_xyz, a.diameter_mm)
            self.labels[box][mask] = n


class Luna16Masks:
    """`masks_of` for LUNA16 scans: their annotations' masks (a plain object, so that the crop
    cache's worker processes can take it)."""

    def __init__(self, annotations: list[Annotation]):
        self.by_uid: dict[str, list[Annotation]] = {}
        for a in annotations:
            self.by_uid.setdefault(a.series_uid, []).append(a)

    def __call__(self, uid: str, vol) -> AnnotationMasks:
        return AnnotationMasks(vol, self.by_uid.get(uid, []))


def luna16_training_data(root: str | os.PathLike, role: str, fold: int | None = None,
                         max_negatives: int | None = None, seed: int = 0) -> tuple[TrainingData, Luna16]:
    """The examples and sides of a LUNA16 folder, as training_data gives a workspace's."""
    luna = open_luna16(root)
    examples = luna16_examples(luna, role, max_negatives, seed)
    sides = {u: s for u, s in luna16_sides(luna, fold).items() if u in examples}
    split = f"LUNA16 fold {fold} (subset{fold} validates)" if fold is not None else \
        f"the book's split (every {BOOK_VAL_STRIDE}th series validates)"
    notes = [f"LUNA16 at {luna.root}: {len(luna.scans)} scans, {len(luna.annotations)} annotations, "
             f"{len(luna.candidates)} candidates ({luna.candidates_file}); {split}"]
    if role == "nodule" and max_negatives is not None:
        notes.append(f"at most {max_negatives} class-0 candidates per scan as negatives (a seeded draw)")
    if luna.skipped:
        notes.append(f"{len(luna.skipped)} series in the CSV files are in no subset folder here: left out")
    return TrainingData(role, examples, sides, notes, masks_of=Luna16Masks(luna.annotations)), luna
