// How a group reads to people: its values ("Danaus plexippus · dorsal"), the column names as
// secondary text ("Species · View"), instead of the code-like "Species=Danaus plexippus, View=dorsal".

import { h } from "./util.js";

/** The group's values joined by " · " (an empty value reads "(empty)", as in the label, so it is
 * never confused with a value "none"); the label when it has none. */
export function groupTitle(g) {
  const values = g && g.values && typeof g.values === "object" ? Object.values(g.values) : [];
  if (!values.length) return String(g.label ?? g.key);
  const shown = (v) => {
    const text = String(v ?? "");
    if (!text) return "(empty)";
    return text.trim() ? text : JSON.stringify(text); // blanks only: quoted, as in the label
  };
  return values.map(shown).join(" · ");
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
