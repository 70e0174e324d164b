// Label screen: sample reference frames, generate SAM2 candidates, pick and number masks, refine, save.

import { call, withToken } from "./transport.js";
import { CanvasView, MASK_MAX_SIDE, MaskBitmap, loadImage } from "./canvas_view.js";
import { dialog, emptyState, enc, h, idColor, plural, pollJob, progressBar, showError, toast } from "./util.js";

const HINT = "Click a mask to give it the current ID; click again to clear it. R: refine. Wheel: zoom. Space+drag: pan.";

export async function render(root, params, ctx) {
  const pid = params.projectId;
  const groupKey = params.groupKey;
  const info = ctx.info;
  root.className = "label-screen";
  const project = await ctx.project(pid);
  const groups = await call("list_groups", pid);
  const group = groups.find((g) => String(g.key) === String(groupKey));
  if (!group) throw new Error(`Group ${groupKey} is not in project ${project.name}; pick one from its group list.`);
  ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: project.name, href: `#/p/${enc(pid)}` },
    { label: `Label · ${group.label ?? group.key}` }]);

  const storeKey = `sst.refs.${pid}.${groupKey}`;
  const S = {
    frames: [], // group_frames entries
    refs: [], // pks in the reference list
    pk: null,
    frame: null, // open_frame result
    masks: new Map(), // index -> entry (with .bitmap)
    ids: new Map(), // index -> object id
    focus: null, // index of the last selected mask
    hover: null,
    currentId: 1,
    mode: "select", // select | refine
    refine: null, // {points, labels, baseIndex, resultIndex}
    undo: [],
    redo: [],
    dirty: false,
    busy: false,
    showCandidates: true,
    loadSeq: 0,
    candidateJob: null, // id of the running candidates job (cancelled when the screen closes)
    dropped: new Set(), // mask indices the server discarded (replaced candidates): undo skips them
  };

  // ---------- layout ----------
  const nInput = h("input", { type: "number", id: "sample-n", min: 1, value: 2, title: "How many reference frames to sample" });
  const seedInput = h("input", { type: "number", id: "sample-seed", min: 0, value: 0, title: "Random seed: the same seed gives the same frames" });
  const sampleBtn = h("button", { class: "btn btn-primary", id: "sample-refs", title: "Pick reference frames at random (reproducible with the seed)" }, "Sample");
  const addSelect = h("select", { id: "add-ref", "aria-label": "Add a frame as reference" });
  const refList = h("ol", { class: "ref-list", id: "ref-list" });
  const side = h("aside", { class: "panel ref-panel" },
    h("h3", {}, "References"),
    h("div", { class: "sample-row" }, h("label", {}, "N", nInput), h("label", {}, "seed", seedInput), sampleBtn),
    addSelect, refList);

  const stageBox = h("div", { class: "stage", id: "stage" });
  const overlay = h("div", { class: "stage-overlay hidden" });
  const stageEmpty = h("div", { class: "stage-empty" });
  stageBox.append(stageEmpty, overlay);

  const btn = (label, title, onclick, attrs = {}) => h("button", { class: "btn", title, onclick, ...attrs }, label);
  const genBtn = btn("Generate candidates", "Let SAM2 propose masks for this image (G)", () => generate(), { id: "generate", class: "btn btn-primary" });
  const selectBtn = btn("Select", "Select mode: click masks to number them (S)", () => setMode("select"), { id: "mode-select" });
  const refineBtn = btn("Refine", "Refine mode: click adds to the focused mask, Shift+click or right click removes (R)", () => setMode("refine"), { id: "mode-refine" });
  const panBtn = btn("Pan", "Pan mode: drag moves the image (H); Space+drag or middle drag pans in any mode", () => togglePan(), { id: "mode-pan" });
  const fitBtn = btn("Fit", "Fit the image to the window (F)", () => view.fit());
  const undoBtn = btn("Undo", "Undo (Ctrl+Z)", () => undo(), { id: "undo" });
  const redoBtn = btn("Redo", "Redo (Ctrl+Shift+Z)", () => redo(), { id: "redo" });
  const prevBtn = btn("‹", "Previous reference (PageUp)", () => step(-1), { id: "prev-ref" });
  const nextBtn = btn("›", "Next reference (PageDown)", () => step(1), { id: "next-ref" });
  const saveBtn = btn("Save", "Save this reference mask (Ctrl+S)", () => save(), { id: "save-ref", class: "btn btn-primary" });
  const candToggle = h("input", { type: "checkbox", checked: true, id: "show-candidates",
    onchange: () => { S.showCandidates = candToggle.checked; view.redraw(); } });
  const status = h("div", { class: "status-line", id: "label-status" }, HINT);
  const toolbar = h("div", { class: "toolbar stage-toolbar" },
    genBtn, h("span", { class: "sep" }), selectBtn, refineBtn, panBtn, fitBtn, h("span", { class: "sep" }), undoBtn, redoBtn,
    h("label", { class: "check small", title: "Show the outlines of masks without an ID" }, candToggle, "outlines"),
    h("span", { class: "spacer" }), prevBtn, nextBtn, saveBtn);

  const idInput = h("input", { type: "number", id: "current-id", min: 1, max: 255, value: 1, title: "Current object ID (1–255); keys 1–9 set it" });
  const swatches = h("div", { class: "swatches" });
  const assigned = h("ul", { class: "assigned", id: "assigned" });
  // Candidate settings: the backend's defaults, overridden by what this user tuned last time.
  const candParams = { ...(info.candidate_defaults || {}) };
  try {
    const saved = JSON.parse(localStorage.getItem("sst.candParams") || "{}");
    for (const [k, v] of Object.entries(saved)) if (k in candParams && typeof v === typeof candParams[k]) candParams[k] = v;
  } catch (_) { /* storage disabled or corrupt: defaults */ }
  const storeParams = () => {
    try { localStorage.setItem("sst.candParams", JSON.stringify(candParams)); } catch (_) { /* storage disabled */ }
  };
  const paramsBox = h("details", { class: "cand-params", id: "cand-params" }, h("summary", {}, "Candidate settings"),
    ...Object.entries(candParams).filter(([, v]) => typeof v === "number" || typeof v === "boolean").map(([k, v]) => {
      const input = typeof v === "boolean"
        ? h("input", { type: "checkbox", checked: v, "data-param": k, onchange: (e) => { candParams[k] = e.target.checked; storeParams(); } })
        : h("input", { type: "number", value: v, step: Number.isInteger(v) ? 1 : 0.01, "data-param": k,
          onchange: (e) => { candParams[k] = Number(e.target.value); storeParams(); } });
      return h("label", { class: "param" }, h("span", {}, k.replace(/_/g, " ")), input);
    }));
  const right = h("aside", { class: "panel id-panel" },
    h("h3", {}, "Object ID"),
    swatches,
    h("label", { class: "field-inline" }, "ID", idInput),
    h("h3", {}, "Labelled masks"),
    assigned,
    paramsBox,
    h("p", { class: "hint" }, "Later (smaller) masks paint over larger ones when saved."));

  root.append(side, h("section", { class: "stage-col" }, toolbar, stageBox, status), right);

  const view = new CanvasView(stageBox, { onClick, onHover, paint });

  // ---------- reference list ----------
  async function loadFrames() {
    S.frames = await call("group_frames", pid, groupKey);
    const saved = S.frames.filter((f) => f.ref_url).map((f) => f.pk);
    let stored = [];
    try { stored = JSON.parse(localStorage.getItem(storeKey) || "[]"); } catch (_) { stored = []; }
    const known = new Set(S.frames.map((f) => String(f.pk)));
    S.refs = [...new Set([...stored.filter((pk) => known.has(String(pk))), ...saved])];
    addSelect.replaceChildren(h("option", { value: "" }, "+ Add a frame as reference…"),
      ...S.frames.map((f) => h("option", { value: f.pk }, String(f.pk))));
  }

  function frameInfo(pk) {
    return S.frames.find((f) => String(f.pk) === String(pk));
  }

  function drawRefList() {
    if (!S.refs.length) {
      refList.replaceChildren(h("li", { class: "muted small" }, "No references yet: sample N frames, or add one."));
      return;
    }
    refList.replaceChildren(...S.refs.map((pk, i) => {
      const f = frameInfo(pk) || {};
      const isSaved = Boolean(f.ref_url);
      return h("li", { class: String(pk) === String(S.pk) ? "current" : "", "data-pk": pk },
        h("button", { class: "ref-item", onclick: () => openRef(pk), title: `Open ${pk}` },
          f.thumb_url ? h("img", { src: withToken(f.thumb_url), alt: "", loading: "lazy" }) : h("span", { class: "thumb-ph" }),
          // Key on its own line, status under it: the 250 px panel cut "DP_0004" to "DP_00…" beside the badge.
          h("span", { class: "ref-name" }, h("span", { class: "ref-pk" }, h("span", { class: "muted small" }, `#${i + 1}`), " ", String(pk)),
            isSaved ? h("span", { class: "badge badge-ok", title: "Reference mask saved" }, "saved") : h("span", { class: "badge" }, "to do"))),
        h("button", { class: "icon-btn", title: isSaved ? "Delete the saved reference mask and remove from the list" : "Remove from the list",
          onclick: () => removeRef(pk) }, "×"));
    }));
  }

  function storeRefs() {
    try { localStorage.setItem(storeKey, JSON.stringify(S.refs)); } catch (_) { /* storage disabled */ }
  }

  sampleBtn.addEventListener("click", async () => {
    const n = parseInt(nInput.value, 10) || 1;
    const seed = parseInt(seedInput.value, 10) || 0;
    try {
      const { pks } = await call("sample_references", pid, groupKey, n, seed);
      const saved = S.frames.filter((f) => f.ref_url).map((f) => f.pk);
      S.refs = [...new Set([...pks, ...saved])];
      storeRefs();
      drawRefList();
      toast(`Sampled ${plural(pks.length, "reference frame")}`, "info", 2500);
      if (pks.length && !S.pk) openRef(pks[0]);
    } catch (err) { showError(err); }
  });
  addSelect.addEventListener("change", () => {
    const pk = addSelect.value;
    addSelect.value = "";
    if (!pk) return;
    if (!S.refs.map(String).includes(String(pk))) S.refs.push(frameInfo(pk)?.pk ?? pk);
    storeRefs();
    openRef(frameInfo(pk)?.pk ?? pk);
  });

  async function removeRef(pk) {
    const f = frameInfo(pk);
    if (f && f.ref_url) {
      const ok = await dialog({ title: `Delete the reference of ${pk}?`,
        body: h("p", {}, "Its saved mask in ref_masks/ is deleted. Predictions made from it stay until the next run."),
        buttons: [{ label: "Cancel", value: false }, { label: "Delete", value: true, class: "btn btn-danger" }] });
      if (!ok) return;
      try { await call("delete_reference", pid, pk); } catch (err) { showError(err); return; }
      await loadFrames();
    }
    S.refs = S.refs.filter((r) => String(r) !== String(pk));
    storeRefs();
    drawRefList();
    if (String(S.pk) === String(pk)) {
      if (S.refs.length) openRef(S.refs[0], { force: true });
      else clearStage();
    }
  }

  // ---------- frame ----------
  function clearStage() {
    S.pk = null;
    S.frame = null;
    S.masks = new Map();
    S.ids = new Map();
    view.setImage(null, 1, 1);
    stageEmpty.replaceChildren(emptyState("Pick a reference frame",
      "Sample N frames on the left (the seed makes it reproducible), then generate candidates and click the masks of your objects."));
    stageEmpty.classList.remove("hidden");
    updateUi();
  }

  async function confirmLeave() {
    if (!S.dirty) return true;
    const answer = await dialog({ title: "Save changes to this reference?",
      body: h("p", {}, `The IDs on ${S.pk} are not saved yet.`),
      buttons: [{ label: "Cancel", value: "cancel" }, { label: "Discard", value: "discard", class: "btn btn-ghost danger" },
        { label: "Save", value: "save", class: "btn btn-primary" }] });
    if (answer === "save") return save();
    return answer === "discard";
  }

  async function openRef(pk, { force = false } = {}) {
    if (!force && !(await confirmLeave())) return;
    const seq = ++S.loadSeq;
    S.pk = pk;
    S.dirty = false;
    S.undo = [];
    S.redo = [];
    S.dropped = new Set();
    S.refine = null;
    S.focus = null;
    history.replaceState(null, "", `#/p/${enc(pid)}/label/${enc(groupKey)}/${enc(pk)}`);
    drawRefList();
    stageEmpty.classList.add("hidden");
    busy(true, "Loading image…");
    try {
      const frame = await call("open_frame", pid, pk);
      const img = await loadImage(withToken(addMax(frame.image_url, 2048)));
      const entries = await loadMasks(frame.masks || [], frame.width, frame.height);
      if (seq !== S.loadSeq) return;
      S.frame = frame;
      S.masks = new Map(entries.map((e) => [e.index, e]));
      S.ids = new Map(entries.filter((e) => e.id !== null && e.id !== undefined).map((e) => [e.index, e.id]));
      view.setImage(img, frame.width, frame.height);
    } catch (err) {
      if (seq === S.loadSeq) {
        showError(err);
        stageEmpty.replaceChildren(emptyState("This frame could not be opened", err.message));
        stageEmpty.classList.remove("hidden");
      }
    } finally {
      if (seq === S.loadSeq) busy(false);
      updateUi();
    }
  }

  async function loadMasks(list, width, height) {
    const out = [];
    // A few parallel loads: fast enough, and the page stays responsive.
    const queue = [...list];
    const worker = async () => {
      while (queue.length) {
        const m = queue.shift();
        try {
          // The canvas keeps masks at <= 1024 px: fetch them that size, not full resolution.
          const bitmap = await MaskBitmap.fromUrl(withToken(addMax(m.url, MASK_MAX_SIDE)), width, height);
          out.push({ ...m, bitmap });
        } catch (err) {
          console.warn(err);
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    out.sort((a, b) => b.area - a.area);
    return out;
  }

  // ---------- candidates ----------
  async function generate() {
    if (!S.frame || S.busy) return;
    const pk = S.pk;
    let jobId = null;
    let cancelling = false;
    // Generation can take minutes on a CPU: it must be stoppable from the overlay.
    const cancel = () => {
      if (!jobId || cancelling) return;
      cancelling = true;
      busy(true, "Cancelling…");
      call("cancel_job", jobId).catch(showError);
    };
    busy(true, "Generating candidate masks…", 0, 1, cancel);
    try {
      // Labelled (not yet saved) masks must survive the regeneration on the server too.
      ({ job_id: jobId } = await call("generate_candidates", pid, pk, candParams, [...S.ids.keys()]));
      S.candidateJob = jobId;
      // Progress of this frame's job only: another opened frame must not get its overlay.
      const final = await pollJob(jobId, (s) => {
        if (pk === S.pk && !cancelling) busy(true, s.message || "Generating candidate masks…", s.done, s.total, cancel);
      });
      if (final.state === "cancelled") {
        if (pk === S.pk) toast("Candidate generation cancelled.", "info", 2500);
        return;
      }
      if (pk !== S.pk) return;
      const res = final.result;
      const list = Array.isArray(res) ? res : (res && res.masks) || [];
      const entries = await loadMasks(list, S.frame.width, S.frame.height);
      if (pk !== S.pk) return;
      pushUndo();
      const oldIds = S.ids;
      const oldMasks = S.masks;
      S.masks = new Map(entries.map((e) => [e.index, e]));
      // The server replaced the unlabelled candidates: an undo must not bring them back, as
      // saving one would fail ("no longer exists").
      for (const index of oldMasks.keys()) if (!S.masks.has(index)) S.dropped.add(index);
      S.ids = new Map();
      for (const e of entries) {
        // Indices are never reused within a session: a surviving index is the same mask.
        if (oldMasks.has(e.index) && oldIds.has(e.index)) S.ids.set(e.index, oldIds.get(e.index));
        else if (e.id !== null && e.id !== undefined) S.ids.set(e.index, e.id);
      }
      S.dirty = S.dirty || oldIds.size > 0;
      if (entries.length) toast(`${plural(entries.length, "candidate mask")}: click the ones to label`, "info", 3000);
      else toast("No candidate masks passed the thresholds: lower them in Candidate settings, or press R and click the object to segment it.", "info", 8000);
    } catch (err) {
      showError(err);
    } finally {
      if (S.candidateJob === jobId) S.candidateJob = null;
      if (pk === S.pk) busy(false);
      updateUi();
    }
  }

  // ---------- interaction ----------
  function hitTest(x, y) {
    if (!S.frame || !view.inside(x, y)) return null;
    let best = null;
    for (const e of S.masks.values()) {
      if (!S.showCandidates && !S.ids.has(e.index)) continue;
      if (e.bitmap.contains(x, y, S.frame.width, S.frame.height) && (!best || e.area < best.area)) best = e;
    }
    return best;
  }

  function onHover(pt) {
    const hit = pt ? hitTest(pt[0], pt[1]) : null;
    const idx = hit ? hit.index : null;
    if (idx !== S.hover) {
      S.hover = idx;
      view.redraw();
    }
    if (hit) {
      const id = S.ids.get(hit.index);
      status.textContent = `Mask ${hit.index} · ${hit.area} px${hit.predicted_iou ? ` · IoU ${hit.predicted_iou.toFixed(2)}` : ""}` +
        (id ? ` · ID ${id}` : " · no ID") + (S.mode === "refine" ? " · refine mode" : "");
    } else {
      status.textContent = S.mode === "refine" ? "Refine: click adds to the mask, Shift+click or right click removes; Enter finishes." : HINT;
    }
  }

  function onClick([x, y], e, button) {
    if (!S.frame || S.busy) return;
    if (S.mode === "refine") {
      if (!view.inside(x, y)) return;
      refineClick(x, y, button === 2 || e.shiftKey ? 0 : 1);
      return;
    }
    if (button !== 0) return;
    const hit = hitTest(x, y);
    if (!hit) return;
    pushUndo();
    // Refresh the status line after the change below.
    setTimeout(() => onHover([x, y]), 0);
    if (S.ids.has(hit.index)) {
      S.ids.delete(hit.index);
      if (S.focus === hit.index) S.focus = null;
    } else {
      S.ids.set(hit.index, S.currentId);
      S.focus = hit.index;
    }
    S.dirty = true;
    updateUi();
  }

  async function refineClick(x, y, label) {
    const r = S.refine || { points: [], labels: [], baseIndex: S.focus, resultIndex: null };
    const points = [...r.points, [Math.round(x), Math.round(y)]];
    const labels = [...r.labels, label];
    busy(true, "Refining…");
    try {
      const entry = await call("refine_mask", pid, S.pk, { points, labels, box: null, base_index: r.baseIndex });
      const [full] = await loadMasks([entry], S.frame.width, S.frame.height);
      if (!full) throw new Error("The refined mask could not be loaded.");
      pushUndo();
      const id = S.ids.get(r.resultIndex) ?? S.ids.get(r.baseIndex) ?? S.currentId;
      if (r.resultIndex !== null && r.resultIndex !== full.index && r.resultIndex !== r.baseIndex) {
        S.masks.delete(r.resultIndex);
        S.ids.delete(r.resultIndex);
      }
      // The refined mask takes over the base mask's ID.
      if (r.baseIndex !== null && r.baseIndex !== full.index) S.ids.delete(r.baseIndex);
      S.masks.set(full.index, full);
      S.ids.set(full.index, id);
      S.focus = full.index;
      S.refine = { points, labels, baseIndex: r.baseIndex, resultIndex: full.index };
      S.dirty = true;
    } catch (err) {
      showError(err);
    } finally {
      busy(false);
      updateUi();
    }
  }

  function setMode(mode) {
    S.mode = mode;
    if (mode !== "refine") S.refine = null;
    view.panMode = false;
    updateUi();
  }

  function togglePan() {
    view.panMode = !view.panMode;
    updateUi();
  }

  function setCurrentId(id) {
    const v = Math.max(1, Math.min(255, Math.round(id) || 1));
    S.currentId = v;
    idInput.value = v;
    updateUi();
  }
  idInput.addEventListener("change", () => setCurrentId(Number(idInput.value)));

  // ---------- undo ----------
  function snapshot() {
    return { masks: new Map(S.masks), ids: new Map(S.ids), focus: S.focus, refine: S.refine, dirty: S.dirty };
  }
  function restore(s) {
    const live = (index) => !S.dropped.has(index);
    S.masks = new Map([...s.masks].filter(([index]) => live(index)));
    S.ids = new Map([...s.ids].filter(([index]) => live(index)));
    S.focus = live(s.focus) ? s.focus : null;
    S.refine = s.refine && (s.refine.baseIndex === null || live(s.refine.baseIndex)) ? s.refine : null;
    S.dirty = true;
  }
  function pushUndo() {
    S.undo.push(snapshot());
    if (S.undo.length > 100) S.undo.shift();
    S.redo = [];
  }
  function undo() {
    if (!S.undo.length || S.busy) return;
    S.redo.push(snapshot());
    restore(S.undo.pop());
    updateUi();
  }
  function redo() {
    if (!S.redo.length || S.busy) return;
    S.undo.push(snapshot());
    restore(S.redo.pop());
    updateUi();
  }

  // ---------- save & navigation ----------
  async function save() {
    if (!S.frame) return false;
    // Larger masks first, so smaller (usually finer) masks paint over them.
    const assignments = [...S.ids.entries()]
      .map(([index, id]) => ({ index, id, area: S.masks.get(index)?.area ?? 0 }))
      .sort((a, b) => b.area - a.area)
      .map(({ index, id }) => ({ index, id }));
    if (!assignments.length) {
      toast("Nothing to save: click at least one mask to give it an ID.", "error");
      return false;
    }
    try {
      const res = await call("save_reference", pid, S.pk, assignments);
      S.dirty = false;
      toast(`Saved ${S.pk} with ${plural(res.ids ? res.ids.length : assignments.length, "object")}`, "success", 2500);
      await loadFrames();
      drawRefList();
      updateUi();
      return true;
    } catch (err) {
      showError(err);
      return false;
    }
  }

  function step(delta) {
    const i = S.refs.findIndex((r) => String(r) === String(S.pk));
    const next = S.refs[i + delta];
    if (next !== undefined) openRef(next);
  }

  // ---------- drawing ----------
  function paint(g) {
    if (!S.frame) return;
    const W = S.frame.width;
    const H = S.frame.height;
    g.imageSmoothingEnabled = false;
    const byArea = [...S.masks.values()].sort((a, b) => b.area - a.area);
    if (S.showCandidates) {
      // The outlines of all unlabelled masks, composed once per change (hover redraws reuse it).
      if (!S.outlines) {
        const first = byArea[0];
        const c = document.createElement("canvas");
        c.width = first ? first.bitmap.width : 1;
        c.height = first ? first.bitmap.height : 1;
        const cg = c.getContext("2d");
        for (const e of byArea) {
          if (!S.ids.has(e.index)) cg.drawImage(e.bitmap.layer("#ffffff", 0.0, 0.85), 0, 0, c.width, c.height);
        }
        S.outlines = c;
      }
      g.drawImage(S.outlines, 0, 0, W, H);
    }
    for (const e of byArea) {
      if (!S.ids.has(e.index)) continue;
      const focused = e.index === S.focus;
      g.drawImage(e.bitmap.layer(idColor(S.ids.get(e.index)), focused ? 0.6 : 0.5, 1), 0, 0, W, H);
    }
    if (S.hover !== null && S.masks.has(S.hover)) {
      const e = S.masks.get(S.hover);
      const color = S.ids.has(e.index) ? idColor(S.ids.get(e.index)) : idColor(S.currentId);
      g.drawImage(e.bitmap.layer(color, S.ids.has(e.index) ? 0.7 : 0.35, 1), 0, 0, W, H);
    }
    if (S.refine) {
      const r = 6 / view.scale;
      S.refine.points.forEach(([x, y], i) => {
        const pos = S.refine.labels[i] === 1;
        g.beginPath();
        g.arc(x + 0.5, y + 0.5, r, 0, Math.PI * 2);
        g.fillStyle = pos ? "#16a34a" : "#dc2626";
        g.fill();
        g.lineWidth = 2 / view.scale;
        g.strokeStyle = "#fff";
        g.stroke();
        g.beginPath();
        g.moveTo(x + 0.5 - r * 0.5, y + 0.5);
        g.lineTo(x + 0.5 + r * 0.5, y + 0.5);
        if (pos) {
          g.moveTo(x + 0.5, y + 0.5 - r * 0.5);
          g.lineTo(x + 0.5, y + 0.5 + r * 0.5);
        }
        g.stroke();
      });
    }
  }

  function busy(on, message = "", done = 0, total = 0, onCancel = null) {
    S.busy = on;
    overlay.classList.toggle("hidden", !on);
    if (on) {
      overlay.replaceChildren(h("div", { class: "overlay-card" }, h("div", { class: "spinner" }), h("p", {}, message),
        total ? progressBar(done, total) : null,
        onCancel ? h("button", { class: "btn", id: "cancel-job", onclick: onCancel }, "Cancel") : null));
    }
    genBtn.disabled = on || !S.frame;
  }

  function updateUi() {
    S.outlines = null; // masks or IDs may have changed
    const hasFrame = Boolean(S.frame);
    for (const b of [selectBtn, refineBtn, panBtn, fitBtn, saveBtn]) b.disabled = !hasFrame;
    genBtn.disabled = S.busy || !hasFrame;
    undoBtn.disabled = !S.undo.length;
    redoBtn.disabled = !S.redo.length;
    const i = S.refs.findIndex((r) => String(r) === String(S.pk));
    prevBtn.disabled = i <= 0;
    nextBtn.disabled = i < 0 || i >= S.refs.length - 1;
    selectBtn.classList.toggle("active", S.mode === "select" && !view.panMode);
    refineBtn.classList.toggle("active", S.mode === "refine" && !view.panMode);
    panBtn.classList.toggle("active", view.panMode);
    stageBox.dataset.mode = view.panMode ? "pan" : S.mode;
    stageBox.dataset.masks = String(S.masks.size);
    stageBox.dataset.pk = S.pk ?? "";
    saveBtn.textContent = S.dirty ? "Save •" : "Save";
    genBtn.textContent = S.masks.size ? "Regenerate" : "Generate candidates";
    // ID swatches 1–9 plus the current one when larger.
    const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    if (S.currentId > 9) ids.push(S.currentId);
    swatches.replaceChildren(...ids.map((id) => h("button", {
      class: "swatch" + (id === S.currentId ? " active" : ""), style: { "--c": idColor(id) },
      title: `Use ID ${id} (key ${id <= 9 ? id : "field"})`, onclick: () => setCurrentId(id), "data-id": id,
    }, String(id))));
    const rows = [...S.ids.entries()].sort((a, b) => a[1] - b[1] || a[0] - b[0]);
    assigned.replaceChildren(...(rows.length ? rows.map(([index, id]) => {
      const e = S.masks.get(index);
      const input = h("input", { type: "number", min: 1, max: 255, value: id, "aria-label": `ID of mask ${index}`,
        onchange: (ev) => {
          const v = Math.max(1, Math.min(255, Math.round(Number(ev.target.value)) || 1));
          pushUndo();
          S.ids.set(index, v);
          S.dirty = true;
          updateUi();
        } });
      return h("li", { class: index === S.focus ? "focused" : "", "data-index": index },
        h("span", { class: "dot", style: { background: idColor(id) } }), input,
        h("span", { class: "small muted" }, `${e ? e.area : "?"} px${e && e.source !== "candidate" ? ` · ${e.source}` : ""}`),
        h("button", { class: "icon-btn", title: "Focus this mask (refine applies to it)", onclick: () => { S.focus = index; updateUi(); } }, "◎"),
        h("button", { class: "icon-btn", title: "Clear its ID", onclick: () => { pushUndo(); S.ids.delete(index); S.dirty = true; updateUi(); } }, "×"));
    }) : [h("li", { class: "muted small" }, S.masks.size ? "Click a mask to label it." : "No masks yet: generate candidates, or press R and click an object.")]));
    view.redraw();
  }

  // ---------- keyboard ----------
  const onKey = (e) => {
    if (document.querySelector("dialog[open]")) return;
    const typing = /INPUT|TEXTAREA|SELECT/.test(e.target.tagName);
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") { e.preventDefault(); if (e.shiftKey) redo(); else undo(); return; }
    if (mod && e.key.toLowerCase() === "y") { e.preventDefault(); redo(); return; }
    if (mod && e.key.toLowerCase() === "s") { e.preventDefault(); save(); return; }
    if (typing || mod || e.altKey) return;
    if (e.key === " ") { view.spaceDown = true; stageBox.classList.add("space"); e.preventDefault(); return; }
    if (/^[1-9]$/.test(e.key)) { setCurrentId(Number(e.key)); return; }
    switch (e.key.toLowerCase()) {
      case "r": setMode(S.mode === "refine" ? "select" : "refine"); break;
      case "s": setMode("select"); break;
      case "h": togglePan(); break;
      case "f": view.fit(); break;
      case "g": generate(); break;
      case "enter": if (S.refine) { S.refine = null; updateUi(); } break;
      case "escape": if (S.refine || S.mode === "refine") setMode("select"); else { S.focus = null; updateUi(); } break;
      case "delete": case "backspace":
        if (S.focus !== null && S.ids.has(S.focus)) { pushUndo(); S.ids.delete(S.focus); S.dirty = true; updateUi(); }
        break;
      case "pageup": step(-1); break;
      case "pagedown": step(1); break;
      default: return;
    }
  };
  const onKeyUp = (e) => {
    if (e.key === " ") { view.spaceDown = false; stageBox.classList.remove("space"); }
  };
  const onBeforeUnload = (e) => { if (S.dirty) { e.preventDefault(); e.returnValue = ""; } };
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", onKeyUp);
  ctx.leaveGuard = confirmLeave;
  window.addEventListener("beforeunload", onBeforeUnload);

  // ---------- start ----------
  await loadFrames();
  drawRefList();
  updateUi();
  const start = params.pk ?? S.refs[0];
  if (start !== undefined) {
    if (!S.refs.map(String).includes(String(start))) { S.refs.push(start); storeRefs(); }
    openRef(frameInfo(start)?.pk ?? start, { force: true });
  } else {
    clearStage();
  }

  return () => {
    // Leaving the screen stops its candidate job: it would hold up runs for nothing.
    if (S.candidateJob) call("cancel_job", S.candidateJob).catch(() => {});
    document.removeEventListener("keydown", onKey);
    document.removeEventListener("keyup", onKeyUp);
    window.removeEventListener("beforeunload", onBeforeUnload);
    view.destroy();
  };
}

function addMax(url, max) {
  if (!url || /[?&]max=/.test(url)) return url;
  return url + (url.includes("?") ? "&" : "?") + "max=" + max;
}
