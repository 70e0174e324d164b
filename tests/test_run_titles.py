"""How a run reads in the job bar and its status line: group values, not `Column=value` labels."""

from __future__ import annotations

from _project_helpers import make_dataset

from sst_desktop.app.runs import apply_run_event, run_title
from sst_desktop.data.project import Project
from sst_desktop.run import runner
from sst_desktop.run.jobs import Job


def _project(tmp_path) -> Project:
    csv_path, image_root = make_dataset(tmp_path)
    return Project.create(
        "Titles",
        csv_path,
        "pk",
        "{Dataset}/{Image_name}.jpg",
        image_root,
        ["Dataset", "View"],
        folder=tmp_path / "project",
    )


def test_the_job_bar_names_a_run_by_its_groups_values(tmp_path):
    project = _project(tmp_path)
    keys = {g.label: g.key for g in project.groups()}
    beetles = keys["Dataset=beetles, View=dorsal"]
    empty = keys["Dataset=(empty), View=dorsal"]
    assert run_title(project, runner.RunOptions(groups=[beetles])) == "Run · beetles · dorsal"
    assert run_title(project, runner.RunOptions(groups=[empty])) == "Run · (empty) · dorsal"
    assert run_title(project, runner.RunOptions()) == "Run · Titles · all groups"


def test_the_run_message_counts_one_group_in_the_singular(tmp_path):
    job = Job("run")
    apply_run_event(job, {"type": "run_start", "targets": 5, "groups": 1})
    assert job.message == "5 images to predict in 1 group"
    apply_run_event(job, {"type": "run_start", "targets": 1, "groups": 2, "skipped": 3})
    assert job.message == "1 image to predict in 2 groups (3 already done)"
