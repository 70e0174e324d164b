// Label screen: pick reference frames, build each frame's objects from SAM2 candidates, refine
// clicks and a brush, correct predictions, save ref_masks/{pk}.png. All editing goes through the
// edit model (edit_model.js); the server proposes masks and writes files.

import { groupTitle } from "./group_name.js";
import { call, withToken } from "./transport.js";
import { CanvasView, MASK_MAX_SIDE, MaskBitmap, loadImage } from "./canvas_view.js";
import { EditModel, cropFromRuns } from "./edit_model.js";
import { LabelOverlay } from "./label_layers.js";
import { jobBlocking } from "./jobs_indicator.js";
import { candidateSettingsPanel } from "./candidate_settings.js";
import { CandidateFeed, CandidateProgress, candidatesFoundText } from "./candidate_stream.js";
import { dialog, emptyState, enc, h, idColor, plural, pollJob, progressBar, showError, textOn, toast } from "./util.js";
import { partNamesPanel } from "./part_names.js";

const MODES = {
  select: "Select (S): click a candidate to add it to the object; click an object to select or renumber it",
  refine: "Refine (R): click adds SAM's mask at that point to the object; Shift+click or right click removes it",
  brush: "Brush (B): paint the object; [ and ] change the size",
  erase: "Eraser (E): erase the selected object (every object when none is selected); [ and ] change the size",
};

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
    { label: `Label · ${groupTitle(group)}` }]);

  const storeKey = `sst.refs.${pid}.${groupKey}`;
  const S = {
    frames: [], // group_frames entries
    refs: [], // pks in the reference list
    pk: null,
    frame: null, // open_frame result
    model: null, // EditModel of the open frame
    source: "none", // what the open frame's objects came from: "ref" | "pred" | "none"
    candidates: new Map(), // index -> candidate entry with .bitmap (display and hit test only)
    hover: null, // {kind: "object", id} | {kind: "candidate", index}
    mode: "select",
    brushSize: 12, // image pixels (radius)
    busy: false,
    showCandidates: true,
    loadSeq: 0,
    candidateJob: null,
    blocked: null, // reason candidates cannot start now (another job), or null
    pickedId: false, // the current ID was picked by the user (keys, swatches, field), not a default
    closed: false, // the screen was left: background follow-ups stop touching it
  };
  const overlayLayer = new LabelOverlay();
  const closing = new AbortController();

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
  const modeBtns = {
    select: btn("Select", MODES.select, () => setMode("select"), { id: "mode-select" }),
    refine: btn("Refine", MODES.refine, () => setMode("refine"), { id: "mode-refine" }),
    brush: btn("Brush", MODES.brush, () => setMode("brush"), { id: "mode-brush" }),
    erase: btn("Eraser", MODES.erase, () => setMode("erase"), { id: "mode-erase" }),
  };
  const sizeInput = h("input", { type: "range", id: "brush-size", min: 1, max: 200, value: S.brushSize,
    title: "Brush and eraser radius in image pixels ([ and ])", oninput: () => setBrushSize(Number(sizeInput.value)) });
  const sizeLabel = h("span", { class: "small muted", id: "brush-size-label" });
  const panBtn = btn("Pan", "Pan mode: drag moves the image (H); Space+drag or middle drag pans in any mode", () => togglePan(), { id: "mode-pan" });
  const fitBtn = btn("Fit", "Fit the image to the window (F)", () => view.fit());
  const undoBtn = btn("Undo", "Undo (Ctrl+Z)", () => edit(() => S.model.undo()), { id: "undo" });
  const redoBtn = btn("Redo", "Redo (Ctrl+Shift+Z)", () => edit(() => S.model.redo()), { id: "redo" });
  const prevBtn = btn("‹", "Previous reference (PageUp)", () => step(-1), { id: "prev-ref" });
  const nextBtn = btn("›", "Next reference (PageDown)", () => step(1), { id: "next-ref" });
  const discardBtn = btn("Discard", "Back to the saved state of this frame (undoable)", () => edit(() => S.model.discard()), { id: "discard" });
  const saveBtn = btn("Save", "Save this reference mask (Ctrl+S)", () => save(), { id: "save-ref", class: "btn btn-primary" });
  const unsaved = h("span", { class: "unsaved-state", id: "unsaved", role: "status" });
  const candToggle = h("input", { type: "checkbox", checked: true, id: "show-candidates",
    onchange: () => { S.showCandidates = candToggle.checked; S.outlines = null; view.redraw(); } });
  const banner = h("div", { class: "stage-banner hidden", id: "label-banner" });
  const status = h("div", { class: "status-line", id: "label-status" });
  const toolbar = h("div", { class: "toolbar stage-toolbar" },
    genBtn, h("span", { class: "sep" }), ...Object.values(modeBtns), sizeInput, sizeLabel, h("span", { class: "sep" }),
    panBtn, fitBtn, h("span", { class: "sep" }), undoBtn, redoBtn,
    h("label", { class: "check small", title: "Show the outlines of the candidate masks" }, candToggle, "candidates"),
    h("span", { class: "spacer" }), unsaved, prevBtn, nextBtn, discardBtn, saveBtn);

  const idInput = h("input", { type: "number", id: "current-id", min: 1, max: 255, value: 1, title: "Current object ID (1–255); keys 1–9 set it" });
  const newBtn = btn("New object", "Select none: the next edit starts a new object with the first free ID (Esc or N)", () => newObject(), { id: "new-object" });
  const swatches = h("div", { class: "swatches" });
  const partNames = partNamesPanel(pid, project.labels, (id) => setCurrentId(id));
  const objectList = h("ul", { class: "assigned", id: "objects" });
  const candidateSettings = candidateSettingsPanel(info, pid);
  const candProgress = new CandidateProgress(); // candidates stream in under it, clicks still work
  const right = h("aside", { class: "panel id-panel" },
    h("h3", {}, "Object ID"),
    swatches,
    h("div", { class: "field-row" }, h("label", { class: "field-inline" }, "ID", idInput), newBtn),
    partNames.el,
    h("h3", {}, "Objects"),
    objectList,
    candidateSettings.el,
    h("p", { class: "hint" }, "Each pixel belongs to one object; what you see is what Save writes."));

  root.append(side, h("section", { class: "stage-col" }, toolbar, banner, candProgress.el, stageBox, status), right);

  const view = new CanvasView(stageBox, { onClick, onHover, paint, onStroke });

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

  const frameInfo = (pk) => S.frames.find((f) => String(f.pk) === String(pk));
  const inRefs = (pk) => S.refs.some((r) => String(r) === String(pk));

  function drawRefList() {
    // A prediction being corrected is shown, but joins the list only once saved.
    const shown = S.pk !== null && !inRefs(S.pk) ? [...S.refs, S.pk] : S.refs;
    if (!shown.length) {
      refList.replaceChildren(h("li", { class: "muted small" }, "No references yet: sample N frames, or add one."));
      return;
    }
    refList.replaceChildren(...shown.map((pk, i) => {
      const f = frameInfo(pk) || {};
      const isSaved = Boolean(f.ref_url);
      const listed = inRefs(pk);
      const badge = isSaved ? h("span", { class: "badge badge-ok", title: "Reference mask saved" }, "saved")
        : !listed ? h("span", { class: "badge badge-predicted", title: "A prediction being corrected: Save makes it a reference" }, "prediction")
          : h("span", { class: "badge" }, "to do");
      return h("li", { class: String(pk) === String(S.pk) ? "current" : "", "data-pk": pk },
        h("button", { class: "ref-item", onclick: () => openRef(pk), title: `Open ${pk}` },
          f.thumb_url ? h("img", { src: withToken(f.thumb_url), alt: "", loading: "lazy" }) : h("span", { class: "thumb-ph" }),
          h("span", { class: "ref-name" }, h("span", { class: "ref-pk" }, h("span", { class: "muted small" }, listed ? `#${i + 1}` : "·"), " ", String(pk)), badge)),
        listed ? h("button", { class: "icon-btn", title: isSaved ? "Delete the saved reference mask and remove from the list" : "Remove from the list",
          onclick: () => removeRef(pk) }, "×") : null);
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
    const pk = frameInfo(addSelect.value)?.pk ?? addSelect.value;
    addSelect.value = "";
    if (pk === "") return;
    if (!inRefs(pk)) S.refs.push(pk);
    storeRefs();
    if (String(pk) === String(S.pk)) drawRefList();
    else openRef(pk);
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
    S.model = null;
    S.candidates = new Map();
    view.setImage(null, 1, 1);
    stageEmpty.replaceChildren(emptyState("Pick a reference frame",
      "Sample N frames on the left (the seed makes it reproducible), then generate candidates and click the masks of your objects."));
    stageEmpty.classList.remove("hidden");
    updateUi();
  }

  async function confirmLeave() {
    if (!S.model || !S.model.dirty) return true;
    const answer = await dialog({ title: "Save changes to this reference?",
      body: h("p", {}, `The changes to ${S.pk} are not saved yet. Discard returns it to its saved state; nothing is written.`),
      buttons: [{ label: "Cancel", value: "cancel" }, { label: "Discard", value: "discard", class: "btn btn-ghost danger", action: "discard" },
        { label: "Save", value: "save", class: "btn btn-primary", action: "save" }] });
    if (answer === "save") return save();
    if (answer === "discard") {
      S.model.discard();
      updateUi();
      return true;
    }
    return false;
  }

  async function openRef(pk, { force = false } = {}) {
    if (!force && !(await confirmLeave())) return;
    const seq = ++S.loadSeq;
    S.pk = pk;
    S.model = null;
    S.frame = null;
    S.candidates = new Map();
    S.hover = null;
    history.replaceState(null, "", `#/p/${enc(pid)}/label/${enc(groupKey)}/${enc(pk)}`);
    drawRefList();
    stageEmpty.classList.add("hidden");
    busy(true, "Loading image…");
    try {
      const [frame, labels] = await Promise.all([call("open_frame", pid, pk), call("frame_labels", pid, pk)]);
      const img = await loadImage(withToken(addMax(frame.image_url, 2048)));
      const cands = await loadCandidates(frame.masks || [], frame.width, frame.height);
      if (seq !== S.loadSeq) return;
      S.frame = frame;
      S.source = labels.source;
      S.predStale = Boolean(labels.stale);
      S.model = new EditModel({ width: frame.width, height: frame.height, labels: labels.runs });
      S.pickedId = false;
      S.candidates = new Map(cands.map((e) => [e.index, e]));
      setIdInput();
      view.setImage(img, frame.width, frame.height);
      reattachCandidates(pk);
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

  /** Candidate masks of the session (saved masks come from the ID map instead). */
  async function loadCandidates(list, width, height) {
    const out = [];
    const queue = list.filter((m) => m.source === "candidate");
    const worker = async () => {
      while (queue.length) {
        const m = queue.shift();
        try {
          // The canvas keeps candidates at <= 1024 px for outlines and hit tests.
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
    if (S.blocked) { toast(S.blocked, "info", 5000); return; }
    let jobId;
    try {
      ({ job_id: jobId } = await call("generate_candidates", pid, S.pk, candidateSettings.params(), []));
    } catch (err) { showError(err); return; }
    followCandidates(jobId, S.pk);
  }

  /** Show a candidates job of this frame (started here, or before a reload) until it ends. */
  async function followCandidates(jobId, pk) {
    let cancelling = false;
    S.candidateJob = jobId;
    updateUi();
    const feed = new CandidateFeed(pid, pk);
    const cancel = () => {
      if (cancelling) return;
      cancelling = true;
      candProgress.show({ done: 0, total: 0 }, null, "Cancelling…");
      call("cancel_job", jobId).catch(showError);
    };
    // Candidates found so far join the screen as they come (the server keeps them too).
    const streamIn = async () => {
      const u = await feed.poll();
      if (pk !== S.pk || !S.frame) return;
      for (const index of u.removed) S.candidates.delete(index);
      const cands = await loadCandidates(u.masks, S.frame.width, S.frame.height);
      if (pk !== S.pk) return;
      for (const e of cands) S.candidates.set(e.index, e);
      S.outlines = null;
      view.redraw();
      updateUi();
    };
    candProgress.show({ done: 0, total: 0, elapsed_s: 0 }, cancel, "Finding candidates: loading…");
    let shown = 0;
    try {
      const final = await pollJob(jobId, (s) => {
        if (pk !== S.pk || cancelling || S.closed) return;
        candProgress.show(s, cancel);
        if (s.done > shown) { shown = s.done; streamIn().catch((err) => console.warn(err)); }
      }, { signal: closing.signal });
      if (S.closed) return;
      if (final.state === "cancelled") {
        if (pk === S.pk) {
          await streamIn().catch(() => {});
          toast("Candidate generation cancelled.", "info", 2500);
        }
        return;
      }
      if (pk !== S.pk || !S.frame) return;
      const res = final.result;
      const list = Array.isArray(res) ? res : (res && res.masks) || [];
      const cands = await loadCandidates(list, S.frame.width, S.frame.height);
      if (pk !== S.pk) return;
      S.candidates = new Map(cands.map((e) => [e.index, e]));
      if (cands.length) toast(candidatesFoundText(cands.length), "info", 3000);
      else toast("No candidate masks passed the thresholds: lower them in Candidate settings, or press R and click the object.", "info", 8000);
    } catch (err) {
      showError(err);
    } finally {
      if (S.candidateJob === jobId) S.candidateJob = null;
      if (S.candidateJob === null) candProgress.hide();
      updateUi();
    }
  }

  async function reattachCandidates(pk) {
    try {
      const jobs = await call("list_jobs", pid);
      const job = jobs.find((j) => j.kind === "candidates" && String(j.pk) === String(pk));
      if (job && pk === S.pk && S.candidateJob !== job.id) followCandidates(job.id, pk);
    } catch (err) { console.warn(err); }
  }

  // ---------- editing ----------
  /** Apply an edit of the model and refresh the screen. */
  function edit(fn) {
    if (!S.model || S.busy) return false;
    const changed = fn();
    setIdInput();
    updateUi();
    return changed;
  }

  function candidateAt(x, y) {
    if (!S.frame || !S.showCandidates) return null;
    let best = null;
    for (const e of S.candidates.values()) {
      if (e.bitmap.contains(x, y, S.frame.width, S.frame.height) && (!best || e.area < best.area)) best = e;
    }
    return best;
  }

  function hitAt(x, y) {
    if (!S.model || !view.inside(x, y)) return null;
    const id = S.model.idAt(x, y);
    if (id) return { kind: "object", id };
    const cand = candidateAt(x, y);
    return cand ? { kind: "candidate", index: cand.index } : null;
  }

  function onHover(pt) {
    const hit = pt ? hitAt(pt[0], pt[1]) : null;
    if (JSON.stringify(hit) !== JSON.stringify(S.hover)) {
      S.hover = hit;
      view.redraw();
    }
    status.textContent = hit ? hoverText(hit) : statusText();
  }

  function hoverText(hit) {
    const m = S.model;
    if (hit.kind === "object") {
      const o = m.objects().find((x) => x.id === hit.id);
      const action = S.mode !== "select" ? "" : hit.id === m.selected ? " · selected"
        : renumbers(hit.id) ? ` · click: renumber to ID ${m.currentId}` : " · click: select";
      return `Object ${hit.id} · ${o ? o.area : 0} px${action}`;
    }
    const c = S.candidates.get(hit.index);
    return `Candidate ${hit.index} · ${c ? c.area : 0} px${c && c.predicted_iou ? ` · IoU ${c.predicted_iou.toFixed(2)}` : ""}` +
      (S.mode === "select" ? ` · click: add to object ${S.model.targetId}${S.model.selected === null ? " (new)" : ""}` : "");
  }

  /** What a click does now and how to start a new object. */
  function statusText() {
    const m = S.model;
    if (!m) return "Pick a reference frame on the left.";
    const how = S.mode === "select" ? "click a candidate" : S.mode === "refine" ? "click the object" : S.mode === "brush" ? "paint" : null;
    if (m.selected === null) {
      return `New object, ID ${m.currentId}: ${how ? `${how} to start it` : "pick Select, Refine or Brush to start it"}. ` +
        (S.pickedId && S.mode === "select" && m.objects().length ? `Click an object to renumber it to ${m.currentId}. ` : "") +
        "Keys 1–9 pick another ID; Ctrl+S saves.";
    }
    return `Object ${m.selected} selected: ${MODES[S.mode].split(": ")[1]}. Esc or N: new object. Del: delete it.`;
  }

  async function onClick([x, y], e, button) {
    if (!S.model || S.busy) return;
    if (S.mode === "refine") {
      if (view.inside(x, y)) refineClick(x, y, button === 2 || e.shiftKey);
      return;
    }
    if (button !== 0 || S.mode !== "select") return;
    const hit = hitAt(x, y);
    const m = S.model;
    if (!hit) {
      // A click that finds nothing to add says why, rather than doing nothing visible.
      if (view.inside(x, y) && !S.candidates.size) {
        toast("No candidate masks on this frame: press G to find them, or press R and click the object.", "info", 6000);
      }
      newObject();
      return;
    }
    if (hit.kind === "object") {
      if (renumbers(hit.id)) {
        const to = m.currentId;
        edit(() => m.renumber(hit.id, to));
        toast(`Object ${hit.id} is now ID ${to}.`, "info", 2500);
      } else {
        m.select(hit.id);
        setIdInput();
        updateUi();
      }
      return;
    }
    await addCandidate(hit.index);
  }

  /** A click on object `id` renumbers it when the user picked a free ID; otherwise it selects it. */
  function renumbers(id) {
    const m = S.model;
    return S.pickedId && m.selected === null && !m.has(m.currentId) && id !== m.currentId;
  }

  async function addCandidate(index) {
    const pk = S.pk;
    busy(true, "Adding the mask…");
    try {
      const crop = cropFromRuns(await call("mask_crop", pid, pk, index));
      if (pk !== S.pk) return;
      busy(false);
      if (!edit(() => S.model.addMask(crop))) toast("That mask lies under other objects only: nothing added (the brush paints over objects).", "info", 4000);
    } catch (err) {
      showError(err);
    } finally {
      if (pk === S.pk) busy(false);
      updateUi();
    }
  }

  async function refineClick(x, y, remove) {
    const pk = S.pk;
    if (remove && S.model.selected === null) {
      toast("Select an object first (click it in Select mode): a removing click takes pixels away from it.", "info", 4000);
      return;
    }
    busy(true, remove ? "Removing…" : "Refining…");
    try {
      const entry = await call("refine_mask", pid, pk, { points: [[Math.round(x), Math.round(y)]], labels: [1], box: null, base_index: null });
      const crop = cropFromRuns(await call("mask_crop", pid, pk, entry.index));
      if (pk !== S.pk) return;
      busy(false);
      edit(() => (remove ? S.model.removeMask(crop) : S.model.addMask(crop)));
    } catch (err) {
      showError(err);
    } finally {
      if (pk === S.pk) busy(false);
      updateUi();
    }
  }

  function onStroke(phase, [x, y]) {
    if (!S.model || S.busy) return;
    if (phase === "start") S.model.beginStroke({ erase: S.mode === "erase", radius: S.brushSize });
    if (phase !== "end") {
      if (S.model.strokeTo(x, y)) view.redraw();
      return;
    }
    edit(() => S.model.endStroke());
  }

  function setMode(mode) {
    S.mode = mode;
    view.panMode = false;
    view.strokeMode = mode === "brush" || mode === "erase";
    updateUi();
  }

  function togglePan() {
    view.panMode = !view.panMode;
    updateUi();
  }

  function setBrushSize(v) {
    S.brushSize = Math.max(1, Math.min(200, Math.round(v) || 1));
    sizeInput.value = S.brushSize;
    updateUi();
  }

  function setCurrentId(id) {
    if (!S.model) return;
    S.pickedId = true;
    S.model.setCurrentId(Math.max(1, Math.min(255, Math.round(id) || 1)));
    setIdInput();
    updateUi();
  }

  function newObject() {
    if (!S.model) return;
    S.pickedId = false;
    S.model.newObject();
    setIdInput();
    updateUi();
  }

  function setIdInput() {
    if (S.model) idInput.value = S.model.currentId;
  }
  idInput.addEventListener("change", () => setCurrentId(Number(idInput.value)));

  // ---------- save & navigation ----------
  async function save() {
    const m = S.model;
    if (!m) return false;
    if (!m.objects().length) {
      toast("Nothing to save: add at least one object (or delete the reference from the list).", "error");
      return false;
    }
    if (!m.dirty && S.source === "ref") {
      toast(`${S.pk} is saved already.`, "info", 2000);
      return true;
    }
    const pk = S.pk;
    const runs = m.runs();
    try {
      const res = await call("save_labels", pid, pk, { width: m.width, height: m.height, runs });
      if (m === S.model) {
        // What was sent is what is saved, even if an edit came in meanwhile.
        m.markSaved(runs);
        S.source = "ref";
      }
      if (!inRefs(pk)) { S.refs.push(pk); storeRefs(); }
      toast(`Saved ${pk} with ${plural(res.ids.length, "object")}` +
        (res.stale_predictions ? `; ${plural(res.stale_predictions, "prediction")} of this group are stale until the next run` : ""), "success", 4000);
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
    if (!S.frame || !S.model) return;
    const W = S.frame.width;
    const H = S.frame.height;
    g.imageSmoothingEnabled = false;
    if (S.showCandidates && S.candidates.size) {
      // Outlines of all candidates, composed once per change (hover redraws reuse it).
      if (!S.outlines) {
        const first = S.candidates.values().next().value;
        const c = document.createElement("canvas");
        c.width = first.bitmap.width;
        c.height = first.bitmap.height;
        const cg = c.getContext("2d");
        for (const e of S.candidates.values()) cg.drawImage(e.bitmap.layer("#ffffff", 0.0, 0.7), 0, 0, c.width, c.height);
        S.outlines = c;
      }
      g.drawImage(S.outlines, 0, 0, W, H);
    }
    g.drawImage(overlayLayer.update(S.model), 0, 0, W, H);
    const hover = S.hover;
    if (hover && hover.kind === "candidate" && S.candidates.has(hover.index)) {
      g.drawImage(S.candidates.get(hover.index).bitmap.layer(idColor(S.model.targetId), 0.35, 1), 0, 0, W, H);
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
    genBtn.disabled = on || !S.frame || Boolean(S.blocked);
  }

  function updateUi() {
    S.outlines = null;
    const m = S.model;
    const hasFrame = Boolean(m);
    for (const b of [...Object.values(modeBtns), panBtn, fitBtn]) b.disabled = !hasFrame;
    genBtn.disabled = S.busy || !hasFrame || Boolean(S.blocked) || Boolean(S.candidateJob);
    genBtn.title = S.blocked || "Let SAM2 propose masks for this image (G)";
    undoBtn.disabled = !m || !m.canUndo;
    redoBtn.disabled = !m || !m.canRedo;
    const dirty = Boolean(m && m.dirty);
    discardBtn.disabled = !dirty;
    const fromPred = S.source === "pred";
    saveBtn.disabled = !m || (!dirty && !fromPred);
    saveBtn.textContent = fromPred ? "Save as reference" : "Save";
    unsaved.textContent = !m ? "" : dirty ? "● Unsaved changes" : fromPred ? "Prediction: not a reference yet" : S.source === "ref" ? "Saved" : "Nothing labelled yet";
    unsaved.className = `unsaved-state${dirty ? " is-dirty" : ""}`;
    unsaved.dataset.dirty = String(dirty);
    banner.classList.toggle("hidden", !fromPred);
    if (fromPred) {
      banner.textContent = `Correcting the prediction of ${S.pk}${S.predStale ? " (stale: made before the group's newest reference)" : ""}: ` +
        "its IDs are editable objects. Save as reference writes ref_masks/ and this frame stops counting as a prediction.";
    }
    const i = S.refs.findIndex((r) => String(r) === String(S.pk));
    prevBtn.disabled = i <= 0;
    nextBtn.disabled = i < 0 || i >= S.refs.length - 1;
    for (const [mode, b] of Object.entries(modeBtns)) b.classList.toggle("active", S.mode === mode && !view.panMode);
    panBtn.classList.toggle("active", view.panMode);
    sizeInput.classList.toggle("hidden", S.mode !== "brush" && S.mode !== "erase");
    sizeLabel.textContent = S.mode === "brush" || S.mode === "erase" ? `${S.brushSize} px` : "";
    stageBox.dataset.mode = view.panMode ? "pan" : S.mode;
    stageBox.dataset.masks = String(S.candidates.size);
    stageBox.dataset.pk = S.pk ?? "";
    stageBox.dataset.objects = m ? m.objects().map((o) => o.id).join(",") : "";
    stageBox.dataset.selected = m && m.selected !== null ? String(m.selected) : "";
    stageBox.dataset.source = S.source;
    const current = m ? m.currentId : 1;
    const ids = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    if (current > 9) ids.push(current);
    partNames.update(current);
    swatches.replaceChildren(...ids.map((id) => h("button", {
      class: "swatch" + (id === current ? " active" : "") + (m && m.has(id) ? " used" : ""), style: { "--c": idColor(id), "--fg": textOn(idColor(id)) },
      title: m && m.has(id) ? `Select object ${id} (key ${id <= 9 ? id : "field"})` : `New object with ID ${id}`,
      onclick: () => setCurrentId(id), "data-id": id,
    }, String(id))));
    const objects = m ? m.objects() : [];
    objectList.replaceChildren(...(objects.length ? objects.map((o) => {
      const input = h("input", { type: "number", min: 1, max: 255, value: o.id, "aria-label": `ID of object ${o.id}`,
        onchange: (ev) => {
          const v = Math.max(1, Math.min(255, Math.round(Number(ev.target.value)) || 1));
          edit(() => m.renumber(o.id, v));
        } });
      return h("li", { class: o.id === m.selected ? "focused" : "", "data-id": o.id },
        h("span", { class: "dot", style: { background: idColor(o.id) } }), input,
        h("span", { class: "small muted" }, `${o.area} px`),
        h("button", { class: "icon-btn", title: "Select this object (edits apply to it)", onclick: () => { m.select(o.id); setIdInput(); updateUi(); } }, "◎"),
        h("button", { class: "icon-btn", title: "Delete this object", onclick: () => edit(() => m.deleteObject(o.id)) }, "×"));
    }) : [h("li", { class: "muted small" }, S.candidates.size ? "Click a candidate to start object 1." : "No objects yet: generate candidates, or press R and click an object.")]));
    status.textContent = statusText();
    view.redraw();
  }

  // ---------- jobs: candidates wait while another SAM2 job runs ----------
  const stopBlocking = jobBlocking(pid, (jobs) => {
    const other = jobs.find((j) => j.kind === "run" || (j.kind === "candidates" && j.id !== S.candidateJob));
    S.blocked = other ? `Candidates are off while ${other.title || other.kind} runs: wait, or cancel it in the job bar.` : null;
    if (!S.busy) genBtn.disabled = !S.frame || Boolean(S.blocked);
    genBtn.title = S.blocked || "Let SAM2 propose masks for this image (G)";
  });

  // ---------- keyboard ----------
  const onKey = (e) => {
    if (document.querySelector("dialog[open]")) return;
    const typing = /INPUT|TEXTAREA|SELECT/.test(e.target.tagName) && e.target.type !== "range";
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "z") { e.preventDefault(); edit(() => (e.shiftKey ? S.model.redo() : S.model.undo())); return; }
    if (mod && e.key.toLowerCase() === "y") { e.preventDefault(); edit(() => S.model.redo()); return; }
    if (mod && e.key.toLowerCase() === "s") { e.preventDefault(); save(); return; }
    if (typing || mod || e.altKey) return;
    if (e.key === " ") { view.spaceDown = true; stageBox.classList.add("space"); e.preventDefault(); return; }
    if (/^[1-9]$/.test(e.key)) { setCurrentId(Number(e.key)); return; }
    switch (e.key.toLowerCase()) {
      case "r": setMode("refine"); break;
      case "s": setMode("select"); break;
      case "b": setMode("brush"); break;
      case "e": setMode("erase"); break;
      case "[": setBrushSize(S.brushSize / 1.25); break;
      case "]": setBrushSize(S.brushSize * 1.25 + 1); break;
      case "h": togglePan(); break;
      case "f": view.fit(); break;
      case "g": generate(); break;
      case "n": case "escape": newObject(); break;
      case "delete": case "backspace":
        if (S.model && S.model.selected !== null) { const id = S.model.selected; edit(() => S.model.deleteObject(id)); }
        break;
      case "pageup": step(-1); break;
      case "pagedown": step(1); break;
      default: return;
    }
  };
  const onKeyUp = (e) => {
    if (e.key === " ") { view.spaceDown = false; stageBox.classList.remove("space"); }
  };
  const onBeforeUnload = (e) => { if (S.model && S.model.dirty) { e.preventDefault(); e.returnValue = ""; } };
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
    const f = frameInfo(start);
    // A frame opened directly (e.g. a prediction to correct) joins the list only when saved.
    if (f && f.ref_url && !inRefs(start)) { S.refs.push(f.pk); storeRefs(); }
    openRef(f?.pk ?? start, { force: true });
  } else {
    clearStage();
  }

  return () => {
    // A generation keeps running when the screen closes: the job bar shows it, with Cancel.
    S.closed = true;
    closing.abort();
    stopBlocking();
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
