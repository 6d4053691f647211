"""The detection pipeline: (export) -> (resampling) -> lung mask -> segmentation -> grouping ->
classification -> malignancy -> measurement, with a timing per step, progress and cancellation.

The models see the scan as their cards say they were trained (HU clip, context slices, crop
size, slice spacing); findings are reported in the scan's own voxels and measured on the scan
itself, at its native resolution."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from lungview.core import CtVolume
from lungview.core.findings import DEFAULT_THRESHOLD, NO_MALIGNANCY, Detection, size_category
from lungview.core.jobs import CancelToken, ProgressCallback, no_progress
from lungview.inference.candidates import find_candidates
from lungview.inference.classify import classify
from lungview.inference.device import DeviceInfo
from lungview.inference.grid import model_slice_spacing, nearest_slices, resample_z, to_native_irc
from lungview.inference.lungmask import LungMask, lung_mask
from lungview.inference.measure import blob_size, measure
from lungview.inference.segmentation import segment
from lungview.models.checkpoint import LoadedModel

STEPS = ("export", "resampling", "lung_mask", "segmentation", "grouping", "classification", "malignancy", "measurement")
INTERPOLATED_NOTE = "centred on an interpolated slice (no measured data there)"


@dataclass
class PipelineResult:
    detections: list[Detection]  # every candidate, highest p_nodule first
    timings_s: dict[str, float]
    device: str
    models: dict[str, str]  # role -> label
    candidates: int
    lung: LungMask | None = None  # on the scan's own slices
    prob: np.ndarray | None = None  # uint8 segmentation probabilities * 255, on the scan's own slices
    notes: list[str] = field(default_factory=list)
    model_spacing_mm: float | None = None  # the slice spacing the models saw, when resampled
    backend: str = ""  # what ran the networks: "PyTorch 2.13.0+cpu", "OpenVINO 2026.4.1"
    working_threshold: float = DEFAULT_THRESHOLD  # the nodule classifier's (its card's): findings at or above it

    def above(self, threshold: float) -> list[Detection]:
        return [d for d in self.detections if d.p_nodule >= threshold]


@dataclass
class Pipeline:
    seg: LoadedModel
    cls: LoadedModel
    device: DeviceInfo
    mal: LoadedModel | None = None
    use_lung_mask: bool = True
    seg_batch: int | None = None  # default: 1 on CPUs, 32 on GPUs
    cls_batch: int | None = None  # default: 4 for PyTorch on a CPU (its activations stay in cache), else 64
    # Candidates the classifier gives less than this are not measured in the scan (a sphere of
    # their segmentation blob stands in, size_source "segmentation"): most are vessel pieces.
    measure_min_p: float = 0.05
    backend: str = "torch"  # resolved (inference.backends.resolve_backend): torch, onnxruntime, openvino

    def _nets(self, progress: ProgressCallback, timings: dict) -> tuple:
        """The networks to run: the modules, or their exports compiled by the backend (the export
        made on first use, the compilation once per process: the "export" step's time; 0 after)."""
        models = (self.seg, self.cls, self.mal)
        if self.backend == "torch":
            return tuple(m.module if m is not None else None for m in models)
        from lungview.inference.backends import exported

        t0 = time.perf_counter()
        nets = tuple(exported(m, self.backend, self.device, progress) if m is not None else None for m in models)
        timings["export"] = time.perf_counter() - t0
        return nets

    def run(self, vol: CtVolume, progress: ProgressCallback = no_progress,
            cancel: CancelToken | None = None) -> PipelineResult:
        cancel = cancel or CancelToken()
        timings = {k: 0.0 for k in STEPS}
        notes: list[str] = []

        def step(name, fn):
            def report(done, total, message=""):
                progress(done, total, f"{name}: {message}" if message else name)
            t0 = time.perf_counter()
            out = fn(report)
            timings[name] = time.perf_counter() - t0
            cancel.check()
            return out

        seg_net, cls_net, mal_net = self._nets(progress, timings)
        cls_batch = self.cls_batch or (4 if self.device.is_cpu and self.backend == "torch" else 64)
        models = [m for m in (self.seg, self.cls, self.mal) if m is not None]
        target = model_slice_spacing(vol.spacing_xyz[2], [m.card.slice_spacing_mm for m in models])
        work = vol
        if target is not None:
            work = step("resampling", lambda p: resample_z(vol, target))
            lo, hi = self.seg.card.slice_spacing_mm
            notes.append(f"slices {vol.spacing_xyz[2]:.3g} mm apart resampled to {target:.3g} mm for the models "
                         f"(trained on {lo:.3g}-{hi:.3g} mm); findings are in the scan's own voxels")
        mask = step("lung_mask", lambda p: lung_mask(work)) if self.use_lung_mask else None
        if mask is not None and not mask.small.any():
            notes.append("no lungs found: segmented every slice")
            mask = None
        seg = step("segmentation", lambda p: segment(work, seg_net, self.device, mask, self.seg_batch,
                                                     p, cancel, self.seg.card))
        cands = step("grouping", lambda p: find_candidates(work, seg.prob, mask))
        work_centers = np.array([c.center_irc for c in cands]).reshape(-1, 3)
        p_nod = step("classification", lambda p: classify(work, work_centers, cls_net, self.device,
                                                         cls_batch, p, cancel, card=self.cls.card))
        if self.mal is not None:
            p_mal = step("malignancy", lambda p: classify(work, work_centers, mal_net, self.device,
                                                         cls_batch, p, cancel, "malignancy", self.mal.card))
            source = f"model: {self.mal.card.name}"
        else:
            p_mal, source = [None] * len(cands), NO_MALIGNANCY
        centers = to_native_irc(vol, work, work_centers) if work is not vol else work_centers
        scale = work.spacing_xyz[2] / vol.spacing_xyz[2]
        measured = np.asarray(p_nod) >= self.measure_min_p
        native = None if work is vol else nearest_slices(vol, work)  # model slice of each scan slice
        lung = mask if mask is None or native is None else LungMask(mask.small[native], mask.step, vol.shape)
        sizes = step("measurement", lambda p: [
            measure(vol, c, blob_voxels=int(round(cand.voxels * scale)), lung=lung) if ok
            else blob_size(cand.voxels, work.spacing_irc) for c, cand, ok in zip(centers, cands, measured)])
        xyz = vol.irc_to_xyz(centers) if len(centers) else np.zeros((0, 3))
        interpolated = set(vol.interpolated_slices)
        detections = []
        for i, s in enumerate(sizes):
            on_interpolated = int(np.clip(round(centers[i][0]), 0, vol.shape[0] - 1)) in interpolated
            detections.append(Detection(
                center_xyz=tuple(map(float, xyz[i])), center_irc=tuple(map(float, centers[i])),
                diameter_mm=s.diameter_mm, volume_mm3=s.volume_mm3, long_axis_mm=s.long_axis_mm,
                short_axis_mm=s.short_axis_mm, p_nodule=float(p_nod[i]),
                p_malignant=None if p_mal[i] is None else float(p_mal[i]), malignancy_source=source,
                size_category=size_category(s.mean_diameter_mm),
                notes=(INTERPOLATED_NOTE,) if on_interpolated else (),
                size_source="scan" if measured[i] else "segmentation"))
        detections.sort(key=lambda d: -d.p_nodule)
        prob = seg.prob if native is None else seg.prob[native]  # on the scan's own slices
        labels = {"segmentation": self.seg.label, "nodule": self.cls.label,
                  "malignancy": self.mal.label if self.mal else NO_MALIGNANCY}
        from lungview.inference.backends import describe

        return PipelineResult(detections, timings, self.device.name, labels, len(cands), lung, prob, notes, target,
                              describe(self.backend), self.cls.card.threshold)
