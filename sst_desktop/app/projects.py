"""The projects screens: the list, a new project (CSV preview, live validation, creation),
a project's settings and deletion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sst_desktop.app.access import policy
from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import clean_config, exposed, int_arg, str_list
from sst_desktop.data import registry, table, validation
from sst_desktop.data import spec as spec_mod
from sst_desktop.data.labels import labels_to_json
from sst_desktop.data.project import Project
from sst_desktop.data.spec import Spec
from sst_desktop.engine import checkpoints
from sst_desktop.errors import UserError
from sst_desktop.run.references import check_shared_limit

PREVIEW_ROWS = 8
# What `update_project_settings` may change (the CSV, keys and grouping define the project).
SETTINGS_KEYS = (
    "name",
    "sam2",
    "checkpoint",
    "device",
    "image_size",
    "mask_mode",
    "reference_scope",
)
SETTINGS_SOURCE = "Project settings"  # how the spec's checks name the form in their messages


# Path fields of a new-project config, as the API's path rule names them in messages.
CONFIG_PATHS = {
    "csv": "CSV file",
    "image_root": "Image folder",
    "folder": "Project folder",
    "checkpoint": "Checkpoint file",
}


def check_config_paths(config: dict[str, Any]) -> None:
    """UserError for a path of `config` outside the folders the API may open (see access.py)."""
    for key, what in CONFIG_PATHS.items():
        value = config.get(key)
        if value is not None and str(value).strip():
            policy().check(str(value), what)


def settings_error(config: dict[str, Any]) -> str | None:
    """The first problem with the model/device/mask-mode/image-size choices (the spec's own
    checks), if any; absent choices are not checked."""
    checks = {
        "sam2": spec_mod.check_variant,
        "device": spec_mod.check_device,
        "mask_mode": spec_mod.check_mask_mode,
        "image_size": spec_mod.check_image_size,
        "reference_scope": spec_mod.check_reference_scope,
    }
    for key, check in checks.items():
        value = config.get(key)
        if value is None or value == "":
            continue
        if key == "image_size" and isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        try:
            check(value, source=SETTINGS_SOURCE)
        except UserError as exc:
            return str(exc)
    return None


def settings_dict(spec: Spec) -> dict[str, Any]:
    """The editable settings of a spec, JSON-able (the settings dialog's fields)."""
    return {
        "name": spec.display_name,
        "sam2": spec.sam2,
        "checkpoint": str(spec.checkpoint) if spec.checkpoint else None,
        "device": spec.device,
        "image_size": spec.image_size,
        "mask_mode": spec.mask_mode,
        "reference_scope": spec.reference_scope,
        "spec_path": str(spec.spec_path) if spec.spec_path else None,
    }


class ProjectsApi(ApiBase):
    """The projects list, the new-project form and a project's settings."""

    def _summary(self, entry: dict[str, Any]) -> dict[str, Any]:
        """A `list_projects` item: the registry entry plus counts from the project folder."""
        summary = {
            "id": str(entry["id"]),
            "name": entry.get("name"),
            "root": entry.get("root"),
            "spec_path": entry.get("spec_path"),
            "missing": bool(entry.get("missing", False)),
            "images": None,
            "groups": None,
            "refs": None,
            "preds": None,
            "stale": None,
            "error": None,
        }
        if summary["missing"]:
            summary["error"] = f"{summary['spec_path']} is missing (moved or deleted)."
            return summary
        try:
            project = self._project(summary["id"])
            counts = project.status()
            summary.update(
                images=counts["images"],
                groups=len(project.groups()),
                refs=counts["refs"],
                preds=counts["preds"],
                stale=counts["stale"],
                # Part names and the ground-truth folder: the label screen, legend and mIoU use them.
                labels=labels_to_json(project.spec.labels),
                ground_truth=str(project.spec.ground_truth) if project.spec.ground_truth else None,
            )
        except UserError as exc:
            summary["missing"] = True
            summary["error"] = str(exc)
        return summary

    @exposed
    def list_projects(self) -> list[dict[str, Any]]:
        """Known projects with counts (images, groups, references, predictions)."""
        self._services.wait_for_setup()
        return [self._summary(e) for e in self._services.store.entries()]

    @exposed
    def startup_project(self) -> dict[str, Any]:
        """The sample project this launch created, the first time only (the UI opens it)."""
        svc = self._services
        svc.wait_for_setup()
        with svc.lock:
            project_id, svc.startup_project_id = svc.startup_project_id, None
            svc.startup_claimed = True  # a sample finished after a time-out is not opened later
        return {"project_id": project_id}

    @exposed
    def delete_project(self, project_id: str, delete_files: bool = False) -> dict[str, Any]:
        """Forget a project; with `delete_files` also remove its folder (spec, masks, runs)."""
        self._services.store.entry(project_id)  # clear error for an unknown id
        with self._lock:  # no job of the project starts while it is being deleted
            if self._services.project_jobs(project_id):
                raise UserError("A job is still running on this project: cancel it first.")
            aside = registry.unregister(str(project_id), delete_files=bool(delete_files))
            self._services.forget_project(project_id)
        # Off the list and renamed: its files (maybe thousands of masks) go without any lock held.
        result = aside.remove() if aside is not None else {"deleted": [], "kept": []}
        return {"ok": True, "deleted": result["deleted"], "kept": result["kept"]}

    @exposed
    def preview_csv(self, path: str, delimiter: str | None = None) -> dict[str, Any]:
        """Columns, first rows, row count and field delimiter (None = detect) of a CSV."""
        df = table.read_csv(policy().check(path, "CSV file"), delimiter=delimiter)
        rows = df.head(PREVIEW_ROWS).fillna("").astype(str).values.tolist()
        return {
            "columns": [str(c) for c in df.columns],
            "rows": rows,
            "n_rows": len(df),
            "delimiter": df.attrs["delimiter"],
        }

    @exposed
    def validate_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Live validation of a new project's configuration (nothing is created)."""
        config = clean_config(config)
        if not config.get("csv"):
            return {"ok": False, "errors": ["Choose a CSV file first."], "warnings": []}
        check_config_paths(config)
        report = validation.validate_config(
            config["csv"],
            config.get("primary_key") or "",
            config.get("img_path") or "",
            config.get("image_root"),
            str_list(config.get("group_by")),
            delimiter=config.get("delimiter"),
        )
        out = report.to_dict()
        problem = settings_error(config)
        if problem:
            out["errors"] = [*out.get("errors", []), problem]
            out["ok"] = False
        return out

    @exposed
    def create_project(self, config: dict[str, Any]) -> dict[str, Any]:
        """Create (and register) a project; returns its `list_projects` summary."""
        config = clean_config(config)
        if not config.get("csv"):
            raise UserError("Choose a CSV file first.")
        check_config_paths(config)
        image_size = config.get("image_size")
        _, entry = registry.create_project(
            config.get("name") or "",
            config["csv"],
            config.get("primary_key") or "",
            config.get("img_path") or "",
            config.get("image_root"),
            str_list(config.get("group_by")),
            sam2=config.get("sam2"),
            mask_mode=config.get("mask_mode") or "original",
            device=config.get("device") or "auto",
            image_size=int_arg(image_size, "Image size") if image_size is not None else None,
            checkpoint=config.get("checkpoint"),
            folder=config.get("folder"),
            delimiter=config.get("delimiter"),
        )
        self._services.forget_project(entry["id"])
        return self._summary(entry)

    @exposed
    def set_checkpoint(self, project_id: str, path: str | None) -> dict[str, Any]:
        """Use a checkpoint file for a project (checked against its variant); None = default."""
        project = self._project(project_id)
        spec = project.spec
        with self._lock:
            if path:
                policy().check(path, "Checkpoint file")
                found = checkpoints.find_checkpoint(spec.sam2, explicit=path)
                checkpoints.verify_checkpoint(spec.sam2, found)
                spec.checkpoint = Path(found).absolute()
            else:
                spec.checkpoint = None
            spec_mod.save_spec(spec, project.spec_path or spec.spec_path)
        return {"ok": True, "checkpoint": str(spec.checkpoint) if spec.checkpoint else None}

    @exposed
    def project_settings(self, project_id: str) -> dict[str, Any]:
        """A project's editable settings: name, SAM2 variant, checkpoint, device, size, mask mode."""
        return settings_dict(self._project(project_id).spec)

    @exposed
    def update_project_settings(self, project_id: str, settings: dict[str, Any]) -> dict[str, Any]:
        """Change an existing project's settings (all checked first); returns the saved settings."""
        if not isinstance(settings, dict):
            raise UserError('Project settings must be an object such as {"image_size": 256}.')
        unknown = sorted(set(settings) - set(SETTINGS_KEYS))
        if unknown:
            raise UserError(
                f"Unknown project setting(s) {', '.join(map(repr, unknown))}: use "
                f"{', '.join(SETTINGS_KEYS)}."
            )
        project = self._project(project_id)
        # Held to the end: a model job of this project cannot start on half-changed settings.
        with self._lock:
            for job in self._services.project_jobs(project_id):
                raise UserError(
                    f"A {job.kind} job of this project is running: wait for it or cancel it, "
                    "then change the settings."
                )
            spec = self._apply_settings(project, clean_config(settings))
        return settings_dict(spec)

    def _apply_settings(self, project: Project, clean: dict[str, Any]) -> Spec:
        """Check the changed settings, then set and save them together (or change nothing)."""
        spec = project.spec
        size = clean.get("image_size", spec.image_size)
        new = {
            "name": (clean.get("name") or spec.name) if "name" in clean else spec.name,
            "sam2": clean.get("sam2") or spec.sam2,
            "device": clean.get("device") or spec.device,
            "mask_mode": clean.get("mask_mode") or spec.mask_mode,
            "image_size": int_arg(size, "Image size") if size is not None else spec.image_size,
            "reference_scope": clean.get("reference_scope") or spec.reference_scope,
        }
        problem = settings_error(new)
        if problem:
            raise UserError(problem)
        if new["reference_scope"] == "all":
            # Refused now rather than at the next run: the shared set is over the limit.
            check_shared_limit(len(project.all_reference_frames()))
        # A changed variant must still match the checkpoint the project keeps using.
        checkpoint = clean.get("checkpoint", spec.checkpoint)
        if checkpoint is not None and ("checkpoint" in clean or new["sam2"] != spec.sam2):
            if "checkpoint" in clean:
                policy().check(str(checkpoint), "Checkpoint file")
            found = checkpoints.find_checkpoint(new["sam2"], explicit=checkpoint)
            checkpoints.verify_checkpoint(new["sam2"], found)
            checkpoint = Path(found).absolute()
        old = {k: getattr(spec, k) for k in (*new, "checkpoint")}
        for key, value in {**new, "checkpoint": checkpoint}.items():
            setattr(spec, key, value)
        try:
            spec_mod.check_spec_values(spec, source=f"Project {project.name!r}")
            spec_mod.save_spec(spec, project.spec_path or spec.spec_path)
        except Exception:
            for key, value in old.items():  # nothing half-applied in memory
                setattr(spec, key, value)
            raise
        if new["name"] != old["name"]:
            registry.register(spec.spec_path, name=spec.display_name)
        return spec
