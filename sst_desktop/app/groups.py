"""The groups screen and a group's grid: counts per group, frames with their URLs and flags,
and what changed since the last look (a screen following a run fetches only that)."""

from __future__ import annotations

import time
from typing import Any

from sst_desktop.app import media
from sst_desktop.app.base import ApiBase
from sst_desktop.app.exposed import exposed, int_arg
from sst_desktop.data import mask_state, review
from sst_desktop.data import project as project_mod
from sst_desktop.data.mask_files import mask_times, pk_from_mask_file_name

# How far a `group_changes` cursor (microseconds: exact in a JS number) reaches back before its scan.
CHANGE_MARGIN_US = 2_000_000


class GroupsApi(ApiBase):
    """Groups with their counts, a group's frames, and reference sampling."""

    @exposed
    def list_groups(self, project_id: str) -> list[dict[str, Any]]:
        """Every group with its counts: images, references, predictions (a reference is never
        also a prediction), stale predictions (see `mask_state`), flagged predictions."""
        project = self._project(project_id)
        scan = mask_state.MaskScan.of(project)
        scope = mask_state.scope_of(project)
        flags = review.latest_flags(project.spec.root)
        out = []
        for group in project.groups():
            state = mask_state.group_state(group.frames, scan, scope)
            out.append(
                {
                    "key": str(group.key),
                    "label": str(group.label),
                    "values": group.values,
                    **state.counts(),
                    "flagged": sum(pk in flags for pk in state.predicted + state.stale),
                }
            )
        # Reference scope "all": every group is predicted from all the project's references.
        shared = sum(g["refs"] for g in out) if project.spec.reference_scope == "all" else 0
        for entry in out:
            entry["shared_refs"] = shared
        return out

    @exposed
    def group_frames(self, project_id: str, group_key: str) -> list[dict[str, Any]]:
        """The frames of one group with image, thumbnail and mask URLs and review flags."""
        return self.group_changes(project_id, group_key, None)["frames"]

    @exposed
    def group_changes(
        self, project_id: str, group_key: str, since: int | None = None
    ) -> dict[str, Any]:
        """`group_frames` entries whose mask was written at or after `since` (None = all), and the
        cursor (microseconds) for the next call: a screen following a run fetches only what changed."""
        project = self._project(project_id)
        group = self._services.store.group(project_id, group_key)
        # Files renamed into place just after this scan may carry a slightly older mtime: the
        # cursor overlaps a margin, and an entry sent twice is harmless.
        cursor = time.time_ns() // 1000 - CHANGE_MARGIN_US
        frames = group.frames
        if since is not None:
            since = int_arg(since, "since")
            changed = set()
            for kind in ("ref", "pred"):
                times = mask_times(project.mask_dir(kind))
                changed |= {name for name, t in times.items() if t >= since * 1000}
            wanted = {pk_from_mask_file_name(name) for name in changed}
            frames = [f for f in frames if str(f.pk) in wanted]
        flags = review.latest_flags(project.spec.root) if frames else {}
        stale = mask_state.stale_predictions(project, group) if frames else set()
        pid = str(project_id)
        out = []
        for frame in frames:
            pk = str(frame.pk)
            pred_url = media.mask_url(pid, "pred", pk, project.pred_mask_path(pk))
            out.append(
                {
                    "pk": pk,
                    "image_url": media.image_url(pid, pk),
                    "thumb_url": media.thumb_url(pid, pk),
                    "ref_url": media.mask_url(pid, "ref", pk, project.ref_mask_path(pk)),
                    "pred_url": pred_url,
                    "flagged": flags.get(pk, []) if pred_url else [],
                    "stale": pk in stale,
                }
            )
        return {"frames": out, "cursor": cursor}

    @exposed
    def sample_references(
        self, project_id: str, group_key: str, n: int = 1, seed: int = 0
    ) -> dict[str, Any]:
        """N reference frames of a group drawn with a seed (as the original SST-GUI did)."""
        group = self._services.store.group(project_id, group_key)
        n = int_arg(n, "Number of references", 1)
        seed = int_arg(seed, "Seed")
        frames = project_mod.sample_references(list(group.frames), n, seed)
        return {"pks": [str(f.pk) for f in frames]}
