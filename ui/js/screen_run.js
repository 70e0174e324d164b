// Run screen: propagate references to the rest of one group or all groups, with live progress.

import { lazyGrid, thumb } from "./grid.js";
import { call } from "./transport.js";
import { groupNameEl, groupTitle } from "./group_name.js";
import { jobBlocking, refreshJobs } from "./jobs_indicator.js";
import { emptyState, enc, formatEta, h, plural, predText, progressBar, showError, sleep, toast } from "./util.js";

export async function render(root, params, ctx) {
  const pid = params.projectId;
  const groupKey = params.groupKey ?? null;
  root.className = "page";
  const project = await ctx.project(pid);
  const groups = await call("list_groups", pid);
  const group = groupKey === null ? null : groups.find((g) => String(g.key) === String(groupKey));
  if (groupKey !== null && !group) throw new Error(`Group ${groupKey} is not in project ${project.name}.`);
  const title = group ? `Run · ${groupTitle(group)}` : "Run all groups";
  ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: project.name, href: `#/p/${enc(pid)}` }, { label: title }]);

  let targets = group ? [group] : groups;
  // With reference scope "all", a group without references of its own uses the shared ones.
  const hasRefs = (g) => g.refs > 0 || g.shared_refs > 0;
  let withRefs = targets.filter(hasRefs);
  // Images a run would write: every non-reference image with Overwrite, else those not yet
  // predicted (stale predictions, older than the group's newest reference, count as not yet).
  const toPredict = (overwriteAll, limit) => {
    const n = withRefs.reduce((t, g) => t + Math.max(0, overwriteAll ? g.images - g.refs
      : g.images - g.refs - g.preds + (g.stale || 0)), 0);
    return limit ? Math.min(n, limit) : n;
  };
  const todo = toPredict(false, null);

  const batch = h("input", { type: "number", id: "run-batch", min: 1, value: 1, title: "Targets per model call (larger uses more memory)" });
  const overwrite = h("input", { type: "checkbox", id: "run-overwrite", title: "Recompute masks that already exist" });
  const maxFrames = h("input", { type: "number", id: "run-max", min: 1, placeholder: "all", title: "Stop after this many images (for a quick test)" });
  const startBtn = h("button", { class: "btn btn-primary", id: "start-run", title: "Start propagation in the background" }, "Start");
  const cancelBtn = h("button", { class: "btn btn-danger", id: "cancel-run", disabled: true, title: "Stop after the current image" }, "Cancel");
  const bar = h("div", { class: "run-bar" }, progressBar(0, 1));
  const counts = h("div", { class: "run-stats", id: "run-stats" });
  const message = h("p", { class: "muted", id: "run-message" });
  const runNote = h("p", { class: "run-note hidden", id: "run-note" });
  const log = h("pre", { class: "log", id: "run-log" });
  const results = h("div", { class: "results" });

  const summaryText = () => {
    const skipped = targets.length - withRefs.length;
    if (!withRefs.length) return "No group here has a labelled reference yet: label one first.";
    const limit = maxFrames.value ? Math.max(1, parseInt(maxFrames.value, 10)) : null;
    const n = toPredict(overwrite.checked, limit);
    const what = overwrite.checked ? "to predict (existing predictions are redone)"
      : n ? "to predict" : "left to predict: tick Overwrite to redo existing predictions";
    return `${plural(withRefs.length, "group")} with references, ${plural(n, "image")} ${what}.` +
      (skipped ? ` ${plural(skipped, "group")} without references will be skipped.` : "");
  };
  const summary = h("p", { class: "muted", id: "run-summary" }, summaryText());
  // Start is on when a run would write something: references exist and images are left to predict
  // (or Overwrite redoes the existing predictions); never while a run of this project goes.
  const updateStart = () => {
    if (jobId) return;
    const limit = maxFrames.value ? Math.max(1, parseInt(maxFrames.value, 10)) : null;
    const nothing = !withRefs.length || !toPredict(overwrite.checked, limit);
    startBtn.disabled = nothing;
    startBtn.title = !withRefs.length ? "Label a reference first"
      : nothing ? "Nothing left to predict: tick Overwrite to redo existing predictions" : "Start propagation in the background";
  };
  const optionsChanged = () => {
    summary.textContent = summaryText();
    updateStart();
    if (!jobId && withRefs.length) {
      const limit = maxFrames.value ? Math.max(1, parseInt(maxFrames.value, 10)) : null;
      show({ done: 0, total: toPredict(overwrite.checked, limit), state: "idle", message: "Ready." });
    }
  };
  overwrite.addEventListener("change", optionsChanged);
  maxFrames.addEventListener("input", optionsChanged);
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, title), summary),
      group ? h("a", { class: "btn", href: `#/p/${enc(pid)}/label/${enc(group.key)}` }, "Label references") : null),
    h("section", { class: "card run-card" },
      h("div", { class: "run-options" },
        h("label", { class: "field-inline" }, "Batch size", batch),
        h("label", { class: "field-inline" }, "Max images", maxFrames),
        h("label", { class: "check" }, overwrite, "Overwrite existing predictions"),
        h("span", { class: "spacer" }), startBtn, cancelBtn),
      runNote, bar, counts, message, log),
    h("h2", {}, group ? "Results" : "Groups"), results);

  let jobId = null;
  let alive = true;
  let cancelling = false;
  let runBatch = 1;
  // SAM2 cannot stop inside a model call: say what the cancel waits for.
  const cancelText = (s) => {
    const loading = /load|download/i.test(s.message || "") && !(s.done > 0);
    const what = loading ? "the model to finish loading"
      : runBatch > 1 ? `the current batch of up to ${runBatch} images to finish` : "the current image to finish";
    return `Cancelling: waiting for ${what}; masks already written are kept.`;
  };
  // The badge already says "cancelled": the line says what the cancel left behind.
  const stoppedText = (s) => {
    const written = s.result && s.result.written !== undefined ? s.result.written : null;
    return written === null ? "Stopped before the end; masks already written are kept."
      : `Stopped before the end: ${plural(written, "mask")} written and kept; the other images are left to predict.`;
  };
  let lastDone = -1;
  let lastRefresh = 0;
  let pendingRefresh = false;

  // One group: the grid is built once, then only frames whose mask changed since the last poll
  // (group_changes' cursor) are fetched and their tiles rebuilt; thousands of images stay smooth.
  let grid = null;
  let cursor = null;
  const position = new Map(); // pk -> index in the grid

  async function refreshResults(force = false) {
    const now = Date.now();
    if (!force && now - lastRefresh < 1500) return;
    lastRefresh = now;
    pendingRefresh = false;
    try {
      if (group) {
        const changes = await call("group_changes", pid, group.key, force || !grid ? null : cursor);
        if (!alive) return;
        cursor = changes.cursor;
        const frames = changes.frames;
        const same = grid && (!force || (frames.length === position.size && frames.every((f, i) => position.get(String(f.pk)) === i)));
        if (same) {
          // Rebuild only the tiles whose entry changed (a new mask URL, or flags after the run).
          for (const f of frames) {
            const i = position.get(String(f.pk));
            if (i !== undefined && JSON.stringify(grid.items[i]) !== JSON.stringify(f)) grid.replace(i, f);
          }
        } else {
          if (grid) grid.stop();
          position.clear();
          frames.forEach((f, i) => position.set(String(f.pk), i));
          grid = frames.length ? lazyGrid(frames, (f) => thumb(pid, group.key, f), { id: "run-results" }) : null;
          results.replaceChildren(grid ? grid.el : emptyState("No images", "This group is empty."));
        }
      } else {
        const list = await call("list_groups", pid);
        results.replaceChildren(h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", { class: "num" }, "Images"), h("th", { class: "num" }, "References"),
            h("th", { class: "num" }, "Predicted"), h("th", { class: "num" }, "Flagged"), h("th", {}, ""))),
          h("tbody", {}, list.map((g) => h("tr", {},
            h("td", {}, groupNameEl(g)), h("td", { class: "num" }, g.images), h("td", { class: "num" }, g.refs),
            h("td", { class: "num" }, predText(g)), h("td", { class: "num" }, g.flagged || 0),
            h("td", {}, h("a", { class: "btn btn-small", href: `#/p/${enc(pid)}/view/${enc(g.key)}` }, "View")))))));
      }
    } catch (err) {
      console.warn(err);
    }
  }

  function show(s) {
    bar.replaceChildren(progressBar(s.done || 0, s.total || 0));
    counts.replaceChildren(
      h("span", {}, h("strong", {}, `${s.done || 0} / ${s.total || 0}`), " images"),
      h("span", {}, h("strong", {}, s.ips ? s.ips.toFixed(2) : "–"), " images/s"),
      h("span", {}, "ETA ", h("strong", {}, s.state === "running" ? formatEta(s.eta_s) : "–")),
      h("span", { class: `badge state-${s.state}`, id: "run-state" }, s.state));
    message.textContent = cancelling && s.state === "running" ? cancelText(s)
      : s.state === "cancelled" ? stoppedText(s) : s.error || s.message || "";
    const lines = s.log || [];
    log.textContent = lines.join("\n");
    log.scrollTop = log.scrollHeight;
    if ((s.done || 0) !== lastDone) {
      lastDone = s.done || 0;
      pendingRefresh = true;
    }
    if (pendingRefresh) refreshResults();
  }

  /** Show a run of this project until it ends: one started here, elsewhere, or before a reload. */
  async function follow(id, title, startedHere = false) {
    jobId = id;
    startBtn.disabled = true;
    startBtn.title = "One run per project at a time: this one is going";
    cancelBtn.disabled = false;
    runNote.textContent = startedHere ? "Running. Start is off until the run ends or is cancelled."
      : `Showing ${title || "a run of this project"}, started earlier or on another screen. Start is off until it ends or is cancelled.`;
    runNote.classList.remove("hidden");
    try {
      for (;;) {
        if (!alive) return;
        const s = await call("job_status", id);
        show(s);
        if (s.state !== "running") {
          if (s.state === "done") {
            const r = s.result || {};
            toast(`Run finished${r.written !== undefined ? `: ${plural(r.written, "mask")} written` : ""}`, "success");
          } else if (s.state === "failed") {
            showError(new Error(s.error || "The run failed."));
          } else if (s.state === "cancelled") {
            toast("Run cancelled; masks written so far are kept.", "info");
          }
          break;
        }
        await sleep(500);
      }
    } catch (err) {
      showError(err);
    }
    jobId = null;
    cancelling = false;
    runNote.classList.add("hidden");
    cancelBtn.disabled = true;
    await recount();
    refreshResults(true);
  }

  /** Count again what is left to predict (after a run, the header and Start follow the project). */
  async function recount() {
    try {
      const fresh = await call("list_groups", pid);
      if (!alive) return;
      targets = group ? fresh.filter((g) => String(g.key) === String(group.key)) : fresh;
      withRefs = targets.filter(hasRefs);
    } catch (err) {
      console.warn(err);
    }
    summary.textContent = summaryText();
    updateStart();
  }

  updateStart();
  let starting = false; // between Start and the job's id: the job poll must not follow it too
  startBtn.addEventListener("click", async () => {
    startBtn.disabled = true;
    starting = true;
    runBatch = Math.max(1, parseInt(batch.value, 10) || 1);
    const options = {
      batch_size: runBatch,
      overwrite: overwrite.checked,
      max_frames: maxFrames.value ? Math.max(1, parseInt(maxFrames.value, 10)) : null,
    };
    try {
      const { job_id } = await call("start_run", pid, group ? [group.key] : null, options);
      lastDone = -1;
      follow(job_id, title, true);
      refreshJobs();
    } catch (err) {
      showError(err);
      updateStart();
    } finally {
      starting = false;
    }
  });
  cancelBtn.addEventListener("click", async () => {
    if (!jobId) return;
    cancelBtn.disabled = true;
    cancelling = true;
    message.textContent = cancelText({ message: "", done: lastDone });
    try { await call("cancel_job", jobId); } catch (err) { showError(err); cancelBtn.disabled = false; cancelling = false; }
  });

  show({ done: 0, total: todo, state: "idle", message: withRefs.length ? "Ready." : "" });
  refreshResults(true);
  // Any run of this project (started here, on another screen or before a reload) is shown.
  const stopJobs = jobBlocking(pid, (jobs) => {
    const running = jobs.find((j) => j.kind === "run");
    if (running && jobId === null && alive && !starting) {
      lastDone = -1;
      follow(running.id, running.title);
    }
  });

  return () => { alive = false; stopJobs(); if (grid) grid.stop(); };
}
