// How a group reads to people: its values ("Danaus plexippus · dorsal"), the column names as
// secondary text ("Species · View"), instead of the code-like "Species=Danaus plexippus, View=dorsal".

import { h } from "./util.js";

/** The group's values joined by " · " (an empty value reads "none"); the label when it has none. */
export function groupTitle(g) {
  const values = g && g.values && typeof g.values === "object" ? Object.values(g.values) : [];
  if (!values.length) return String(g.label ?? g.key);
  return values.map((v) => (String(v ?? "").trim() ? String(v) : "none")).join(" · ");
}

/** The grouping columns, " · "-joined in the same order ("" for the single "all images" group). */
export function groupColumns(g) {
  return g && g.values && typeof g.values === "object" ? Object.keys(g.values).join(" · ") : "";
}

/** A title with the column names under it, small and muted (for tables and headings). */
export function groupNameEl(g, tag = "span", attrs = {}) {
  const columns = groupColumns(g);
  return h(tag, { ...attrs, title: String(g.label ?? g.key) },
    h("span", { class: "group-values" }, groupTitle(g)),
    columns ? h("span", { class: "group-columns muted small" }, columns) : null);
}
