"""Export a project's masks to the formats training tools read: COCO, YOLO, a CSV table and an
image-segmentation folder. One module per format; this module picks the masks and dispatches."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sst_desktop.errors import UserError
from sst_desktop.export.coco import export_coco
from sst_desktop.export.items import ExportItem, ExportResult, collect_items
from sst_desktop.export.segfolder import export_segfolder
from sst_desktop.export.table import export_csv
from sst_desktop.export.yolo import export_yolo

FORMATS = ("coco", "yolo", "csv", "segfolder")
ProgressFn = Callable[[int, int], None]

__all__ = ["FORMATS", "ExportItem", "ExportResult", "collect_items", "export_project"]


def export_project(
    project: Any,
    fmt: str,
    out: str | os.PathLike,
    masks: str = "all",
    shortest_side: int = 1024,
    on_progress: ProgressFn | None = None,
) -> ExportResult:
    """Write the project's masks (`pred`, `ref` or `all`) in format `fmt` to `out`."""
    if fmt not in FORMATS:
        raise UserError(f"export format {fmt!r} is unknown: use one of {', '.join(FORMATS)}")
    out = Path(os.path.expanduser(str(out))).absolute()
    items = collect_items(project, masks)
    if not items:
        raise UserError(
            f"project {project.name!r} has no {'' if masks == 'all' else masks + ' '}masks to "
            "export: label references and run a prediction first"
        )
    if fmt == "segfolder":
        return export_segfolder(
            project, items, out, shortest_side=shortest_side, on_progress=on_progress
        )
    write = {"coco": export_coco, "yolo": export_yolo, "csv": export_csv}[fmt]
    return write(project, items, out, on_progress=on_progress)
