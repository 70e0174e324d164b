// Viewer: reference or predicted masks over their images; grid, single view, flags, "use as reference".

import { CanvasView, loadImage } from "./canvas_view.js";
import { colorUrl, lazyGrid, thumb } from "./grid.js";
import { call, withToken } from "./transport.js";
import { groupTitle } from "./group_name.js";
import { dialog, emptyState, enc, h, idColor, plural, showError, toast } from "./util.js";
import { imageIou, loadEvaluation } from "./quality.js";

export async function render(root, params, ctx) {
  root.className = "page viewer";
  const S = {
    pid: params.projectId ?? null,
    groupKey: params.groupKey ?? null,
    frames: [],
    current: null, // index into shown()
    source: "auto", // auto | pred | ref
    opacity: Number(localStorage.getItem("sst.opacity") || 0.55),
    flaggedOnly: false,
    panMode: false,
    version: Date.now(),
    grid: null, // the lazily built grid, while shown
    view: null, // the zoomable canvas of the single view, while shown
    shownPk: null, // the image in the single view
    names: {}, // part names by ID ("1": "left forewing"), from the project's labels
  };

  if (params.fromCli) {
    ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: "Viewer" }]);
    S.frames = await framesFromPaths(ctx.info.view || []);
  } else {
    const project = await ctx.project(S.pid);
    S.names = project.labels && typeof project.labels === "object" ? project.labels : {};
    const groups = await call("list_groups", S.pid);
    const group = groups.find((g) => String(g.key) === String(S.groupKey));
    if (!group) throw new Error(`Group ${S.groupKey} is not in project ${project.name}.`);
    ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: project.name, href: `#/p/${enc(S.pid)}` },
      { label: `Results · ${groupTitle(group)}` }]);
    S.frames = (await call("group_frames", S.pid, S.groupKey)).map((f) => ({ ...f, pid: S.pid, group: S.groupKey }));
    S.evaluation = project.ground_truth ? await loadEvaluation(S.pid) : null;
  }

  const sourceSel = h("select", { id: "view-source", "aria-label": "Mask shown", title: "Which mask to show (M switches)" },
    h("option", { value: "auto" }, "Reference, else prediction"), h("option", { value: "pred" }, "Predictions"),
    h("option", { value: "ref" }, "References"));
  const opacity = h("input", { type: "range", id: "view-opacity", min: 0, max: 1, step: 0.05, value: S.opacity, title: "Mask opacity" });
  const flagged = h("input", { type: "checkbox", id: "view-flagged" });
  const count = h("span", { class: "muted" });
  const body = h("div", { class: "viewer-body" });
  root.append(h("div", { class: "toolbar viewer-toolbar" },
    h("label", { class: "field-inline" }, "Show", sourceSel),
    h("label", { class: "field-inline", title: "Mask opacity" }, "Opacity", opacity),
    h("label", { class: "check", title: "Only predictions flagged for review (empty, nearly full, missing an ID)" }, flagged, "Flagged only"),
    count,
    h("span", { class: "spacer" }),
    !params.fromCli ? h("a", { class: "btn", href: `#/p/${enc(S.pid)}/run/${enc(S.groupKey)}` }, "Run") : null,
    !params.fromCli ? h("a", { class: "btn", href: `#/p/${enc(S.pid)}/label/${enc(S.groupKey)}` }, "Label") : null), body);
  document.documentElement.style.setProperty("--mask-opacity", S.opacity);

  const shown = () => S.frames.filter((f) => (!S.flaggedOnly || (f.flagged && f.flagged.length)) && maskOf(f));
  function maskOf(f) {
    if (S.source === "pred") return f.pred_url;
    if (S.source === "ref") return f.ref_url;
    return f.ref_url || f.pred_url;
  }

  function drawGrid() {
    stopGrid();
    S.current = null;
    const list = shown();
    count.textContent = `${list.length} of ${plural(S.frames.length, "image")}`;
    if (!list.length) {
      body.replaceChildren(emptyState(S.flaggedOnly ? "Nothing flagged" : "No masks to show",
        S.flaggedOnly ? "No prediction here was flagged for review." : "Label references and run propagation; results appear here."));
      return;
    }
    // Built a page at a time as the user scrolls: a group of thousands opens at once.
    S.grid = lazyGrid(list, (f, i) => {
      const el = thumb(f.pid, f.group, { ...f, ref_url: S.source === "pred" ? null : f.ref_url, pred_url: S.source === "ref" ? null : f.pred_url }, S.version);
      el.addEventListener("click", (e) => { e.preventDefault(); drawSingle(i); });
      return el;
    }, { id: "viewer-grid" });
    body.replaceChildren(S.grid.el);
  }

  function stopGrid() {
    if (S.grid) S.grid.stop();
    S.grid = null;
    stopView();
  }

  function stopView() {
    if (S.view) S.view.destroy();
    S.view = null;
    S.shownPk = null;
  }

  /** Which mask the single view shows for a frame: "pred", "ref" or null. */
  function kindOf(f) {
    const mask = maskOf(f);
    if (!mask) return null;
    return mask === f.pred_url && !(S.source !== "pred" && f.ref_url) ? "pred" : "ref";
  }

  /** M: the other mask of the image on screen (the same image, never a jump to another one). */
  function switchMask() {
    if (S.current === null) {
      // Grid: every press changes what the tiles show.
      const anyRef = S.frames.some((f) => f.ref_url);
      S.source = S.source === "auto" ? (anyRef ? "pred" : "ref") : S.source === "pred" ? "ref" : "pred";
      sourceSel.value = S.source;
      drawGrid();
      return;
    }
    const f = shown()[S.current];
    const target = kindOf(f) === "pred" ? "ref" : "pred";
    if (!(target === "ref" ? f.ref_url : f.pred_url)) {
      toast(`${f.pk} has no ${target === "ref" ? "reference" : "predicted"} mask`, "info", 2500);
      return;
    }
    S.source = target;
    sourceSel.value = S.source;
    drawSingle(shown().indexOf(f));
  }

  function drawSingle(i) {
    const list = shown();
    if (!list.length) return drawGrid();
    S.current = Math.max(0, Math.min(list.length - 1, i));
    const f = list[S.current];
    const mask = maskOf(f);
    const isPred = kindOf(f) === "pred";
    // The same image again (M, Use as reference): keep the zoom and pan.
    const keep = S.view && S.shownPk === f.pk ? { scale: S.view.scale, tx: S.view.tx, ty: S.view.ty, autoFit: S.view.autoFit } : null;
    if (S.grid) S.grid.stop();
    S.grid = null;
    stopView();
    if (!params.fromCli) history.replaceState(null, "", `#/p/${enc(S.pid)}/view/${enc(S.groupKey)}/${enc(f.pk)}`);
    count.textContent = `${S.current + 1} / ${list.length}`;
    const useRef = h("button", { class: "btn", id: "use-as-reference", disabled: !f.pred_url,
      title: "Make this prediction, as it is, a reference of its group (asks first)" }, "Use as reference…");
    useRef.addEventListener("click", async () => {
      const ok = await dialog({ title: `Use the prediction of ${f.pk} as a reference?`,
        body: h("div", {},
          h("p", {}, `Its masks are copied, unchanged, to ref_masks/${f.pk}.png: the next run of the group uses this frame as one of its references.`),
          h("p", {}, "The frame then counts as a reference, no longer as a prediction (its prediction file stays, unused). " +
            "The group's other predictions are marked stale until the group is run again."),
          h("p", { class: "muted" }, "To fix it first, choose Correct this prediction.")),
        buttons: [{ label: "Cancel", value: false }, { label: "Use as reference", value: true, class: "btn btn-primary", action: "confirm-use" }] });
      if (!ok) return;
      try {
        await call("use_as_reference", f.pid, f.pk);
        f.ref_url = `/mask/${enc(f.pid)}/ref/${enc(f.pk)}.png`;
        S.version = Date.now();
        toast(`${f.pk} is now a reference; run the group again to update its predictions.`, "success");
        drawSingle(S.current);
      } catch (err) { showError(err); }
    });
    const stage = h("div", { class: "single-stage stage", id: "viewer-stage" });
    // The coloured mask, decoded once and painted over the image by the canvas (kept in the DOM,
    // hidden, so what is drawn can be checked).
    const maskImg = mask ? h("img", { class: "single-mask", id: "single-mask", hidden: true,
      src: withToken(colorUrl(mask, S.version)), alt: "mask" }) : null;
    if (maskImg) stage.append(maskImg);
    const legend = h("ul", { class: "legend", id: "viewer-legend", "aria-label": "Object IDs in this mask" });
    const labelHref = f.group !== undefined && f.group !== null ? `#/p/${enc(f.pid)}/label/${enc(f.group)}/${enc(f.pk)}` : null;
    body.replaceChildren(h("div", { class: "single" },
      h("div", { class: "single-head" },
        h("button", { class: "btn", onclick: drawGrid, title: "Back to the grid (Esc)" }, "▦ Grid"),
        h("button", { class: "btn", onclick: () => drawSingle(S.current - 1), disabled: S.current === 0, title: "Previous (←)" }, "‹"),
        h("button", { class: "btn", onclick: () => drawSingle(S.current + 1), disabled: S.current === list.length - 1, title: "Next (→)" }, "›"),
        h("strong", { class: "single-title" }, String(f.pk)),
        h("span", { class: `badge badge-${isPred ? "predicted" : "reference"}` }, isPred ? "prediction" : "reference"),
        isPred && f.stale ? h("span", { class: "badge badge-stale", title: "Predicted before the group's newest reference: the next run predicts it again" }, "stale") : null,
        f.flagged && f.flagged.length ? h("span", { class: "badge badge-flag", title: "Flagged for review" }, f.flagged.join(", ")) : null,
        isPred ? imageIou(S.evaluation, f.pk) : null,
        h("span", { class: "spacer" }),
        labelHref && isPred ? h("a", { class: "btn btn-primary", id: "correct-prediction", href: labelHref,
          title: "Open the prediction in the labeller: its IDs are editable objects; save it as a reference" }, "Correct this prediction") : null,
        labelHref && !isPred ? h("a", { class: "btn", href: labelHref, title: "Open this image in the labeller" }, "Label this image") : null,
        isPred ? useRef : null),
      stage, legend));
    S.shownPk = f.pk;
    const view = new CanvasView(stage, {
      paint: (g, v) => {
        if (!maskImg || !maskImg.complete || !maskImg.naturalWidth) return;
        g.globalAlpha = S.opacity;
        g.imageSmoothingEnabled = false;
        g.drawImage(maskImg, 0, 0, v.iw, v.ih);
        g.globalAlpha = 1;
      },
    });
    S.view = view;
    view.panMode = S.panMode;
    stage.dataset.mode = S.panMode ? "pan" : "view";
    if (maskImg) maskImg.addEventListener("load", () => view.redraw());
    loadImage(withToken(f.image_url)).then((img) => {
      if (S.view !== view) return;
      view.setImage(img, img.naturalWidth, img.naturalHeight);
      if (keep) Object.assign(view, keep);
      view.redraw();
      stage.dataset.ready = "1";
    }, showError);
    if (mask) drawLegend(legend, mask, S.names);
  }

  sourceSel.addEventListener("change", () => {
    const f = S.current === null ? null : shown()[S.current];
    S.source = sourceSel.value;
    if (!f) return drawGrid();
    // Stay on the same image when it has the chosen mask; otherwise the nearest one that does.
    const list = shown();
    const same = list.indexOf(f);
    drawSingle(same >= 0 ? same : Math.min(S.current, list.length - 1));
  });
  opacity.addEventListener("input", () => {
    S.opacity = Number(opacity.value);
    if (S.view) S.view.redraw();
    document.documentElement.style.setProperty("--mask-opacity", S.opacity);
    try { localStorage.setItem("sst.opacity", String(S.opacity)); } catch (_) { /* storage disabled */ }
  });
  flagged.addEventListener("change", () => { S.flaggedOnly = flagged.checked; drawGrid(); });

  const onKey = (e) => {
    if (document.querySelector("dialog[open]") || /INPUT|TEXTAREA|SELECT/.test(e.target.tagName)) return;
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const d = e.key === "ArrowRight" ? 1 : -1;
      e.preventDefault();
      drawSingle(S.current === null ? 0 : S.current + d);
    } else if (e.key === "Escape" && S.current !== null) {
      drawGrid();
    } else if (e.key.toLowerCase() === "m" && !e.ctrlKey && !e.metaKey && !e.altKey) {
      switchMask();
    } else if (S.view && e.key.toLowerCase() === "f") {
      S.view.fit();
    } else if (S.view && e.key.toLowerCase() === "h") {
      S.panMode = !S.panMode;
      S.view.panMode = S.panMode;
      S.view.container.dataset.mode = S.panMode ? "pan" : "view";
    } else if (S.view && e.key === " ") {
      e.preventDefault();
      S.view.spaceDown = true;
      S.view.container.classList.add("space");
    }
  };
  const onKeyUp = (e) => {
    if (e.key === " " && S.view) { S.view.spaceDown = false; S.view.container.classList.remove("space"); }
  };
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", onKeyUp);

  const start = params.pk !== undefined ? shown().findIndex((f) => String(f.pk) === String(params.pk)) : -1;
  if (start >= 0) drawSingle(start);
  else if (params.fromCli && S.frames.length === 1) drawSingle(0);
  else drawGrid();

  return () => {
    stopGrid();
    document.removeEventListener("keydown", onKey);
    document.removeEventListener("keyup", onKeyUp);
    document.documentElement.style.removeProperty("--mask-opacity");
  };
}

/** Frames for `sst-desktop --view`: the backend resolves each mask path to its project, pk and kind. */
async function framesFromPaths(items) {
  const frames = [];
  const problems = [];
  for (const item of items) {
    if (!item || typeof item !== "object" || item.error || item.project_id === undefined) {
      problems.push(item && item.error ? item.error : `Cannot show ${JSON.stringify(item)}`);
      continue;
    }
    const pid = item.project_id;
    const pk = item.pk;
    const base = `${enc(pid)}`;
    const maskUrl = item.mask_url || `/mask/${base}/${item.kind}/${enc(pk)}.png?color=1`;
    frames.push({
      pid, pk, group: item.group_key ?? null, flagged: [],
      image_url: item.image_url || `/image/${base}/${enc(pk)}`,
      thumb_url: `/thumb/${base}/${enc(pk)}`,
      ref_url: item.kind === "ref" ? maskUrl : null,
      pred_url: item.kind === "ref" ? null : maskUrl,
    });
  }
  for (const p of problems.slice(0, 3)) showError(new Error(p));
  if (problems.length > 3) showError(new Error(`${plural(problems.length - 3, "more mask")} could not be shown.`));
  return frames;
}

/** The raw ID mask's URL (grey levels = IDs) for a coloured overlay URL. */
function rawMaskUrl(url) {
  return url.replace(/([?&])color=1(&|$)/, (_, a, b) => (b ? a : "")).replace(/[?&]$/, "");
}

/** IDs present in an ID mask PNG (read at up to 4 MP: tiny parts of huge masks may be missed). */
async function maskIds(url) {
  const img = await loadImage(withToken(rawMaskUrl(url)));
  const scale = Math.min(1, Math.sqrt(4e6 / (img.naturalWidth * img.naturalHeight)));
  const w = Math.max(1, Math.round(img.naturalWidth * scale));
  const hgt = Math.max(1, Math.round(img.naturalHeight * scale));
  const canvas = document.createElement("canvas");
  canvas.width = w;
  canvas.height = hgt;
  const g = canvas.getContext("2d", { willReadFrequently: true });
  g.imageSmoothingEnabled = false;
  g.drawImage(img, 0, 0, w, hgt);
  const data = g.getImageData(0, 0, w, hgt).data;
  const seen = new Uint8Array(256);
  for (let p = 0; p < data.length; p += 4) seen[data[p]] = 1;
  const ids = [];
  for (let id = 1; id < 256; id++) if (seen[id]) ids.push(id);
  return ids;
}

/** The legend under the image: each ID's colour, number and part name (when the project names it). */
async function drawLegend(box, maskUrl, names) {
  let ids;
  try {
    ids = await maskIds(maskUrl);
  } catch (err) {
    console.warn(err);
    return;
  }
  box.replaceChildren(...(ids.length ? ids.map((id) => h("li", { "data-id": id },
    h("span", { class: "swatch", style: `background:${idColor(id)}` }),
    h("span", { class: "legend-id" }, `ID ${id}`),
    names[String(id)] ? h("span", { class: "legend-name" }, names[String(id)]) : null))
    : [h("li", { class: "muted small" }, "Empty mask: no object IDs.")]));
  box.dataset.ids = ids.join(",");
}
