// Viewer: reference or predicted masks over their images; grid, single view, flags, "use as reference".

import { lazyGrid } from "./grid.js";
import { call, withToken } from "./transport.js";
import { colorUrl, thumb } from "./screen_run.js";
import { emptyState, enc, h, plural, showError, toast } from "./util.js";

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
    version: Date.now(),
    grid: null, // the lazily built grid, while shown
  };

  if (params.fromCli) {
    ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: "Viewer" }]);
    S.frames = await framesFromPaths(ctx.info.view || []);
  } else {
    const project = await ctx.project(S.pid);
    const groups = await call("list_groups", S.pid);
    const group = groups.find((g) => String(g.key) === String(S.groupKey));
    if (!group) throw new Error(`Group ${S.groupKey} is not in project ${project.name}.`);
    ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: project.name, href: `#/p/${enc(S.pid)}` },
      { label: `Results · ${group.label ?? group.key}` }]);
    S.frames = (await call("group_frames", S.pid, S.groupKey)).map((f) => ({ ...f, pid: S.pid, group: S.groupKey }));
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
  }

  function drawSingle(i) {
    const list = shown();
    if (!list.length) return drawGrid();
    S.current = Math.max(0, Math.min(list.length - 1, i));
    const f = list[S.current];
    const mask = maskOf(f);
    const isPred = mask && mask === f.pred_url && !(S.source !== "pred" && f.ref_url);
    stopGrid();
    if (!params.fromCli) history.replaceState(null, "", `#/p/${enc(S.pid)}/view/${enc(S.groupKey)}/${enc(f.pk)}`);
    count.textContent = `${S.current + 1} / ${list.length}`;
    const useRef = h("button", { class: "btn btn-primary", id: "use-as-reference", disabled: !f.pred_url,
      title: "Copy this prediction to ref_masks/ so it conditions the next run (after correcting it)" }, "Use as reference");
    useRef.addEventListener("click", async () => {
      try {
        await call("use_as_reference", f.pid, f.pk);
        f.ref_url = `/mask/${enc(f.pid)}/ref/${enc(f.pk)}.png`;
        S.version = Date.now();
        toast(`${f.pk} is now a reference`, "success");
        drawSingle(S.current);
      } catch (err) { showError(err); }
    });
    body.replaceChildren(h("div", { class: "single" },
      h("div", { class: "single-head" },
        h("button", { class: "btn", onclick: drawGrid, title: "Back to the grid (Esc)" }, "▦ Grid"),
        h("button", { class: "btn", onclick: () => drawSingle(S.current - 1), disabled: S.current === 0, title: "Previous (←)" }, "‹"),
        h("button", { class: "btn", onclick: () => drawSingle(S.current + 1), disabled: S.current === list.length - 1, title: "Next (→)" }, "›"),
        h("strong", { class: "single-title" }, String(f.pk)),
        h("span", { class: `badge badge-${isPred ? "predicted" : "reference"}` }, isPred ? "prediction" : "reference"),
        f.flagged && f.flagged.length ? h("span", { class: "badge badge-flag", title: "Flagged for review" }, f.flagged.join(", ")) : null,
        h("span", { class: "spacer" }),
        f.group !== undefined && f.group !== null ? h("a", { class: "btn", href: `#/p/${enc(f.pid)}/label/${enc(f.group)}/${enc(f.pk)}`,
          title: "Open this image in the labeller" }, "Label this image") : null,
        isPred ? useRef : null),
      h("div", { class: "single-stage" },
        h("img", { class: "single-img", src: withToken(f.image_url), alt: String(f.pk) }),
        mask ? h("img", { class: "single-mask", id: "single-mask", src: withToken(colorUrl(mask, S.version)), alt: "mask" }) : null)));
  }

  sourceSel.addEventListener("change", () => { S.source = sourceSel.value; S.current === null ? drawGrid() : drawSingle(S.current); });
  opacity.addEventListener("input", () => {
    S.opacity = Number(opacity.value);
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
    } else if (e.key.toLowerCase() === "m") {
      S.source = S.source === "pred" ? "ref" : "pred";
      sourceSel.value = S.source;
      S.current === null ? drawGrid() : drawSingle(S.current);
    }
  };
  document.addEventListener("keydown", onKey);

  const start = params.pk !== undefined ? shown().findIndex((f) => String(f.pk) === String(params.pk)) : -1;
  if (start >= 0) drawSingle(start);
  else if (params.fromCli && S.frames.length === 1) drawSingle(0);
  else drawGrid();

  return () => {
    stopGrid();
    document.removeEventListener("keydown", onKey);
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
