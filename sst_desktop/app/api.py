"""The JS API: one object composed of every screen's methods, exposed to pywebview (`js_api`)
and, by name from `API_METHODS`, to the server's `/api/<name>` JSON POSTs."""

from __future__ import annotations

from sst_desktop.app.base import ApiBase, AppServices, services
from sst_desktop.app.candidates_api import CandidatesApi
from sst_desktop.app.dialogs import DialogsApi
from sst_desktop.app.exposed import ApiError
from sst_desktop.app.groups import GroupsApi
from sst_desktop.app.info import InfoApi
from sst_desktop.app.label_maps import LabelMapsApi
from sst_desktop.app.labelling import LabellingApi
from sst_desktop.app.projects import ProjectsApi
from sst_desktop.app.quality import QualityApi
from sst_desktop.app.runs import RunsApi

__all__ = ["API_METHODS", "Api", "ApiError", "AppServices", "services"]

# The only names the server dispatches to (pywebview exposes the same public methods).
API_METHODS = (
    # info.py
    "app_info",
    # projects.py
    "list_projects",
    "startup_project",
    "delete_project",
    "preview_csv",
    "validate_config",
    "create_project",
    "set_checkpoint",
    "project_settings",
    "update_project_settings",
    # dialogs.py
    "pick_file",
    "pick_folder",
    "upload_file",
    # groups.py
    "list_groups",
    "group_frames",
    "group_changes",
    "sample_references",
    # labelling.py
    "open_frame",
    "generate_candidates",
    "refine_mask",
    "masks_at",
    "save_reference",
    "delete_reference",
    "use_as_reference",
    # label_maps.py
    "frame_labels",
    "mask_crop",
    "save_labels",
    # candidates_api.py
    "candidate_settings",
    "set_candidate_settings",
    "reset_candidate_settings",
    "candidate_updates",
    # runs.py
    "model_status",
    "download_model",
    "start_run",
    "job_status",
    "cancel_job",
    "list_jobs",
    # quality.py
    "set_part_names",
    "set_ground_truth",
    "evaluate_project",
    "start_sweep",
    "start_export",
)


class Api(
    InfoApi,
    ProjectsApi,
    DialogsApi,
    GroupsApi,
    LabellingApi,
    LabelMapsApi,
    CandidatesApi,
    RunsApi,
    QualityApi,
    ApiBase,
):
    """Every method the UI calls (see `API_METHODS`); state lives in `services(api)`."""
