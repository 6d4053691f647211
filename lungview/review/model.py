"""The reader's findings of one scan, and every change to them as an undoable edit.

A Finding keeps the detector's numbers (p_nodule, p_malignant, its measured sizes) beside the
reader's decisions (status, type, malignancy label, rating, note): a machine never overwrites a
decision, and re-running detection only brings new candidates in as unreviewed ones. Findings
are immutable; the Review swaps whole findings, so an edit is two small snapshots and undo is
exact. Plain Python: the GUI, the CLI and the tests drive the same object.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass, field, replace

from lungview.core import LungViewError
from lungview.core.findings import Detection, mean_diameter
from lungview.core.shape import sphere_volume
from lungview.review.lungrads import TYPES, lung_rads, worst

STATUSES = ("unreviewed", "confirmed", "rejected", "unsure")
MALIGNANCY = ("unknown", "benign", "malignant")
DETECTOR = "detector"
USER = "user"
MACHINE_FIELDS = ("center_xyz", "long_axis_mm", "short_axis_mm", "diameter_mm", "volume_mm3",
                  "p_nodule", "p_malignant", "detector_notes")
SIZE_FIELDS = ("long_axis_mm", "short_axis_mm", "diameter_mm", "volume_mm3")


def new_id() -> str:
    """A finding's id: a UUID, written as the DICOM tracking UID will be (2.25.<integer>)."""
    return f"2.25.{uuid.uuid4().int}"


@dataclass(frozen=True)
class Finding:
    id: str
    source: str  # "detector", "user" or "imported from FILE"
    center_xyz: tuple[float, float, float]
    diameter_mm: float  # equivalent-sphere diameter; 0: not measured (an imported point)
    long_axis_mm: float
    short_axis_mm: float
    volume_mm3: float
    type: str = "solid"
    status: str = "unreviewed"
    malignancy: str = "unknown"
    rating: int | None = None  # 1-5, as LIDC's readers rate malignancy
    note: str = ""
    solid_mm: float | None = None  # part-solid: the solid component's mean diameter
    p_nodule: float | None = None  # the detector's, never the reader's
    p_malignant: float | None = None
    detector_notes: tuple[str, ...] = ()
    reader_set: tuple[str, ...] = ()  # machine fields the reader changed (moved, resized): kept on re-runs

    @property
    def mean_diameter_mm(self) -> float:
        return mean_diameter(self.long_axis_mm, self.short_axis_mm)

    @property
    def lung_rads(self) -> str | None:
        """Lung-RADS v2022 of a confirmed nodule; None for the others (and when it cannot tell)."""
        if self.status != "confirmed" or self.long_axis_mm <= 0:  # unconfirmed, or its size unknown
            return None
        solid = None if self.solid_mm is None else round(self.solid_mm + 1e-9, 1)
        return lung_rads(self.type, self.mean_diameter_mm, solid)

    @property
    def radius_mm(self) -> float:
        return self.diameter_mm / 2.0

    def to_dict(self) -> dict:
        d = asdict(self)  # full precision: a saved review loads back exactly
        d["center_xyz"] = [float(v) for v in self.center_xyz]
        d["mean_diameter_mm"] = self.mean_diameter_mm
        d["lung_rads"] = self.lung_rads
        d["detector_notes"] = list(self.detector_notes)
        d["reader_set"] = list(self.reader_set)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Finding:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["center_xyz"] = tuple(float(v) for v in d["center_xyz"])
        kw["detector_notes"] = tuple(d.get("detector_notes", ()))
        kw["reader_set"] = tuple(d.get("reader_set", ()))
        return check(cls(**kw))


def check(f: Finding) -> Finding:
    """The finding, or ValueError naming the field that is not one of its allowed values."""
    for name, allowed in (("status", STATUSES), ("type", TYPES), ("malignancy", MALIGNANCY)):
        if getattr(f, name) not in allowed:
            raise ValueError(f"{name} {getattr(f, name)!r} is not one of {', '.join(allowed)}")
    if f.rating is not None and f.rating not in (1, 2, 3, 4, 5):
        raise ValueError(f"rating {f.rating!r} is not 1-5")
    if len(f.center_xyz) != 3 or not all(math.isfinite(v) for v in f.center_xyz):
        raise ValueError(f"centre {f.center_xyz!r} is not three finite numbers")
    if not (math.isfinite(f.diameter_mm) and f.diameter_mm >= 0):  # 0: not measured (a bare point)
        raise ValueError(f"diameter {f.diameter_mm!r} is not a size")
    return f


def from_detection(d: Detection, source: str = DETECTOR) -> Finding:
    return Finding(id=new_id(), source=source, center_xyz=tuple(float(v) for v in d.center_xyz),
                   diameter_mm=float(d.diameter_mm), long_axis_mm=float(d.long_axis_mm),
                   short_axis_mm=float(d.short_axis_mm), volume_mm3=float(d.volume_mm3),
                   p_nodule=float(d.p_nodule), p_malignant=d.p_malignant, detector_notes=tuple(d.notes))


def sphere(center_xyz, diameter_mm: float, source: str = USER, **fields) -> Finding:
    """A finding of a given size and no measured shape (an added nodule before it is refined)."""
    d = float(diameter_mm)
    return check(Finding(id=fields.pop("id", None) or new_id(), source=source,
                         center_xyz=tuple(float(v) for v in center_xyz), diameter_mm=d, long_axis_mm=d,
                         short_axis_mm=d, volume_mm3=sphere_volume(d), **fields))


@dataclass(frozen=True)
class Edit:
    """One undoable step: the findings it touched before and after (None: absent), and the order."""

    name: str
    before: tuple[tuple[str, Finding | None], ...]
    after: tuple[tuple[str, Finding | None], ...]
    order_before: tuple[str, ...]
    order_after: tuple[str, ...]
    mask: object = None  # a masks.MaskChange: the voxels the step changed, or None


@dataclass
class Review:
    """The findings of one scan, in the order they arrived, with undo and redo."""

    series_uid: str = ""
    _findings: dict[str, Finding] = field(default_factory=dict)
    _order: list[str] = field(default_factory=list)
    _undo: list = field(default_factory=list)
    _redo: list = field(default_factory=list)
    _listeners: list = field(default_factory=list)
    masks: object = None  # the scan's masks.Masks, once it has a volume to paint on

    # -- reading ---------------------------------------------------------------------------
    @property
    def findings(self) -> list[Finding]:
        return [self._findings[i] for i in self._order]

    def __len__(self) -> int:
        return len(self._order)

    def get(self, fid: str) -> Finding:
        try:
            return self._findings[fid]
        except KeyError:
            raise LungViewError(f"no finding {fid}") from None

    def reviewed(self) -> tuple[int, int]:
        """(reviewed, total): "5 of 7 reviewed"."""
        return sum(f.status != "unreviewed" for f in self.findings), len(self)

    def scan_lung_rads(self) -> str:
        return worst(f.lung_rads for f in self.findings if f.status == "confirmed")

    def next_unreviewed(self, after: str | None, order: list[str] | None = None) -> str | None:
        """The first unreviewed finding after `after` in `order` (the table's), wrapping round."""
        ids = order if order is not None else self._order
        if not ids:
            return None
        start = ids.index(after) + 1 if after in ids else 0
        for fid in ids[start:] + ids[:start]:
            if fid in self._findings and self._findings[fid].status == "unreviewed" and fid != after:
                return fid
        return None

    # -- listening -------------------------------------------------------------------------
    def subscribe(self, callback) -> None:
        """`callback(ids)` after every change, with the ids it touched."""
        self._listeners.append(callback)

    def _notify(self, ids) -> None:
        for cb in list(self._listeners):
            cb(tuple(ids))

    # -- edits -----------------------------------------------------------------------------
    def _commit(self, name: str, after: dict[str, Finding | None], order: list[str] | None = None,
                mask=None) -> Edit | None:
        """`mask`: a MaskChange already applied to self.masks, made part of this step."""
        before = {fid: self._findings.get(fid) for fid in after}
        new_order = list(order) if order is not None else self._order
        if all(before[k] == after[k] for k in after) and new_order == self._order and mask is None:
            return None  # nothing changed: no empty undo step
        edit = Edit(name, tuple(before.items()), tuple(after.items()), tuple(self._order), tuple(new_order), mask)
        self._apply(edit.after, edit.order_after)
        self._undo.append(edit)
        self._redo.clear()
        self._notify(after)
        return edit

    def _apply(self, state, order) -> None:
        for fid, f in state:
            if f is None:
                self._findings.pop(fid, None)
            else:
                self._findings[fid] = f
        self._order = list(order)

    def undo(self) -> str | None:
        """Undoes the last step; its name, or None when there is none."""
        return self._replay(self._undo, self._redo, forward=False)

    def redo(self) -> str | None:
        return self._replay(self._redo, self._undo, forward=True)

    def _replay(self, take: list, put: list, forward: bool) -> str | None:
        """Moves the newest step of `take` to `put`, restoring its after (redo) or before (undo)."""
        if not take:
            return None
        step = take.pop()
        state, order = (step.after, step.order_after) if forward else (step.before, step.order_before)
        if step.mask is not None:
            self.masks.apply(step.mask, forward)
        self._apply(state, order)
        put.append(step)  # before the listeners hear of it: they ask what can be undone or redone next
        self._notify(dict(state))
        return step.name

    @property
    def undo_name(self) -> str | None:
        return self._undo[-1].name if self._undo else None

    @property
    def redo_name(self) -> str | None:
        return self._redo[-1].name if self._redo else None

    def add(self, finding: Finding, name: str = "Add nodule") -> Finding:
        check(finding)
        if finding.id in self._findings:
            raise LungViewError(f"finding {finding.id} is already in the review")
        self._commit(name, {finding.id: finding}, self._order + [finding.id])
        return finding

    def add_many(self, findings: list[Finding], name: str, mask=None) -> int:
        """Several findings in one undoable step (an import); `mask`: their masks' change, already
        made in self.masks."""
        fresh = [check(f) for f in findings if f.id not in self._findings]
        if fresh:
            self._commit(name, {f.id: f for f in fresh}, self._order + [f.id for f in fresh], mask)
        return len(fresh)

    def update(self, fid: str, name: str, **changes) -> Finding:
        """Changes fields of one finding; machine fields changed here count as the reader's."""
        old = self.get(fid)
        reader = tuple(sorted(set(old.reader_set) | (set(changes) & set(MACHINE_FIELDS))))
        new = check(replace(old, **changes, reader_set=reader))
        self._commit(name, {fid: new})
        return new

    def set_status(self, fid: str, status: str) -> Finding:
        names = {"confirmed": "Confirm nodule", "rejected": "Reject nodule", "unsure": "Mark unsure",
                 "unreviewed": "Mark unreviewed"}
        return self.update(fid, names.get(status, status), status=status)

    def cycle(self, fid: str, what: str) -> Finding:
        """`T`: the next type; `M`: the next malignancy label."""
        values = {"type": TYPES, "malignancy": MALIGNANCY}[what]
        now = getattr(self.get(fid), what)
        nxt = values[(values.index(now) + 1) % len(values)]
        return self.update(fid, f"Set {what} to {nxt}", **{what: nxt})

    def move(self, fid: str, center_xyz) -> Finding:
        return self.update(fid, "Move nodule", center_xyz=tuple(float(v) for v in center_xyz))

    def resize(self, fid: str, diameter_mm: float) -> Finding:
        d = max(0.5, float(diameter_mm))
        return self.update(fid, "Resize nodule", diameter_mm=d, long_axis_mm=d, short_axis_mm=d,
                           volume_mm3=sphere_volume(d))

    def remove(self, fid: str) -> None:
        f = self.get(fid)
        if f.source == DETECTOR:
            raise LungViewError("a detector's finding cannot be deleted, only rejected (R)")
        mask = self.masks.clear(fid) if self.masks is not None else None  # its mask goes with it
        self._commit("Delete nodule", {fid: None}, [i for i in self._order if i != fid], mask)

    # -- masks -------------------------------------------------------------------------------
    def record_mask(self, fid: str, change, name: str = "Paint mask") -> Finding:
        """One undoable step for a change of the finding's mask already made in self.masks (a
        brush stroke, a fill): the finding's centre and sizes follow its mask, as the reader's."""
        old = self.get(fid)
        sizes = self.masks.measure(fid)
        new = old
        if sizes is not None:
            reader = tuple(sorted(set(old.reader_set) | set(sizes)))
            new = check(replace(old, **sizes, reader_set=reader))
        self._commit(name, {fid: new}, mask=change if change is not None and len(change) else None)
        return new

    def set_mask(self, fid: str, box, crop, name: str = "Fill mask") -> Finding:
        """The finding's mask becomes `crop` over `box` (other findings' voxels stay theirs)."""
        self.get(fid)
        return self.record_mask(fid, self.masks.replace(fid, box, crop), name)

    def merge_detections(self, detections: list[Detection], name: str = "Detection results",
                         changes: dict | None = None) -> tuple[int, int]:
        """Brings a detection run in: a detection within the radius of a finding (the larger of
        the two, at least 3 mm) updates that finding's machine fields, except those the reader
        set; the others arrive as new unreviewed findings. Decisions are never touched; findings
        the run no longer reports stay. Returns (matched, added); `changes`, when given, receives
        what the run changed: "added" (ids), "matched" ({id: (p_nodule before, after)}) and "gone"
        (the detector's findings this run did not report)."""
        after: dict[str, Finding | None] = {}
        order = list(self._order)
        taken: set[str] = set()
        for d in sorted(detections, key=lambda d: -d.p_nodule):
            fresh = from_detection(d)
            best, best_dist = None, math.inf
            for f in self.findings:
                if f.id in taken:
                    continue
                dist = math.dist(f.center_xyz, fresh.center_xyz)
                if dist < max(f.radius_mm, fresh.radius_mm, 3.0) and dist < best_dist:
                    best, best_dist = f, dist
            if best is None:
                after[fresh.id] = fresh
                order.append(fresh.id)
                continue
            taken.add(best.id)
            keep = set(best.reader_set)
            if keep & set(SIZE_FIELDS):
                keep |= set(SIZE_FIELDS)  # a reader's size is one whole
            machine = {k: getattr(fresh, k) for k in MACHINE_FIELDS if k not in keep}
            after[best.id] = replace(best, **machine)
        if changes is not None:
            changes["added"] = [i for i in after if i not in taken]
            changes["matched"] = {i: (self._findings[i].p_nodule, after[i].p_nodule) for i in taken}
            changes["gone"] = [f.id for f in self.findings if f.source == DETECTOR and f.id not in taken]
        self._commit(name, after, order)
        return len(taken), len(after) - len(taken)

    # -- persistence -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        reviewed, total = self.reviewed()
        return {"series_uid": self.series_uid, "reviewed": reviewed, "total": total,
                "lung_rads": self.scan_lung_rads(), "findings": [f.to_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, d: dict) -> Review:
        r = cls(series_uid=str(d.get("series_uid", "")))
        for fd in d.get("findings", []):
            f = Finding.from_dict(fd)
            r._findings[f.id] = f
            r._order.append(f.id)
        return r
