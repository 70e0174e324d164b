// Part names beside the label screen's ID buttons: shows and edits the project's `labels`
// ({"1": "left forewing"}), saved in its spec.json. Kept apart from the label screen itself.

import { call } from "./transport.js";
import { h, idColor, textOn, toast } from "./util.js";

/** The name of a part ID in a labels map, or "" when unnamed. */
export function partName(labels, id) {
  return (labels && labels[String(id)]) || "";
}

/**
 * A panel with one row per ID (1–9, every named ID and the current one): its colour, its name
 * field and a button that makes it the current ID. `onPick(id)` sets the current ID.
 * Returns { el, update(currentId) }; names are saved when a field loses focus or on Enter.
 */
export function partNamesPanel(pid, labels, onPick) {
  const names = { ...(labels || {}) };
  const list = h("div", { class: "part-names", id: "part-names" });
  let current = 1;
  // A refused name stays in its field (also across redraws), with the reason under the list.
  const drafts = {};
  const problem = h("p", { class: "field-error", id: "part-names-error", role: "alert" });
  const save = async (id, input) => {
    const value = input.value.trim();
    if (value === partName(names, id)) {
      delete drafts[id];
      input.removeAttribute("aria-invalid");
      if (!Object.keys(drafts).length) problem.textContent = "";
      return;
    }
    const next = { ...names, [String(id)]: value };
    if (!value) delete next[String(id)];
    try {
      const saved = await call("set_part_names", pid, next);
      for (const k of Object.keys(names)) delete names[k];
      Object.assign(names, saved);
      delete drafts[id];
      input.removeAttribute("aria-invalid");
      if (!Object.keys(drafts).length) problem.textContent = "";
      toast(value ? `ID ${id} is now “${value}”` : `ID ${id} has no name`, "success", 2000);
    } catch (err) {
      drafts[id] = input.value;
      input.setAttribute("aria-invalid", "true");
      problem.textContent = err && err.message ? err.message : String(err);
    }
  };
  const draw = () => {
    const ids = new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, ...Object.keys(names).map(Number), current]);
    list.replaceChildren(...[...ids].sort((a, b) => a - b).map((id) => {
      const input = h("input", { type: "text", value: drafts[id] ?? partName(names, id), placeholder: "name this part",
        "aria-label": `Name of ID ${id}`, "data-id": id, maxlength: 80 });
      if (id in drafts) input.setAttribute("aria-invalid", "true");
      input.addEventListener("change", () => save(id, input));
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") input.blur(); e.stopPropagation(); });
      return h("div", { class: "part-row" + (id === current ? " active" : "") },
        h("button", { class: "part-id", style: { "--c": idColor(id), "--fg": textOn(idColor(id)) }, title: `Use ID ${id}`, onclick: () => onPick(id) }, String(id)),
        input);
    }));
  };
  draw();
  return {
    el: h("details", { class: "part-names-box", open: Object.keys(names).length > 0 }, h("summary", {}, "Part names"), list, problem),
    names,
    update(id) {
      if (id === current && list.childElementCount) return;
      current = id;
      if (!list.contains(document.activeElement)) draw();
    },
  };
}
