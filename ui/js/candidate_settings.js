// Candidate settings of a project: presets, plain-word names with one-line help, Reset.
// They are stored in the project (spec "candidates"); generation uses them on the server.
import { call } from "./transport.js";
import { h, showError } from "./util.js";

const PRESET_NAMES = { fast: "Fast", thorough: "Thorough" };

/** The settings box of the label screen; `params()` is null: the server uses the project's. */
export function candidateSettingsPanel(info, pid) {
  const body = h("div", { class: "cand-body" }, h("p", { class: "muted small" }, "Loading…"));
  const el = h("details", { class: "cand-params", id: "cand-params" }, h("summary", {}, "Candidate settings"), body);
  let state = null;

  /** Settings that differ from the chosen preset (what the project stores besides its name). */
  const changes = (s) => Object.fromEntries(Object.entries(s.values).filter(([k, v]) => s.presets[s.preset][k] !== v));

  async function apply(promise) {
    try { render(await promise); } catch (err) { showError(err); if (state) render(state); }
  }

  function input(key, value) {
    const set = (v) => apply(call("set_candidate_settings", pid, state.preset, { ...changes(state), [key]: v }));
    if (typeof value === "boolean") {
      return h("input", { type: "checkbox", checked: value, "data-param": key, onchange: (e) => set(e.target.checked) });
    }
    const whole = Number.isInteger(value) && !/thresh|offset/.test(key);
    return h("input", { type: "number", value, step: whole ? 1 : 0.01, "data-param": key,
      onchange: (e) => set(whole ? parseInt(e.target.value, 10) : Number(e.target.value)) });
  }

  function render(s) {
    state = s;
    const preset = h("select", { id: "cand-preset", "aria-label": "Preset",
      onchange: () => apply(call("set_candidate_settings", pid, preset.value, {})) },
    ...Object.keys(s.presets).map((name) => h("option", { value: name, selected: name === s.preset }, PRESET_NAMES[name] || name)));
    const reset = h("button", { class: "btn", id: "cand-reset", type: "button",
      title: `Back to the ${PRESET_NAMES[s.default_preset] || s.default_preset} preset, this computer's default`,
      onclick: () => apply(call("reset_candidate_settings", pid)) }, "Reset");
    const rows = Object.entries(s.help).map(([key, { label, help }]) => {
      const changed = s.presets[s.preset][key] !== s.values[key];
      return h("label", { class: "param" + (changed ? " changed" : ""), title: help, "data-setting": key },
        h("span", {}, label + (changed ? " *" : "")), input(key, s.values[key]),
        h("small", { class: "help muted" }, help));
    });
    body.replaceChildren(
      h("div", { class: "preset-row" }, h("label", {}, "Preset ", preset), reset),
      h("p", { class: "hint" }, "Saved with this project. Fast suits a computer without a GPU; * marks a change from the preset."),
      ...rows);
  }

  call("candidate_settings", pid).then(render, (err) => {
    body.replaceChildren(h("p", { class: "muted small" }, String((err && err.message) || err)));
  });
  return { el, params: () => null, values: () => (state ? { ...state.values } : null) };
}
