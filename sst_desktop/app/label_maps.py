"""The label screen's objects as one ID map: load a frame's reference (or its prediction, to
correct it), send a working mask's pixels, and save the edited map as the reference.

The UI's edit model (ui/js/edit_model.js) owns the editing; these methods move ID maps and masks
in the run-length form of `data.mask_runs`."""

from __future__ import annotations

from typing import Any

import numpy as np

from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import exposed, int_arg
from sst_desktop.data import images, mask_state, masks
from sst_desktop.data.mask_runs import crop_dict, decode_runs, encode_runs
from sst_desktop.errors import UserError


class LabelMapsApi(ApiBase):
    """ID maps in and out of the label screen."""

    @exposed
    def frame_labels(self, project_id: str, pk: str) -> dict[str, Any]:
        """The frame's objects: its reference, else its prediction (to correct), else none.

        `{width, height, source: "ref"|"pred"|"none", runs, stale}`; `stale` says whether the
        prediction is older than its group's newest reference."""
        project = self._project(project_id)
        frame = self._services.store.frame(project_id, pk)
        width, height = images.image_size(self._services.store.image_path(project_id, pk))
        source, mask, stale = "none", np.zeros((height, width), dtype=np.uint8), False
        ref = self._mask_path(project_id, "ref", frame.pk)
        pred = self._mask_path(project_id, "pred", frame.pk)
        if ref.is_file():
            source, mask = "ref", masks.read_mask(ref, expected_size=(width, height))
        elif pred.is_file():
            source, mask = "pred", masks.read_mask(pred, expected_size=(width, height))
            group = project.group(frame.group_key)
            stale = str(frame.pk) in mask_state.stale_predictions(project, group)
        return {
            "pk": str(frame.pk),
            "width": width,
            "height": height,
            "source": source,
            "runs": encode_runs(mask),
            "stale": stale,
        }

    @exposed
    def mask_crop(self, project_id: str, pk: str, index: int) -> dict[str, Any]:
        """One working mask (candidate or refinement) at full size, cropped to its box:
        `{x0, y0, width, height, runs}` with values 0/1."""
        session = self._session(project_id, pk, create=False)
        wm = session.get(int_arg(index, "mask index", 0))
        return crop_dict(wm.crop, wm.x0, wm.y0)

    @exposed
    def save_labels(self, project_id: str, pk: str, labels: dict[str, Any]) -> dict[str, Any]:
        """Write `{width, height, runs}` as `ref_masks/{pk}.png` (atomic).

        Returns `{ok, path, ids, stale_predictions}`: the group's predictions now older than
        this reference (the next run of the group predicts them again)."""
        project = self._project(project_id)
        frame = self._services.store.frame(project_id, pk)
        if not isinstance(labels, dict):
            raise UserError("save_labels takes {width, height, runs}.")
        width, height = images.image_size(self._services.store.image_path(project_id, pk))
        sent = (labels.get("width"), labels.get("height"))
        if sent != (width, height):
            raise UserError(
                f"The labels of {frame.pk!r} are {sent[0]}×{sent[1]}, its image is "
                f"{width}×{height}: open the frame again."
            )
        mask = decode_runs(labels.get("runs"), width, height, name=f"labels of {frame.pk!r}")
        ids = masks.object_ids(mask)
        if not ids:
            raise UserError(
                f"Nothing to save for {frame.pk!r}: add at least one object "
                "(or delete the reference)."
            )
        path = self._mask_path(project_id, "ref", frame.pk)
        masks.write_mask(path, mask)
        stale = mask_state.stale_predictions(project, project.group(frame.group_key))
        return {"ok": True, "path": str(path), "ids": ids, "stale_predictions": len(stale)}
