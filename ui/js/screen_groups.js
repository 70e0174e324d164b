// Groups screen: every group with its counts; search, filter, and the way into labelling, runs, results.

import { call } from "./transport.js";
import { groupColumns, groupNameEl, groupTitle } from "./group_name.js";
import { jobBlocking } from "./jobs_indicator.js";
import { dialog, emptyState, enc, framesDone, h, plural, progressBar, showError, toast } from "./util.js";
import { loadEvaluation, miouCell, miouHeader, qualityBar } from "./quality.js";

const FILTERS = [
  ["all", "All groups"],
  ["needs-refs", "Needs references"],
  ["ready", "Ready to run"],
  ["flagged", "Has flagged"],
  ["done", "Fully predicted"],
];

export async function render(root, params, ctx) {
  const pid = params.projectId;
  root.className = "page";
  const project = await ctx.project(pid);
  ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: project.name }]);
  const groups = await call("list_groups", pid);
  const evaluation = project.ground_truth ? await loadEvaluation(pid) : null;
  const search = h("input", { type: "search", id: "group-search", placeholder: "Search groups…", "aria-label": "Search groups" });
  const filter = h("select", { id: "group-filter", "aria-label": "Filter groups" }, FILTERS.map(([v, l]) => h("option", { value: v }, l)));
  const body = h("div", { class: "group-list" });
  const count = h("span", { class: "muted" });
  const totals = groups.reduce((t, g) => ({ images: t.images + g.images, refs: t.refs + g.refs, preds: t.preds + g.preds,
    stale: t.stale + (g.stale || 0), flagged: t.flagged + (g.flagged || 0) }), { images: 0, refs: 0, preds: 0, stale: 0, flagged: 0 });
  const runAll = h("a", { class: "btn btn-primary", href: `#/p/${enc(pid)}/run`, id: "run-all", title: "Propagate the references of every group" }, "Run all groups");
  const runNote = h("span", { class: "small muted", id: "run-note" });

  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, project.name),
        h("p", { class: "muted" }, `${plural(groups.length, "group")} · ${plural(totals.images, "image")} · ${plural(totals.refs, "reference")} · ${plural(totals.preds, "prediction")}${totals.stale ? ` (${totals.stale} stale)` : ""} · ${totals.flagged} flagged`)),
      h("div", { class: "row" },
        h("button", { class: "btn", id: "project-settings", title: "Model, checkpoint, image size, device, mask mode",
          onclick: () => editSettings(pid, ctx) }, "Settings…"),
        runNote, runAll)),
    qualityBar(pid, project, evaluation, ctx),
    h("div", { class: "toolbar" }, search, filter, count),
    body);

  const matches = (g) => {
    const q = search.value.trim().toLowerCase();
    if (q && ![groupTitle(g), groupColumns(g), g.label ?? g.key].some((t) => String(t).toLowerCase().includes(q))) return false;
    switch (filter.value) {
      case "needs-refs": return !conditioned(g);
      case "ready": return conditioned(g) && (framesDone(g) < g.images || g.stale > 0);
      case "flagged": return g.flagged > 0;
      case "done": return conditioned(g) && framesDone(g) >= g.images && !g.stale;
      default: return true;
    }
  };
  const draw = () => {
    const shown = groups.filter(matches);
    count.textContent = shown.length === groups.length ? plural(groups.length, "group") : `${shown.length} of ${groups.length} groups`;
    if (!groups.length) {
      body.replaceChildren(emptyState("No groups", "This project has no images; check its CSV and filter."));
    } else if (!shown.length) {
      body.replaceChildren(emptyState("No group matches", "Clear the search or choose another filter."));
    } else {
      body.replaceChildren(h("table", { class: "table groups-table" },
        h("thead", {}, h("tr", {}, h("th", {}, "Group"), h("th", { class: "num" }, "Images"), h("th", { class: "num" }, "References"),
          h("th", { class: "num" }, "Predicted"), h("th", { class: "num" }, "Flagged"), miouHeader(evaluation), h("th", {}, "Progress"), h("th", {}, ""))),
        h("tbody", {}, shown.map((g) => row(pid, g, evaluation)))));
    }
  };
  search.addEventListener("input", draw);
  filter.addEventListener("change", draw);
  draw();
  search.focus();
  // A run of this project is going: show it instead of offering a second one.
  return jobBlocking(pid, (jobs) => {
    const running = jobs.find((j) => j.kind === "run");
    runAll.classList.toggle("disabled", Boolean(running));
    runAll.setAttribute("aria-disabled", running ? "true" : "false");
    runAll.title = running ? "One run per project at a time" : "Propagate the references of every group";
    runNote.textContent = running ? `${running.title} is going (${running.done} / ${running.total}): Run all groups is off until it ends or is cancelled.` : "";
  });
}

/** Whether a run would predict the group: its own references, or the project's shared ones
 * (reference scope "all": `shared_refs` counts them). */
const conditioned = (g) => g.refs > 0 || g.shared_refs > 0;

function refsCell(g) {
  if (g.refs) return g.refs;
  if (g.shared_refs) {
    return h("span", { class: "badge", title: `No reference of its own: predicted from the project's ${plural(g.shared_refs, "reference")} (reference scope: all)` }, "shared");
  }
  return h("span", { class: "badge badge-warn", title: "Label at least one reference" }, "none");
}

function row(pid, g, evaluation) {
  const base = `#/p/${enc(pid)}`;
  const key = enc(g.key);
  return h("tr", { "data-group": g.key },
    h("td", {}, groupNameEl(g, "a", { href: `${base}/label/${key}`, class: "group-name" })),
    h("td", { class: "num" }, g.images),
    h("td", { class: "num" }, refsCell(g)),
    h("td", { class: "num" }, String(g.preds), g.stale ? " " : null, g.stale ? h("span", { class: "badge badge-stale", title: "Made before the newest reference it was predicted from: the next run of the group predicts them again" }, `${g.stale} stale`) : null),
    h("td", { class: "num" }, g.flagged ? h("span", { class: "badge badge-flag" }, g.flagged) : "0"),
    miouCell(evaluation, g.key),
    h("td", { class: "progress-cell" }, progressBar(framesDone(g), g.images)),
    h("td", { class: "actions" },
      h("a", { class: g.refs ? "btn btn-small" : "btn btn-small btn-primary", href: `${base}/label/${key}`, title: "Pick and label reference images" }, "Label"),
      h("a", { class: conditioned(g) && (framesDone(g) < g.images || g.stale > 0) ? "btn btn-small btn-primary" : "btn btn-small", href: `${base}/run/${key}`,
        title: g.refs ? "Propagate this group's references" : g.shared_refs ? "Propagate the project's shared references" : "Label a reference first" }, "Run"),
      h("a", { class: "btn btn-small", href: `${base}/view/${key}`, title: "See references and predictions" }, "View")));
}


/** The project settings dialog: SAM2 variant, checkpoint file, image size, device, mask mode, name. */
async function editSettings(pid, ctx) {
  const info = ctx.info || {};
  let current;
  try { current = await call("project_settings", pid); } catch (err) { showError(err); return; }
  const f = settingsForm(current, info);
  const saved = await dialog({
    title: "Project settings",
    body: f.body,
    buttons: [{ label: "Cancel", value: null },
      { label: "Save", class: "btn btn-primary", action: "save-settings",
        submit: async () => { f.clearErrors(); await call("update_project_settings", pid, f.values()); return true; },
        onError: (err) => f.showFieldError(err) }],
  });
  if (!saved) return;
  toast("Settings saved", "success");
  ctx.refresh();
}

function settingsForm(s, info) {
  const windowMode = info.mode === "window";
  const name = h("input", { type: "text", id: "s-name", value: s.name || "" });
  const variants = info.variants || [];
  const variant = h("select", { id: "s-variant" }, variants.map((v) => h("option", { value: v.name }, v.label || v.name)));
  if (!variants.some((v) => v.name === s.sam2)) variant.append(h("option", { value: s.sam2 }, s.sam2));
  variant.value = s.sam2;
  const checkpoint = h("input", { type: "text", id: "s-checkpoint", value: s.checkpoint || "", autocomplete: "off",
    placeholder: "empty: the variant's standard file in the models folder" });
  const choose = windowMode ? h("button", { class: "btn", type: "button", onclick: async () => {
    try {
      const picked = await call("pick_file", "checkpoint");
      if (picked && picked.path) checkpoint.value = picked.path;
    } catch (err) { showError(err); }
  } }, "Choose…") : null;
  const size = h("input", { type: "number", id: "s-image-size", min: 256, max: 2048, step: 32, value: s.image_size });
  const device = h("select", { id: "s-device" }, [...new Set([...(info.devices || ["auto", "cpu"]), s.device])].map((d) => h("option", { value: d }, d)));
  device.value = s.device;
  const mode = h("select", { id: "s-mask-mode" }, (info.mask_modes || ["original", "position", "binary"]).map((m) => h("option", { value: m }, m)));
  mode.value = s.mask_mode;
  const scope = h("select", { id: "s-reference-scope" },
    h("option", { value: "group" }, "group: each group's own references"),
    h("option", { value: "all" }, "all: every reference of the project"));
  scope.value = s.reference_scope || "group";
  const errors = {};
  const row = (label, control, hint, key) => {
    errors[key] = h("p", { class: "field-error", role: "alert", "data-error-for": key });
    return h("div", { class: "field" }, h("label", { for: control.id || null }, label), control,
      errors[key], hint ? h("p", { class: "hint" }, hint) : null);
  };
  const general = h("p", { class: "field-error", role: "alert", "data-error-for": "general" });
  const body = h("div", { class: "settings-form" },
    general,
    row("Name", name, null, "name"),
    row("SAM2 variant", variant, "Smaller variants are faster on a CPU; larger ones segment better.", "sam2"),
    row("Checkpoint file", h("div", { class: "row" }, checkpoint, choose), "A .pt file of the chosen variant; empty uses the models folder's copy (downloaded when missing).", "checkpoint"),
    row("Model image size", size, "1024 for released checkpoints; smaller is faster but coarser.", "image_size"),
    row("Device", device, null, "device"),
    row("Mask mode", mode, "Applies to the next run; existing predictions are kept (run with overwrite to redo them).", "mask_mode"),
    row("Reference scope", scope, "all (as SST-GUI): every group, also one without references, is predicted from every reference of the project. Each shared reference adds memory every image attends to, so time per image grows with their number; more than 64 are refused.", "reference_scope"),
    s.spec_path ? h("p", { class: "hint" }, "Saved in ", h("code", {}, s.spec_path)) : null);
  const values = () => ({
    name: name.value.trim(),
    sam2: variant.value,
    checkpoint: checkpoint.value.trim() || null,
    image_size: parseInt(size.value, 10) || s.image_size,
    device: device.value,
    mask_mode: mode.value,
    reference_scope: scope.value,
  });
  errors.general = general;
  const controls = { name, sam2: variant, checkpoint, image_size: size, device, mask_mode: mode, reference_scope: scope };
  const clear = (key) => { errors[key].textContent = ""; controls[key]?.removeAttribute("aria-invalid"); };
  const clearErrors = () => Object.keys(errors).forEach(clear);
  // An error sits next to the field it is about; editing that field (or any, for a general one)
  // clears it.
  for (const [key, control] of Object.entries(controls)) {
    // A checkpoint refused for the variant is fixed by either field.
    const onEdit = () => { clear(key); clear("general"); if (key === "sam2") clear("checkpoint"); };
    control.addEventListener("input", onEdit);
    control.addEventListener("change", onEdit);
  }
  const showFieldError = (err) => {
    const message = err && err.message ? err.message : String(err);
    const key = errorField(message);
    errors[key].textContent = message;
    if (controls[key]) {
      controls[key].setAttribute("aria-invalid", "true");
      controls[key].focus();
    }
  };
  return { body, values, clearErrors, showFieldError };
}

/** Which settings field a server message is about (its wording names it). */
function errorField(message) {
  const m = message.toLowerCase();
  if (/checkpoint|\.pt\b/.test(m)) return "checkpoint";
  if (/image.size|multiple of|pixels/.test(m)) return "image_size";
  if (/device|cuda|mps/.test(m)) return "device";
  if (/mask.mode/.test(m)) return "mask_mode";
  if (/reference.scope/.test(m)) return "reference_scope";
  if (/variant|sam ?2/.test(m)) return "sam2";
  if (/name/.test(m)) return "name";
  return "general";
}
