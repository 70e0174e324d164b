// Projects screen: every known project with its progress; open, delete, create.

import { call } from "./transport.js";
import { dialog, emptyState, enc, framesDone, h, predText, progressBar, showError, toast } from "./util.js";

export async function render(root, _params, ctx) {
  ctx.setCrumbs([{ label: "Projects" }]);
  root.className = "page";
  const list = h("div", { class: "project-list" }, h("div", { class: "spinner" }));
  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Projects"),
        h("p", { class: "muted" }, "Each project is a CSV of images grouped for labelling and propagation.")),
      h("a", { class: "btn btn-primary", href: "#/new", id: "new-project", title: "Create a project from a CSV" }, "+ New project")),
    list);
  await refresh(list);
}

async function refresh(list) {
  let projects;
  try {
    projects = await call("list_projects");
  } catch (err) {
    showError(err);
    list.replaceChildren(emptyState("Projects could not be listed", err.message));
    return;
  }
  if (!projects.length) {
    list.replaceChildren(emptyState("No projects yet",
      "Create one from a CSV with one row per image: a unique key column and an image path column.",
      h("a", { class: "btn btn-primary", href: "#/new" }, "Create your first project")));
    return;
  }
  list.replaceChildren(...projects.map((p) => card(p, list)));
}

function card(p, list) {
  const images = p.images || 0;
  const done = framesDone(p);
  const open = h("a", { class: "btn btn-primary", href: `#/p/${enc(p.id)}`, title: "Open the project's groups" }, "Open");
  if (p.missing) open.classList.add("disabled");
  return h("article", { class: "card project-card", "data-project-id": p.id },
    h("div", { class: "project-main" },
      h("h2", {}, p.missing ? h("span", { class: "badge badge-warn", title: "The project's spec file is missing" }, "missing") : null, " ",
        // Newcomers click the name first: make it open the project too.
        p.missing ? p.name : h("a", { class: "project-name", href: `#/p/${enc(p.id)}`, title: "Open the project's groups" }, p.name)),
      h("p", { class: "muted path", title: p.spec_path || p.root }, p.root),
      h("div", { class: "stats" },
        stat(images, "images"), stat(p.groups ?? "–", "groups"), stat(p.refs || 0, "references"),
        stat(predText(p), "predictions")),
      progressBar(done, images),
      h("p", { class: "muted small" }, images ? `${Math.round((100 * done) / images)}% of images have a mask${p.stale ? ` (${p.stale} stale)` : ""} · ${nextStep(p)}` : "")),
    h("div", { class: "project-actions" },
      open,
      h("button", { class: "btn btn-ghost danger", title: "Remove from the list, optionally delete its files",
        onclick: () => confirmDelete(p, list) }, "Delete…")));
}

/** What to do next with a project, in a few words. */
function nextStep(p) {
  if (p.missing) return p.error || "its spec file is missing";
  if (!p.refs) return "next: label a reference image in each group";
  if (p.stale) return `next: run again (${p.stale} predictions are older than a new reference)`;
  if (framesDone(p) < p.images) return "next: run propagation";
  return "all images have masks: review them in the viewer";
}

function stat(value, label) {
  return h("div", { class: "stat" }, h("strong", {}, value), h("span", {}, label));
}

async function confirmDelete(p, list) {
  const checkbox = h("input", { type: "checkbox", id: "delete-files" });
  const answer = await dialog({
    title: `Delete “${p.name}”?`,
    body: h("div", {},
      h("p", {}, "The project is removed from this list. Your CSV and images are never touched."),
      h("label", { class: "check" }, checkbox,
        h("span", {}, "Also delete the project folder (spec, reference and predicted masks): ", h("code", {}, p.root)))),
    buttons: [
      { label: "Cancel", value: null, class: "btn" },
      { label: "Delete", value: () => ({ files: checkbox.checked }), class: "btn btn-danger", action: "confirm-delete" },
    ],
  });
  if (!answer) return;
  try {
    await call("delete_project", p.id, answer.files);
    toast(answer.files
      ? `Deleted project “${p.name}” and its folder ${p.root}.`
      : `Removed project “${p.name}” from the list; its folder stays at ${p.root}.`);
  } catch (err) {
    showError(err);
  }
  await refresh(list);
}
