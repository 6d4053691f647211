"""Masks in the main window: the brush and the eraser (B, E; radius with [ and ]; optionally only
in an HU range), a finding's mask filled from the detector's measurement, and the masks saved
with the review (off the GUI thread, like every edit)."""

from __future__ import annotations

import numpy as np

from lungview.core import LungViewError
from lungview.gui.state import PLANES
from lungview.review.masks import MaskChange, disk_indices
from lungview.review.model import sphere

PAINT_HU = (-800.0, 3000.0)  # "paint only in the HU range": soft tissue and denser, not aerated lung or air
BRUSH_STEP = 1.25  # [ and ] divide or multiply the radius by this

MASK_KEYS = [
    ("B / E", "Brush / eraser on the selected finding's mask (again: off)"),
    ("[ / ]", "Smaller / larger brush"), ("H", f"Paint only from {PAINT_HU[0]:.0f} to {PAINT_HU[1]:.0f} HU on / off"),
    ("G", "Fill the selected finding's mask from the detector's measurement"),
    ("Drag a marker", "Move it (from inside) or resize it (by its rim)"),
]


class PaintMixin:
    """Needs: self.state, self.views, self.message, self._action, self.selected, self.select_id,
    self._edit, self.autosaver, self.workspace."""

    def _mask_menu(self, bar) -> None:
        k = bar.addMenu("&Masks")
        self.brush_action = self._action(k, "Brush (B)", lambda on: self.set_paint("brush" if on else None), "B",
                                         checkable=True)
        self.eraser_action = self._action(k, "Eraser (E)", lambda on: self.set_paint("eraser" if on else None), "E",
                                          checkable=True)
        self._action(k, "Smaller brush", lambda: self.scale_brush(1 / BRUSH_STEP), "[")
        self._action(k, "Larger brush", lambda: self.scale_brush(BRUSH_STEP), "]")
        self.hu_action = self._action(
            k, f"Paint only from {PAINT_HU[0]:.0f} to {PAINT_HU[1]:.0f} HU",
            lambda on: setattr(self.state, "paint_hu", PAINT_HU if on else None), "H", checkable=True)
        self._action(k, "Fill mask from the detector (G)", self.fill_mask, "G")
        self._action(k, "Clear the selected finding's mask", self.clear_mask)
        self.masks_action = self._action(k, "Show masks", lambda on: self.state.set_display(masks=on),
                                         checkable=True, checked=True)
        self.state.display_changed.connect(self._tools_in_step)
        for view in self.views.values():
            view.paint.connect(self._paint)
            view.picked.connect(self.select_id)
        self._stroke = None  # (finding id, changes, last voxel, plane) while a stroke goes on

    def _tools_in_step(self) -> None:
        """Menu checks follow the state (the brush turns the ruler off and the other way round),
        without acting again."""
        for action, on in ((self.brush_action, self.state.paint_mode == "brush"),
                           (self.eraser_action, self.state.paint_mode == "eraser"),
                           (self.ruler_action, self.state.ruler_mode)):
            if action.isChecked() != on:
                action.blockSignals(True)
                action.setChecked(on)
                action.blockSignals(False)

    def set_paint(self, mode: str | None) -> None:
        self.state.set_display(paint=mode)
        if mode:
            hu = "" if self.state.paint_hu is None else f", only {PAINT_HU[0]:.0f} to {PAINT_HU[1]:.0f} HU"
            self.message.setText(f"{mode}: radius {self.state.brush_mm:.1f} mm{hu} ([ ] change it)")

    def scale_brush(self, factor: float) -> None:
        self.state.set_display(brush_mm=self.state.brush_mm * factor)
        self.message.setText(f"brush radius {self.state.brush_mm:.1f} mm")

    # -- painting --------------------------------------------------------------------------
    def _paint(self, plane: str, irc, phase: str) -> None:
        """A stroke: dabs along the mouse's path, shown as they are made; at the release one
        undoable step (only the voxels it changed) and the finding's sizes from its mask."""
        st = self.state
        if st.volume is None or not st.paint_mode:
            return
        irc = np.asarray(irc, dtype=np.float64)
        if phase == "start" or self._stroke is None:
            row = self.selected()
            if row is None:
                if st.paint_mode == "eraser":
                    self.message.setText("select a finding first: the eraser works on its mask")
                    return
                f = st.review.add(sphere(st.volume.irc_to_xyz(irc), 0.0), "Add nodule")
                self.select_id(f.id)
                fid = f.id
            else:
                fid = row.id
            self._stroke = (fid, [], irc, plane)
        fid, changes, last, plane = self._stroke
        self._dab_line(fid, changes, last, irc, plane)
        self._stroke = (fid, changes, irc, plane)
        if phase == "end":
            self._stroke = None
            change = MaskChange.join(changes)
            if change is not None:
                name = "Erase mask" if st.paint_mode == "eraser" else "Paint mask"
                self._edit(lambda: st.review.record_mask(fid, change, name))
                f = st.review.get(fid)
                self.message.setText(f"{name.lower()}: {st.review.masks.count(fid)} voxels, "
                                     f"{f.volume_mm3:.0f} mm³, {f.diameter_mm:.1f} mm")

    def _dab_line(self, fid: str, changes: list, a, b, plane: str) -> None:
        """Dabs from voxel a to b, half a radius apart, so that a fast drag leaves no gaps."""
        st = self.state
        axis = PLANES.index(plane)
        spacing = np.asarray(st.volume.spacing_irc, dtype=np.float64)
        steps = max(1, int(np.ceil(np.linalg.norm((b - a) * spacing) / (0.5 * st.brush_mm))))
        erase = st.paint_mode == "eraser"
        for t in np.linspace(0.0, 1.0, steps + 1)[1 if steps > 1 else 0:]:
            idx = disk_indices(st.volume.shape, axis, a + t * (b - a), st.brush_mm, spacing)
            changes.append(st.review.masks.dab(fid, idx, erase=erase, hu_range=st.paint_hu))
        st.masks_changed.emit()

    # -- filling and clearing ------------------------------------------------------------------
    def fill_mask(self) -> None:
        """The selected finding's mask from the detector's measurement: the nodule region grown
        from its centre (what its sizes were measured on); where nothing denser than lung is
        there, the U-Net's blob under the centre; else its sphere."""
        st = self.state
        row = self.selected()
        if row is None or st.volume is None:
            self.message.setText("select a finding first (click it, or N / P)")
            return
        from lungview.inference.measure import mask_at, measure

        vol = st.volume
        c = np.asarray(row.center_irc, dtype=np.float64)
        size = measure(vol, c)
        if size.mask is not None and size.mask.any():
            box, crop, how = size.box, size.mask, "region grown from its centre"
        elif (blob := self._unet_blob(c)) is not None:
            (box, crop), how = blob, "the U-Net's output"
        else:
            (box, crop), how = mask_at(vol, row.center_xyz, row.diameter_mm), "its sphere"
        self._edit(lambda: st.review.set_mask(row.id, box, crop, "Fill mask"))
        st.masks_changed.emit()
        self.message.setText(f"mask filled from {how}: {st.review.masks.count(row.id)} voxels")

    def _unet_blob(self, c):
        """The connected region of the U-Net's output (p >= 0.5) under voxel c, in a 40 mm box."""
        prob = self.state.findings.prob
        if prob is None:
            return None
        from scipy import ndimage

        spacing = np.asarray(self.state.volume.spacing_irc)
        ci = np.clip(np.rint(c).astype(int), 0, np.array(prob.shape) - 1)
        half = np.ceil(20.0 / spacing).astype(int)
        box = tuple(slice(max(0, k - h), min(n, k + h + 1)) for k, h, n in zip(ci, half, prob.shape))
        labels, _ = ndimage.label(prob[box] >= 128)
        lab = labels[tuple(ci - [s.start for s in box])]
        return (box, labels == lab) if lab else None

    def clear_mask(self) -> None:
        row = self.selected()
        masks = self.state.review.masks
        if row is None or masks is None or not masks.has(row.id):
            self.message.setText("the selected finding has no mask")
            return
        self._edit(lambda: self.state.review.record_mask(row.id, masks.clear(row.id), "Clear mask"))
        self.state.masks_changed.emit()

    # -- saving ------------------------------------------------------------------------------
    def _autosave_masks(self, uid: str, review) -> None:
        """After an edit that changed voxels: the masks' snapshot to the saver thread."""
        masks = review.masks
        if self.autosaver is None or masks is None or masks.version == masks.saved_version:
            return
        masks.saved_version = masks.version
        self.autosaver.schedule(uid, "masks", masks.snapshot())

    def _load_masks(self, vol, review) -> None:
        if self.workspace is None or not vol.series_uid:
            return
        try:
            review.masks = self.workspace.load_masks(vol.series_uid, vol)
        except LungViewError as exc:
            self.banner.add_notice(f"{exc}; this scan's masks start empty", "error")
