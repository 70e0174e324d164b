"""Part names, ground truth, evaluation, the label-efficiency sweep and exports, for the app."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from sst_desktop.app.access import policy
from sst_desktop.app.base import MODEL_JOB, ApiBase
from sst_desktop.app.exposed import exposed, int_arg
from sst_desktop.app.runs import load_model
from sst_desktop.data.labels import labels_to_json, parse_labels
from sst_desktop.errors import UserError
from sst_desktop.export import FORMATS, export_project
from sst_desktop.run import evaluate as evaluate_mod
from sst_desktop.run.jobs import Job
from sst_desktop.run.sweep import label_efficiency_sweep

MAX_SWEEP_K = 50
MAX_SEEDS = 20


def _progress(job: Job, what: str):
    """A (done, total) callback that moves the job's bar and stops when it is cancelled."""

    def update(done: int, total: int) -> None:
        if job.cancelled():
            raise UserError(f"{what} cancelled.")
        job.set_progress(done, total)

    return update


class QualityApi(ApiBase):
    """Part names, the ground-truth folder, mIoU per group and image, sweep and export jobs."""

    # Evaluations are recomputed only when a mask or ground-truth folder changes.
    _eval_cache: dict[str, tuple[tuple, dict[str, Any]]]
    _eval_lock = threading.Lock()

    @exposed
    def set_part_names(self, project_id: str, labels: dict[str, Any]) -> dict[str, str]:
        """Save the project's part names ({"1": "left wing"}; an empty name removes it)."""
        if not isinstance(labels, dict):
            raise UserError('Part names must be an object such as {"1": "left wing"}.')
        project = self._project(project_id)
        kept = {str(k): v for k, v in labels.items() if not (isinstance(v, str) and not v.strip())}
        parsed = parse_labels(kept, source=f"Project {project.name!r}", parts=True)
        self._set_spec_field(project, "labels", parsed)
        return labels_to_json(parsed)

    @exposed
    def set_ground_truth(self, project_id: str, folder: str | None) -> dict[str, Any]:
        """Use a folder of ground-truth ID masks ({pk}.png) for the project; None or "" = none."""
        project = self._project(project_id)
        path = None
        if folder and str(folder).strip():
            path = policy().check(str(folder).strip(), "Ground-truth folder")
            if not path.is_dir():
                raise UserError(f"Ground-truth folder {path} does not exist: check the path.")
        self._set_spec_field(project, "ground_truth", path)
        return {"ground_truth": str(path) if path else None}

    @exposed
    def evaluate_project(self, project_id: str, masks: str = "pred") -> dict[str, Any] | None:
        """mIoU overall, per group and per image against the project's ground truth (None if it
        has no ground-truth folder); cached until a mask folder or the ground truth changes."""
        project = self._project(project_id)
        spec = project.spec
        if spec.ground_truth is None:
            return None
        stamp = (
            str(spec.ground_truth),
            masks,
            *(
                _folder_stamp(p)
                for p in (spec.ground_truth, spec.pred_masks_dir, spec.ref_masks_dir)
            ),
        )
        key = str(project_id)
        cache = self.__dict__.setdefault("_eval_cache", {})
        with self._eval_lock:
            hit = cache.get(key)
            if hit is not None and hit[0] == stamp:
                return hit[1]
        result = evaluate_mod.evaluate(project, masks=masks).to_dict()
        with self._eval_lock:
            cache[key] = (stamp, result)
        return result

    @exposed
    def start_sweep(self, project_id: str, ks: list[Any], seeds: Any = 3) -> dict[str, Any]:
        """The label-efficiency sweep as a background job (one SAM2 job at a time)."""
        project = self._project(project_id)
        if not isinstance(ks, list) or not ks:
            raise UserError("Give the numbers of references to try, e.g. 1, 2, 3, 5.")
        k_values = sorted({int_arg(k, "Number of references", 1, MAX_SWEEP_K) for k in ks})
        n_seeds = int_arg(seeds, "Seeds", 1, MAX_SEEDS)
        evaluate_mod.resolve_gt_dir(project, None)  # a clear error now, not in the job

        def work(job: Job) -> dict[str, Any]:
            job.set_message("loading SAM2")
            handle = load_model(project, job)
            job.set_message(f"sweep: k = {', '.join(map(str, k_values))}, {n_seeds} seed(s)")
            result = label_efficiency_sweep(
                project,
                ks=k_values,
                seeds=n_seeds,
                handle=handle,
                on_progress=lambda d, t: job.set_progress(d, t),
                cancel=job.cancel,
            )
            for line in result.lines():
                job.add_log(line)
            return result.to_dict()

        with self._lock:
            if self._services.project_jobs(project_id, kind="sweep"):
                raise UserError("A sweep of this project is already going: wait or cancel it.")
            job = self._jobs.start(
                "sweep", work, exclusive=MODEL_JOB, attrs={"project_id": str(project_id)}
            )
        return {"job_id": job.id}

    @exposed
    def start_export(self, project_id: str, options: dict[str, Any]) -> dict[str, Any]:
        """Export masks (format, out, masks, shortest_side) in a background job with progress."""
        project = self._project(project_id)
        if not isinstance(options, dict):
            raise UserError('Export options must be an object such as {"format": "coco"}.')
        fmt = options.get("format")
        if fmt not in FORMATS:
            raise UserError(f"Export format {fmt!r}: use one of {', '.join(FORMATS)}.")
        out = str(options.get("out") or "").strip()
        if not out:
            raise UserError(
                "Choose where to write the export (a file for coco/csv, else a folder)."
            )
        out = str(policy().check(out, "Export destination"))
        masks = options.get("masks") or "all"
        shortest = int_arg(options.get("shortest_side") or 1024, "Shortest side", 16, 16384)

        def work(job: Job) -> dict[str, Any]:
            job.set_message(f"exporting {fmt}")
            result = export_project(
                project,
                fmt=fmt,
                out=out,
                masks=masks,
                shortest_side=shortest,
                on_progress=_progress(job, "Export"),
            )
            for line in result.lines():
                job.add_log(line)
            job.set_message(result.lines()[-1])
            return result.to_dict()

        job = self._jobs.start("export", work, attrs={"project_id": str(project_id)})
        return {"job_id": job.id}


def _folder_stamp(folder: Path | None) -> tuple:
    """(entries, newest mtime) of a folder: changes when a mask is added, removed or rewritten."""
    if folder is None:
        return ()
    newest, count = 0, 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                try:
                    newest = max(newest, e.stat().st_mtime_ns)
                except OSError:
                    continue
                count += 1
    except OSError:
        return ()
    return (count, newest)
