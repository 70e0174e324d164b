"""The label screen: open a frame, generate candidate masks, refine one with clicks or a box,
assign IDs and save the reference mask."""

from __future__ import annotations

from typing import Any

import numpy as np

from sst_desktop.app import candidates_api, media, sessions
from sst_desktop.app.base import MODEL_JOB, ApiBase
from sst_desktop.app.exposed import exposed, int_arg, score
from sst_desktop.app.runs import load_model
from sst_desktop.app.sessions import LabelSession, WorkingMask
from sst_desktop.data import images, masks
from sst_desktop.engine import candidates, checkpoints
from sst_desktop.errors import CheckpointError, UserError
from sst_desktop.run.jobs import Job


def frame_dict(session: LabelSession) -> dict[str, Any]:
    """What the label screen shows of a session: size, image URL and working masks."""
    with session.lock:
        entries = [session.mask_entry(wm) for wm in session.masks]
    return {
        "pk": session.pk,
        "width": session.width,
        "height": session.height,
        "image_url": media.image_url(session.project_id, session.pk),
        "masks": entries,
    }


def refine_prompt(prompt: dict[str, Any] | None) -> tuple[list, list, list | None, Any]:
    """(points, labels, box, base index) of a refine request, each checked."""
    prompt = prompt or {}
    points = [[float(x), float(y)] for x, y in (prompt.get("points") or [])]
    labels = [int(v) for v in (prompt.get("labels") or [])]
    if len(labels) != len(points):
        raise UserError("Each refine point needs a label (1 = include, 0 = exclude).")
    box = prompt.get("box")
    if box is not None:
        if len(box) != 4:
            raise UserError("A refine box is [x0, y0, x1, y1].")
        box = [float(v) for v in box]
    return points, labels, box, prompt.get("base_index")


class LabellingApi(ApiBase):
    """Working masks of the frame being labelled, and saving them as its reference."""

    def _refiner(self, handle: Any) -> candidates.Refiner:
        with self._lock:
            refiner = self._services.refiners.get(id(handle))
            if refiner is None:
                refiner = candidates.Refiner(handle)
                self._services.refiners = {id(handle): refiner}  # one model in use at a time
            return refiner

    @exposed
    def open_frame(self, project_id: str, pk: str) -> dict[str, Any]:
        """Start (or resume) labelling a frame: its size, image URL and working masks."""
        return frame_dict(self._session(project_id, pk))

    @exposed
    def generate_candidates(
        self,
        project_id: str,
        pk: str,
        params: dict[str, Any] | None = None,
        keep: list[int] | None = None,
    ) -> dict[str, Any]:
        """Automatic candidate masks for a frame, in a job; its result is `open_frame`'s dict.

        `keep`: indices of masks the UI has labelled but not saved yet; they survive like saved ones.
        """
        session = self._session(project_id, pk, create=False)
        project = self._project(project_id)
        # No params: the project's candidate settings (spec key "candidates").
        cand_params = (
            candidates_api.project_params(project)
            if params is None
            else candidates.CandidateParams.from_dict(params)
        )
        if keep is not None and not isinstance(keep, (list, tuple)):
            raise UserError("keep must be a list of mask indices.")
        kept = {int_arg(i, "mask index", 0) for i in keep or ()}

        def work(job: Job) -> dict[str, Any] | None:
            handle = load_model(project, job)
            if job.cancelled():
                return None
            job.set_message("reading the image")
            image = images.load_image_array(session.image_path)
            job.set_message("generating candidate masks")
            # Candidates go into the session batch by batch (see candidates_api).
            count = candidates_api.stream_into_session(
                job,
                handle,
                image,
                cand_params,
                session,
                kept,
                refiner=self._refiner(handle),
                key=candidates_api.image_key(session),
            )
            if count is None or job.cancelled():
                return None
            job.set_message(f"{count} candidate masks")
            self._sessions.trim()
            return frame_dict(session)

        with self._lock:  # settings cannot change between this check and the job's start
            job = self._jobs.start(
                "candidates",
                work,
                exclusive=MODEL_JOB,
                attrs={"project_id": str(project_id), "pk": session.pk},
            )
        return {"job_id": job.id}

    @exposed
    def refine_mask(self, project_id: str, pk: str, prompt: dict[str, Any]) -> dict[str, Any]:
        """One new mask from positive/negative clicks and/or a box (full-image pixel coordinates)."""
        session = self._session(project_id, pk, create=False)
        project = self._project(project_id)
        points, labels, box, base_index = refine_prompt(prompt)
        base = session.get(base_index) if base_index is not None else None
        if not points and box is None:
            raise UserError("Click on the image (or draw a box) to refine a mask.")
        spec = project.spec
        if checkpoints.find_checkpoint(spec.sam2, explicit=spec.checkpoint) is None:
            # A refine click must not start a silent multi-hundred-MB download.
            raise CheckpointError(
                f"SAM2 model {spec.sam2} is not downloaded yet: generate candidates first (it "
                "downloads the model with progress) or choose a checkpoint file in the project's "
                "Settings… (on its groups screen)."
            )
        handle = load_model(project)
        refiner = self._refiner(handle)
        key = candidates_api.image_key(session)
        if not refiner.has_image(key):
            # At the candidates' working size: a generation after this click reuses the embedding.
            max_side = candidates_api.project_params(project).max_side
            refiner.set_image(key, images.load_image_array(session.image_path), max_side=max_side)
        mask_input = None
        if base is not None:
            # A refined base carries SAM's own logits (better than re-deriving them from pixels).
            mask_input = (
                base.logits if base.logits is not None else base.full(session.height, session.width)
            )
        result = refiner.predict(
            key,
            points=points or None,
            labels=labels or None,
            box=box,
            mask_input=mask_input,
        )
        wm = session.add(
            result.mask,
            predicted_iou=score(result.score),
            stability_score=None,
            id=base.id if base is not None else None,
            source="refined",
        )
        wm.base_index = base.index if base is not None else None
        wm.logits = result.low_res_logits
        session.keep_latest_logits(sessions.MAX_REFINE_LOGITS)
        self._sessions.trim()
        return session.mask_entry(wm)

    @exposed
    def masks_at(self, project_id: str, pk: str, x: float, y: float) -> dict[str, Any]:
        """Indices of the working masks covering image pixel (x, y), smallest first."""
        session = self._session(project_id, pk, create=False)
        with session.lock:
            hits = [m for m in session.masks if m.contains(float(x), float(y))]
        hits.sort(key=lambda m: m.area)
        return {"indices": [m.index for m in hits]}

    @exposed
    def save_reference(
        self, project_id: str, pk: str, assignments: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Compose the ID mask from [{index, id}] (later ones paint over earlier) and write it."""
        session = self._session(project_id, pk, create=False)
        if not assignments:
            raise UserError(
                f"Nothing to save for {pk!r}: give at least one mask an ID (or delete the reference)."
            )
        ids_mask = np.zeros((session.height, session.width), dtype=np.uint8)
        chosen: list[tuple[WorkingMask, int]] = []
        for item in assignments:
            wm = session.get(item.get("index"))
            object_id = int_arg(item.get("id"), f"ID of mask {wm.index}", 1, 255)
            chosen.append((wm, object_id))
        for wm, object_id in chosen:
            h, w = wm.crop.shape
            region = ids_mask[wm.y0 : wm.y0 + h, wm.x0 : wm.x0 + w]
            region[wm.crop] = object_id
        path = self._mask_path(project_id, "ref", session.pk)
        masks.write_mask(path, ids_mask)
        written = masks.object_ids(ids_mask)
        with session.lock:
            assigned = {wm.index: object_id for wm, object_id in chosen}
            for wm in session.masks:
                wm.id = assigned.get(wm.index)
        return {"ok": True, "path": str(path), "ids": written}

    @exposed
    def delete_reference(self, project_id: str, pk: str) -> dict[str, Any]:
        """Delete a frame's reference mask (its image becomes a target again)."""
        path = self._mask_path(project_id, "ref", pk)
        existed = path.is_file()
        if existed:
            path.unlink()
        session = self._sessions.find(project_id, pk)
        if session is not None:
            with session.lock:
                session.masks = [m for m in session.masks if m.source != "saved"]
                for m in session.masks:
                    m.id = None
        return {"ok": True, "deleted": existed}

    @exposed
    def use_as_reference(self, project_id: str, pk: str) -> dict[str, Any]:
        """Copy a (corrected) prediction into ref_masks/ so it conditions the next run."""
        pred = self._mask_path(project_id, "pred", pk)
        if not pred.is_file():
            raise UserError(f"{pk!r} has no prediction yet: run propagation first.")
        size = images.image_size(self._services.store.image_path(project_id, pk))
        mask = masks.read_mask(pred, expected_size=size)
        if not mask.any():
            raise UserError(f"The prediction of {pk!r} is empty; label this image instead.")
        ref = self._mask_path(project_id, "ref", pk)
        masks.write_mask(ref, mask)
        self._drop_session(project_id, pk)
        return {"ok": True, "path": str(ref)}
