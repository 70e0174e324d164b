"""A check of a run without the model: reference masks, images and the checkpoint, with one
line per problem found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sst_desktop.data.images import image_size, load_image
from sst_desktop.data.mask_files import pk_from_mask_file_name
from sst_desktop.data.masks import apply_mask_mode, read_mask
from sst_desktop.engine.checkpoints import find_checkpoint
from sst_desktop.errors import UserError, describe_error
from sst_desktop.run.planning import RunOptions, plan_run
from sst_desktop.run.references import shared_set_report


@dataclass
class DryRunReport:
    """Findings of a dry run: report lines, problems (pk or None, text), warnings."""

    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str | None, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing would fail."""
        return not self.problems

    @property
    def failing_pks(self) -> list[str]:
        """Primary keys with at least one problem, in the order found, without repeats."""
        return list(dict.fromkeys(pk for pk, _ in self.problems if pk is not None))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "ok": self.ok,
            "lines": self.lines,
            "problems": [{"pk": pk, "reason": text} for pk, text in self.problems],
            "warnings": self.warnings,
            "failing_pks": self.failing_pks,
        }


def dry_run(project: Any, options: RunOptions | None = None, decode: bool = False) -> DryRunReport:
    """Check references and images without the model; `decode` fully decodes every image too."""
    options = options or RunOptions()
    report = DryRunReport()
    spec = project.spec

    # Reference files whose name is no frame of the project would silently never be used.
    known = {str(f.pk) for g in project.groups() for f in g.frames}
    ref_dir = project.mask_dir("ref")
    for name in sorted(project.mask_names("ref")):
        pk = pk_from_mask_file_name(name)
        if pk not in known:
            report.problems.append(
                (
                    pk,
                    f"{ref_dir / name}: no image has primary key {pk!r}; rename or delete the mask",
                )
            )

    # The model is not loaded, but a checkpoint that is not there would stop the real run.
    try:
        if find_checkpoint(spec.sam2, explicit=spec.checkpoint) is None:
            report.warnings.append(
                f"no local checkpoint for {spec.sam2}: the first run will download it"
            )
    except UserError as exc:
        report.problems.append((None, str(exc)))

    plans = plan_run(project, options)
    scope = options.reference_scope or spec.reference_scope
    shared, scope_lines, limit_problem = shared_set_report(project, scope)
    if limit_problem:
        report.problems.append((None, limit_problem))
    n_images = n_refs = 0
    for plan in plans:
        label = str(plan.group.label)
        if not (shared if shared is not None else plan.references):
            report.warnings.append(f"group {label}: no reference masks; it would be skipped")
        for pk, problem in plan.invalid:
            report.warnings.append(
                f"{project.pred_mask_path(pk)} is no valid prediction ({problem}): the run "
                "predicts it again"
            )
        only = None if options.frames is None else set(options.frames)
        for frame in plan.group.frames:
            pk = str(frame.pk)
            if only is not None and pk not in only and frame not in plan.references:
                continue  # another shard's target
            n_images += 1
            try:
                image_size(frame.image_path)
                if decode:
                    load_image(frame.image_path)
            except Exception as exc:
                # An ImageError already names the file; anything else gets the path added.
                text = describe_error(exc)
                if not isinstance(exc, UserError):
                    text = f"image {frame.image_path}: {text}"
                report.problems.append((pk, text))
                continue
    # The shared set is checked once, whichever groups were selected.
    ref_frames = shared if shared is not None else [f for p in plans for f in p.references]
    for frame in ref_frames:
        pk = str(frame.pk)
        n_refs += 1
        path = project.ref_mask_path(frame.pk)
        try:
            size = image_size(frame.image_path)
        except Exception as exc:
            if pk not in {found for found, _ in report.problems}:  # from a group not selected
                report.problems.append(
                    (pk, f"reference image {frame.image_path}: {describe_error(exc)}")
                )
            continue
        try:
            mask = read_mask(path, expected_size=size)
            if not mask.any():
                report.problems.append((pk, f"reference {path} is empty: label an object"))
                continue
            apply_mask_mode(mask, spec.mask_mode, name=str(path))
        except UserError as exc:
            report.problems.append((pk, f"reference {pk}: {exc}"))

    if n_images == 0:
        report.problems.append(
            (None, f"{spec.csv}: the project has no images: add rows to the CSV")
        )
    report.lines.append(
        f"Checked {n_images} image(s) in {len(plans)} group(s) and {n_refs} reference mask(s)"
        + (" (images fully decoded)" if decode else " (image headers)")
    )
    report.lines += scope_lines
    report.lines += [f"warning: {text}" for text in report.warnings]
    report.lines += [f"problem: {text}" for _, text in report.problems]
    if report.ok:
        report.lines.append("No problems found.")
    else:
        report.lines.append(
            f"{len(report.problems)} problem(s) in {len(report.failing_pks)} frame(s)"
        )
    return report
