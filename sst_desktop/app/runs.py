"""The run screen and the jobs behind every screen: propagation runs, model downloads, job
status and cancel; how a runner event shows in a job."""

from __future__ import annotations

import sys
from typing import Any

from sst_desktop.app.base import MODEL_JOB, ApiBase
from sst_desktop.app.exposed import exposed, int_arg
from sst_desktop.data import table
from sst_desktop.data.project import Project
from sst_desktop.engine import checkpoints, models, sam2_model
from sst_desktop.errors import UserError
from sst_desktop.run import runner
from sst_desktop.run.events import RunEvent
from sst_desktop.run.jobs import Job

RUN_OPTIONS = ("batch_size", "overwrite", "max_frames", "device")


def load_model(project: Project, job: Job | None = None) -> Any:
    """The project's SAM2 handle (spec's variant, checkpoint, device, image size); a download
    shows in `job` and stops when it is cancelled."""
    spec = project.spec
    if job is not None:
        job.set_message(f"loading SAM2 ({spec.sam2}); the first time takes a while")

    def progress(done: int, total: int | None) -> None:
        if job is None:
            return
        if job.cancelled():
            raise UserError("Model download cancelled; it resumes where it stopped next time.")
        text = f"downloading {spec.sam2}: {done / 1e6:.0f} MB" + (
            f" of {total / 1e6:.0f} MB" if total else ""
        )
        job.message = text

    return sam2_model.get_model(
        spec.sam2,
        device=spec.device,
        checkpoint=spec.checkpoint,
        image_size=spec.image_size,
        progress=progress,
    )


def run_title(project: Project, opts: runner.RunOptions) -> str:
    """The job bar's name of a run: its project and group(s)."""
    if not opts.groups:
        return f"Run · {project.name} · all groups"
    if len(opts.groups) > 1:
        return f"Run · {project.name} · {len(opts.groups)} groups"
    try:
        label = table.group_title(list(project.group(opts.groups[0]).values.values()))
    except KeyError:
        label = opts.groups[0]
    return f"Run · {label}"


def job_title(job: Job) -> str:
    """A few words naming a job in the job bar."""
    title = getattr(job, "title", None)
    if title:
        return str(title)
    if job.kind == "candidates":
        return f"Candidates · {getattr(job, 'pk', '')}"
    if job.kind == "download":
        return f"Download · {getattr(job, 'variant', '')}"
    return job.kind


def apply_run_event(job: Job, event: RunEvent) -> None:
    """Turn a runner event into job progress, message and log lines."""
    kind = event.get("type")
    if kind == "run_start":
        job.set_progress(0, event.get("targets", 0))
        targets, groups = event.get("targets", 0), event.get("groups", 0)
        job.set_message(
            f"{targets} image{'' if targets == 1 else 's'} to predict"
            f" in {groups} group{'' if groups == 1 else 's'}"
            + (f" ({event['skipped']} already done)" if event.get("skipped") else "")
        )
    elif kind == "model_load":
        job.set_message(f"loading SAM2 {event.get('variant', '')} on {event.get('device', '')}")
    elif kind == "progress":
        job.set_progress(event.get("done", 0), event.get("total"))
    elif kind == "frame":
        if event.get("status") == "failed":
            job.add_log(f"{event.get('pk')}: failed: {event.get('reason')}")
        elif event.get("flags"):
            job.add_log(f"{event.get('pk')}: written, review: {'; '.join(event['flags'])}")
        job.message = f"{event.get('pk')} {event.get('status')}"
    elif kind == "group_start":
        job.set_message(f"group {event.get('label', event.get('key', ''))}")
    elif kind == "group_skipped":
        job.add_log(f"group {event.get('label')}: skipped: {event.get('reason')}")
    elif kind == "run_end":
        summary = event.get("summary") or {}
        job.set_message(
            f"done: {summary.get('written', 0)} written, {len(summary.get('failed', []))} failed"
            + (", cancelled" if summary.get("cancelled") else "")
        )
    elif kind == "log" or "message" in event:
        job.add_log(str(event.get("message", event)))


def run_options(group_keys: list[str] | None, options: dict[str, Any]) -> runner.RunOptions:
    """The runner's options from the run screen's form (each value checked)."""
    unknown = set(options) - set(RUN_OPTIONS)
    if unknown:
        raise UserError(f"Unknown run option(s): {', '.join(sorted(unknown))}.")
    max_frames = options.get("max_frames")
    return runner.RunOptions(
        batch_size=int_arg(options.get("batch_size", 1), "Batch size", 1, 256),
        max_frames=int_arg(max_frames, "Max frames", 1) if max_frames not in (None, "") else None,
        overwrite=bool(options.get("overwrite", False)),
        groups=[str(k) for k in group_keys] if group_keys else None,
        device=options.get("device") or None,
    )


class RunsApi(ApiBase):
    """Propagation runs, model downloads and the jobs of every screen."""

    @exposed
    def start_run(
        self, project_id: str, group_keys: list[str] | None = None, options: dict | None = None
    ) -> dict[str, Any]:
        """Propagate references to targets of some (None = all) groups in a background job."""
        project = self._project(project_id)
        opts = run_options(group_keys, options or {})

        def work(job: Job) -> dict[str, Any]:
            job.set_message("planning the run")
            summary = runner.run_inference(
                project, opts, lambda event: apply_run_event(job, event), job.cancel
            )
            return summary.to_dict()

        with self._lock:  # a double click must not start two runs of one project
            if self._services.project_jobs(project_id, kind="run"):
                raise UserError("A run of this project is already going: wait or cancel it.")
            job = self._jobs.start(
                "run",
                work,
                exclusive=MODEL_JOB,
                attrs={"project_id": str(project_id), "title": run_title(project, opts)},
            )
        return {"job_id": job.id}

    @exposed
    def job_status(self, job_id: str) -> dict[str, Any]:
        """State, progress, rate, ETA, last log lines, result or error of a job."""
        return self._jobs.get(job_id).to_dict()

    @exposed
    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Ask a job to stop (a run finishes its current batch, then saves its summary)."""
        return {"ok": True, "was_running": self._jobs.cancel(job_id)}

    @exposed
    def list_jobs(self, project_id: str | None = None) -> list[dict[str, Any]]:
        """Running jobs (optionally of one project), so a reopened screen can reattach."""
        jobs = self._jobs.jobs(running_only=True)
        if project_id is not None:
            jobs = self._services.project_jobs(project_id)
        return [
            j.to_dict(log_lines=0)
            | {
                "project_id": getattr(j, "project_id", None),
                "pk": getattr(j, "pk", None),
                "title": job_title(j),
            }
            for j in jobs
        ]

    @exposed
    def model_status(self, variant: str) -> dict[str, Any]:
        """Whether a variant's checkpoint is present (and where), and whether it is loaded."""
        v = models.resolve_variant(variant)
        path = checkpoints.find_checkpoint(v)
        loaded = False
        # Only a model already in memory counts; asking must not import torch.
        sam2_model = sys.modules.get("sst_desktop.engine.sam2_model")
        if sam2_model is not None:
            loaded = any(h.variant.name == v.name for h in sam2_model.loaded_models())
        return {
            "variant": v.name,
            "label": v.label,
            "present": path is not None,
            "path": str(path) if path else None,
            "approx_mb": v.approx_mb,
            "loaded": loaded,
            "downloading": bool(self._downloads(v.name)),
        }

    def _downloads(self, variant_name: str) -> list[Job]:
        jobs = self._jobs.jobs(kind="download", running_only=True)
        return [j for j in jobs if getattr(j, "variant", None) == variant_name]

    @exposed
    def download_model(self, variant: str) -> dict[str, Any]:
        """Download a variant's checkpoint in a job (resumable, verified)."""
        v = models.resolve_variant(variant)

        def work(job: Job) -> dict[str, Any]:
            job.set_message(f"downloading {v.label}")

            def progress(done: int, total: int | None) -> None:
                if job.cancelled():
                    raise UserError("Download cancelled; it resumes where it stopped next time.")
                job.set_progress(done, total or 0)
                job.message = f"{done / 1e6:.0f} MB" + (
                    f" of {total / 1e6:.0f} MB" if total else ""
                )

            path = checkpoints.ensure_checkpoint(v, progress=progress)
            job.set_message(f"{v.checkpoint_name} ready")
            return {"variant": v.name, "path": str(path)}

        with self._lock:  # two clicks start one download
            running = self._downloads(v.name)
            if running:
                return {"job_id": running[0].id}
            job = self._jobs.start(
                "download", work, message=f"downloading {v.label}", attrs={"variant": v.name}
            )
        return {"job_id": job.id}
