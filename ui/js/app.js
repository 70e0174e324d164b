// Entry point: loads app_info, sets up the hash router and the shared chrome (breadcrumbs, help).

import { call, inWindow } from "./transport.js";
import { clear, clearErrorToasts, dialog, h, setPalette, showError } from "./util.js";
import { mountJobBar } from "./jobs_indicator.js";
import * as projects from "./screen_projects.js";
import * as newProject from "./screen_new.js";
import * as groups from "./screen_groups.js";
import * as label from "./screen_label.js";
import * as run from "./screen_run.js";
import * as viewer from "./screen_viewer.js";

const ROUTES = [
  [/^#?\/?(projects)?$/, projects, () => ({})],
  [/^#\/new$/, newProject, () => ({})],
  [/^#\/p\/([^/]+)$/, groups, (m) => ({ projectId: m[1] })],
  [/^#\/p\/([^/]+)\/label\/([^/]+)(?:\/([^/]+))?$/, label,
    (m) => ({ projectId: m[1], groupKey: m[2], pk: m[3] })],
  [/^#\/p\/([^/]+)\/run(?:\/([^/]+))?$/, run, (m) => ({ projectId: m[1], groupKey: m[2] })],
  [/^#\/p\/([^/]+)\/view\/([^/]+)(?:\/([^/]+))?$/, viewer,
    (m) => ({ projectId: m[1], groupKey: m[2], pk: m[3] })],
  [/^#\/view$/, viewer, () => ({ fromCli: true })],
];

export const ctx = {
  info: null,
  /** Set by a screen: async () => boolean, asked before the route changes. */
  leaveGuard: null,
  /** The project summary (list_projects entry) for an id, fetched fresh. */
  async project(projectId) {
    const list = await call("list_projects");
    const found = list.find((p) => String(p.id) === String(projectId));
    if (!found) throw new Error(`Project ${projectId} is not in the project list; open it from Projects.`);
    return found;
  },
  /** Render the current screen again (after a change made in a dialog). */
  refresh() {
    return route();
  },
  setCrumbs(items) {
    const nav = clear(document.getElementById("crumbs"));
    items.forEach((item, i) => {
      if (i) nav.append(h("span", { class: "crumb-sep", "aria-hidden": "true" }, "›"));
      nav.append(item.href ? h("a", { href: item.href }, item.label) : h("span", { class: "crumb-here" }, item.label));
    });
  },
};

let cleanup = null;
let renderSeq = 0;

function decodeParams(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) out[k] = v === undefined ? undefined : decodeURIComponent(v);
  return out;
}

async function route(event) {
  // A screen with unsaved work may keep the user (e.g. the labeller's "Save changes?").
  if (event && typeof ctx.leaveGuard === "function") {
    let ok = true;
    try { ok = await ctx.leaveGuard(); } catch (err) { showError(err); ok = false; }
    if (!ok) {
      history.replaceState(null, "", event.oldURL);
      return;
    }
  }
  ctx.leaveGuard = null;
  // An error said on the previous screen does not follow the user to the next one.
  if (event) clearErrorToasts();
  const seq = ++renderSeq;
  if (typeof cleanup === "function") {
    try { cleanup(); } catch (err) { console.error(err); }
  }
  cleanup = null;
  const hash = window.location.hash || "#/";
  const root = clear(document.getElementById("view"));
  root.className = "";
  for (const [pattern, screen, toParams] of ROUTES) {
    const m = hash.match(pattern);
    if (!m) continue;
    try {
      const result = await screen.render(root, decodeParams(toParams(m)), ctx);
      if (seq !== renderSeq) {
        if (typeof result === "function") result();
        return;
      }
      cleanup = result;
    } catch (err) {
      console.error(err);
      if (seq !== renderSeq) return;
      ctx.setCrumbs([{ label: "Projects", href: "#/" }]);
      root.className = "page";
      root.append(h("div", { class: "empty" }, h("h3", {}, "This screen could not open"),
        h("p", {}, err.message || String(err)), h("a", { class: "btn", href: "#/" }, "Back to projects")));
    }
    return;
  }
  window.location.hash = "#/";
}

function showHelp() {
  const rows = [
    ["Label", "1 – 9", "Pick an object ID: selects that object, or the next edit starts it"],
    ["Label", "Esc", "New object: select none, the first free ID becomes current"],
    ["Label", "N", "New object (as Esc)"],
    ["Label", "G", "Generate candidate masks"],
    ["Label", "S", "Select mode: a click adds the candidate under the pointer to the object; a click on an object selects it, or renumbers it to a free ID you picked"],
    ["Label", "R", "Refine mode: a click adds SAM's mask at that point to the object; Shift+click or right click removes it"],
    ["Label", "B / E", "Brush / eraser (drag); [ and ] change the size"],
    ["Label", "Delete / Backspace", "Delete the selected object"],
    ["Label", "Ctrl+Z / Ctrl+Shift+Z", "Undo / redo (every edit, Discard too)"],
    ["Label", "Ctrl+S", "Save the reference"],
    ["Label", "PageUp / PageDown", "Previous / next reference"],
    ["Label, Viewer", "Wheel", "Zoom at the pointer"],
    ["Label, Viewer", "Space+drag / middle drag", "Pan"],
    ["Label, Viewer", "H", "Pan mode on/off (drag pans)"],
    ["Label, Viewer", "F", "Fit the image"],
    ["Viewer", "← / →", "Previous / next image"],
    ["Viewer", "Esc", "Back to the grid"],
    ["Viewer", "M", "Switch between the prediction and the reference of this image"],
    ["Everywhere", "?", "This list"],
  ];
  dialog({
    title: "Keyboard shortcuts",
    body: h("table", { class: "table shortcuts" },
      h("tbody", {}, rows.map(([where, key, what]) =>
        h("tr", {}, h("td", { class: "muted" }, where), h("td", {}, h("kbd", {}, key)), h("td", {}, what))))),
    buttons: [{ label: "Close", value: null, class: "btn btn-primary" }],
  });
}

/** First launch: land in the sample project this launch created (asked once; later: the list). */
async function openStartupProject() {
  let projectId = null;
  try {
    projectId = (await call("startup_project")).project_id;
  } catch (err) {
    console.error(err); // the projects list is a fine start too
  }
  // replaceState: no hashchange (route() runs below) and Back does not return to an empty page.
  if (projectId && !window.location.hash) history.replaceState(null, "", `#/p/${encodeURIComponent(projectId)}`);
}

async function start() {
  document.getElementById("mode-badge").textContent = inWindow() ? "" : "browser";
  document.getElementById("help-button").addEventListener("click", showHelp);
  document.addEventListener("keydown", (e) => {
    if (e.key === "?" && !/INPUT|TEXTAREA|SELECT/.test(e.target.tagName) && !document.querySelector("dialog[open]")) showHelp();
  });
  window.addEventListener("unhandledrejection", (e) => showError(e.reason || "Unexpected error"));
  try {
    ctx.info = await call("app_info");
  } catch (err) {
    const root = clear(document.getElementById("view"));
    root.append(h("div", { class: "empty" }, h("h3", {}, "SST Desktop cannot reach its server"),
      h("p", {}, err.message), h("button", { class: "btn btn-primary", onclick: () => window.location.reload() }, "Retry")));
    return;
  }
  setPalette(ctx.info.palette);
  mountJobBar(document.getElementById("job-bar"));
  document.getElementById("mode-badge").textContent = ctx.info.mode === "browser" ? "browser" : "";
  if (Array.isArray(ctx.info.view) && ctx.info.view.length && !window.location.hash) {
    window.location.hash = "#/view";
  } else if (!window.location.hash) {
    await openStartupProject();
  }
  window.addEventListener("hashchange", route);
  route();
}

start();
