// Groups screen: every group with its counts; search, filter, and the way into labelling, runs, results.

import { call } from "./transport.js";
import { emptyState, enc, h, plural, progressBar } from "./util.js";

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
  const search = h("input", { type: "search", id: "group-search", placeholder: "Search groups…", "aria-label": "Search groups" });
  const filter = h("select", { id: "group-filter", "aria-label": "Filter groups" }, FILTERS.map(([v, l]) => h("option", { value: v }, l)));
  const body = h("div", { class: "group-list" });
  const count = h("span", { class: "muted" });
  const totals = groups.reduce((t, g) => ({ images: t.images + g.images, refs: t.refs + g.refs, preds: t.preds + g.preds, flagged: t.flagged + (g.flagged || 0) }),
    { images: 0, refs: 0, preds: 0, flagged: 0 });

  root.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, project.name),
        h("p", { class: "muted" }, `${plural(groups.length, "group")} · ${plural(totals.images, "image")} · ${plural(totals.refs, "reference")} · ${plural(totals.preds, "prediction")} · ${totals.flagged} flagged`)),
      h("div", { class: "row" },
        h("a", { class: "btn btn-primary", href: `#/p/${enc(pid)}/run`, id: "run-all", title: "Propagate the references of every group" }, "Run all groups"))),
    h("div", { class: "toolbar" }, search, filter, count),
    body);

  const matches = (g) => {
    const q = search.value.trim().toLowerCase();
    if (q && !String(g.label ?? g.key).toLowerCase().includes(q)) return false;
    switch (filter.value) {
      case "needs-refs": return !g.refs;
      case "ready": return g.refs > 0 && g.refs + g.preds < g.images;
      case "flagged": return g.flagged > 0;
      case "done": return g.refs > 0 && g.refs + g.preds >= g.images;
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
          h("th", { class: "num" }, "Predicted"), h("th", { class: "num" }, "Flagged"), h("th", {}, "Progress"), h("th", {}, ""))),
        h("tbody", {}, shown.map((g) => row(pid, g)))));
    }
  };
  search.addEventListener("input", draw);
  filter.addEventListener("change", draw);
  draw();
  search.focus();
}

function row(pid, g) {
  const base = `#/p/${enc(pid)}`;
  const key = enc(g.key);
  return h("tr", { "data-group": g.key },
    h("td", {}, h("a", { href: `${base}/label/${key}`, class: "group-name" }, g.label ?? g.key)),
    h("td", { class: "num" }, g.images),
    h("td", { class: "num" }, g.refs ? g.refs : h("span", { class: "badge badge-warn", title: "Label at least one reference" }, "none")),
    h("td", { class: "num" }, g.preds),
    h("td", { class: "num" }, g.flagged ? h("span", { class: "badge badge-flag" }, g.flagged) : "0"),
    h("td", { class: "progress-cell" }, progressBar(g.refs + g.preds, g.images)),
    h("td", { class: "actions" },
      h("a", { class: g.refs ? "btn btn-small" : "btn btn-small btn-primary", href: `${base}/label/${key}`, title: "Pick and label reference images" }, "Label"),
      h("a", { class: g.refs && g.refs + g.preds < g.images ? "btn btn-small btn-primary" : "btn btn-small", href: `${base}/run/${key}`,
        title: g.refs ? "Propagate this group's references" : "Label a reference first" }, "Run"),
      h("a", { class: "btn btn-small", href: `${base}/view/${key}`, title: "See references and predictions" }, "View")));
}

