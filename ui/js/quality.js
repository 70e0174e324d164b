// Quality and export on the project page: mIoU against the ground-truth folder per group and per
// image, the label-efficiency sweep and exports as background jobs with a progress bar.

import { call } from "./transport.js";
import { dialog, h, pollJob, progressBar, showError, toast } from "./util.js";

const FORMATS = [
  ["coco", "COCO instance segmentation (.json)"],
  ["yolo", "YOLO segmentation (folder)"],
  ["csv", "Table per image and part (.csv)"],
  ["segfolder", "Image-segmentation folder"],
];

const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));

/** The project's evaluation against its ground truth, or null (no folder, or it failed). */
export async function loadEvaluation(pid) {
  try {
    return await call("evaluate_project", pid);
  } catch (err) {
    showError(err);
    return null;
  }
}

/** The groups table's mIoU header cell (null without ground truth). */
export function miouHeader(evaluation) {
  return evaluation ? h("th", { class: "num", title: "Mean IoU of the predictions against the ground truth" }, "mIoU") : null;
}

/** A group's mIoU cell (null without ground truth). */
export function miouCell(evaluation, groupKey) {
  if (!evaluation) return null;
  const g = (evaluation.groups || []).find((x) => String(x.key) === String(groupKey));
  const title = g && g.images ? `${g.images} image(s) with ground truth and a prediction` : "No predicted image with ground truth";
  return h("td", { class: "num miou", "data-miou": g && g.miou !== null ? g.miou : "", title }, fmt(g ? g.miou : null));
}

/** One image's IoU for the viewer's header (null when it was not evaluated). */
export function imageIou(evaluation, pk) {
  if (!evaluation || !evaluation.per_image) return null;
  const value = evaluation.per_image[String(pk)];
  if (value === undefined) return null;
  return h("span", { class: "badge miou", id: "image-iou", title: "IoU of this prediction against its ground truth" },
    `IoU ${fmt(value)}`);
}

/** The project page's quality line and buttons: ground truth, sweep, export. */
export function qualityBar(pid, project, evaluation, ctx) {
  const status = h("div", { class: "quality-status", id: "quality-status" });
  const line = evaluation
    ? h("p", { class: "muted", id: "project-miou" }, evaluation.line)
    : h("p", { class: "muted small" }, "No ground-truth folder: set one to see mIoU per group.");
  const buttons = h("div", { class: "row" },
    h("button", { class: "btn", id: "ground-truth", title: "A folder of hand-made ID masks named {pk}.png",
      onclick: () => chooseGroundTruth(pid, project, ctx) }, "Ground truth…"),
    h("button", { class: "btn", id: "sweep", disabled: !project.ground_truth,
      title: project.ground_truth ? "mIoU for 1, 2, 3… references per group" : "Set a ground-truth folder first",
      onclick: () => runSweep(pid, status) }, "Sweep…"),
    h("button", { class: "btn", id: "export", title: "COCO, YOLO, CSV or an image-segmentation folder",
      onclick: () => runExport(pid, status) }, "Export…"));
  return h("div", { class: "quality-bar" }, line, buttons, status);
}

async function chooseGroundTruth(pid, project, ctx) {
  const input = h("input", { type: "text", id: "gt-folder", value: project.ground_truth || "", placeholder: "folder of {pk}.png masks" });
  const answer = await dialog({
    title: "Ground-truth folder",
    body: h("div", {}, h("p", { class: "hint" }, "Hand-made ID masks named like the project's masks ({pk}.png); empty = none."), input),
    buttons: [{ label: "Cancel", value: null }, { label: "Save", class: "btn btn-primary", action: "save-gt", value: () => ({ folder: input.value.trim() }) }],
  });
  if (!answer) return;
  try {
    await call("set_ground_truth", pid, answer.folder || null);
    ctx.refresh();
  } catch (err) {
    showError(err);
  }
}

/** Follow a job in the status area with a progress bar; resolves with its final status. */
async function follow(jobId, status, label) {
  const bar = h("div", { id: "quality-progress" }, progressBar(0, 1));
  const text = h("span", { class: "small muted" }, label);
  const cancel = h("button", { class: "btn btn-small", onclick: () => call("cancel_job", jobId).catch(showError) }, "Cancel");
  status.replaceChildren(h("div", { class: "row" }, text, cancel), bar);
  try {
    const final = await pollJob(jobId, (s) => {
      bar.replaceChildren(progressBar(s.done || 0, s.total || 0));
      text.textContent = `${label}: ${s.done || 0} of ${s.total || "?"}${s.message ? " · " + s.message : ""}`;
    });
    cancel.remove();
    return final;
  } catch (err) {
    status.replaceChildren();
    showError(err);
    return null;
  }
}

async function runExport(pid, status) {
  const format = h("select", { id: "export-format" }, FORMATS.map(([v, l]) => h("option", { value: v }, l)));
  const masks = h("select", { id: "export-masks" },
    [["all", "references, else predictions"], ["pred", "predictions"], ["ref", "references"]].map(([v, l]) => h("option", { value: v }, l)));
  const out = h("input", { type: "text", id: "export-out", placeholder: "/path/to/export.json or folder" });
  const side = h("input", { type: "number", id: "export-side", min: 16, value: 1024 });
  const outError = h("p", { class: "field-error", role: "alert", id: "export-error", "data-error-for": "out" });
  // The export starts from inside the dialog: a missing or refused path is said next to the field
  // and the dialog stays open with the user's choices.
  const start = async () => {
    outError.textContent = "";
    const answer = { format: format.value, masks: masks.value, out: out.value.trim(), shortest_side: Number(side.value) || 1024 };
    const { job_id } = await call("start_export", pid, answer);
    return { answer, jobId: job_id };
  };
  const refused = (err) => {
    outError.textContent = err && err.message ? err.message : String(err);
    out.focus();
  };
  const started = await dialog({
    title: "Export masks",
    body: h("div", { class: "settings-form" },
      h("div", { class: "field" }, h("label", { for: "export-format" }, "Format"), format),
      h("div", { class: "field" }, h("label", { for: "export-masks" }, "Masks"), masks),
      h("div", { class: "field" }, h("label", { for: "export-out" }, "Write to"), out, outError,
        h("p", { class: "hint" }, "A file for COCO and CSV, a folder for YOLO and the segmentation folder.")),
      h("div", { class: "field" }, h("label", { for: "export-side" }, "Shortest side (segmentation folder)"), side)),
    buttons: [{ label: "Cancel", value: null }, { label: "Export", class: "btn btn-primary", action: "start-export",
      submit: start, onError: refused }],
  });
  if (!started) return;
  const { answer, jobId } = started;
  const final = await follow(jobId, status, `Export ${answer.format}`);
  if (final && final.result) {
    status.append(h("p", { class: "small", id: "export-result" }, final.result.line));
    toast(final.result.line, final.result.errors.length ? "warn" : "success");
  } else if (final && final.state === "cancelled") {
    status.append(h("p", { class: "small muted" }, "Export cancelled."));
  }
}

async function runSweep(pid, status) {
  const ks = h("input", { type: "text", id: "sweep-ks", value: "1 2 3 5" });
  const seeds = h("input", { type: "number", id: "sweep-seeds", min: 1, max: 20, value: 3 });
  const answer = await dialog({
    title: "Label-efficiency sweep",
    body: h("div", { class: "settings-form" },
      h("p", { class: "hint" }, "For each number of references k, every group draws k of its ground-truth frames as references and SAM2 predicts the others in memory (nothing is written)."),
      h("div", { class: "field" }, h("label", { for: "sweep-ks" }, "References per group (k)"), ks),
      h("div", { class: "field" }, h("label", { for: "sweep-seeds" }, "Seeds"), seeds)),
    buttons: [{ label: "Cancel", value: null }, { label: "Run sweep", class: "btn btn-primary", action: "start-sweep",
      value: () => ({ ks: ks.value.split(/[\s,]+/).filter(Boolean).map(Number), seeds: Number(seeds.value) || 3 }) }],
  });
  if (!answer) return;
  let jobId;
  try {
    ({ job_id: jobId } = await call("start_sweep", pid, answer.ks, answer.seeds));
  } catch (err) {
    showError(err);
    return;
  }
  const final = await follow(jobId, status, "Sweep");
  if (final && final.result) {
    status.append(sweepTable(final.result));
    toast(sweepDoneText(final.result), "success", 10000);
  } else if (final && final.state === "cancelled") {
    toast("Sweep cancelled: no results.", "info");
  }
}

/** The toast when a sweep ends: its mean IoU over all groups per k, and where the full table is. */
function sweepDoneText(r) {
  const means = r.ks.map((k) => {
    const row = r.overall[String(k)];
    return `k = ${k}: ${row && row.mean !== null ? row.mean.toFixed(3) : "n/a"}`;
  });
  return `Sweep finished. Mean IoU over all groups: ${means.join(", ")}. Per group: the table under the Sweep button.`;
}

function sweepTable(r) {
  const cell = (row) => (row && row.mean !== null ? `${row.mean.toFixed(3)} ± ${row.std.toFixed(3)}` : "n/a");
  return h("table", { class: "table quality-table", id: "sweep-result" },
    h("thead", {}, h("tr", {}, h("th", {}, "Group"), ...r.ks.map((k) => h("th", { class: "num" }, `k = ${k}`)))),
    h("tbody", {},
      h("tr", {}, h("td", {}, h("strong", {}, "All groups")), ...r.ks.map((k) => h("td", { class: "num" }, cell(r.overall[String(k)])))),
      ...r.groups.map((g) => h("tr", {}, h("td", {}, g.label), ...r.ks.map((k) => h("td", { class: "num" }, cell(g.by_k[String(k)])))))));
}
