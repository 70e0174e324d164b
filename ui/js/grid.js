// Thumbnail grids of thousands of frames: tiles are built a page at a time as the grid's end nears
// the viewport, so opening a 5,000-image group builds (and fetches) only what is about to be seen.

import { withToken } from "./transport.js";
import { enc, h } from "./util.js";

export const GRID_PAGE = 60;

/**
 * A `.thumb-grid` of `makeTile(item, index)` tiles built lazily. Returns {el, items, built(),
 * replace(i, item), stop()}: `replace` rebuilds tile i only if it is built (later tiles read `items` when they are).
 */
export function lazyGrid(items, makeTile, { id = null, page = GRID_PAGE } = {}) {
  const grid = h("div", { class: "thumb-grid", id });
  const sentinel = h("div", { class: "grid-sentinel", "aria-hidden": "true" });
  let built = 0;
  const observer = new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) more();
  }, { root: document.getElementById("view"), rootMargin: "400px" }); // <main id="view"> scrolls, not the page

  function more() {
    const end = Math.min(items.length, built + page);
    const frag = document.createDocumentFragment();
    for (let i = built; i < end; i++) frag.append(makeTile(items[i], i));
    grid.append(frag);
    built = end;
    observer.unobserve(sentinel);
    if (built < items.length) observer.observe(sentinel); // re-observing reports it again if still in view
    else sentinel.remove();
  }

  more();
  return {
    el: h("div", { class: "grid-wrap" }, grid, sentinel),
    items,
    built: () => built,
    replace(i, item) {
      items[i] = item;
      if (i < built) grid.children[i].replaceWith(makeTile(item, i));
    },
    stop: () => observer.disconnect(),
  };
}

/** One frame's tile: its thumbnail, its mask (reference first) outlined on top, and badges. */
export function thumb(pid, groupKey, f, version = 0) {
  const mask = f.ref_url || f.pred_url;
  // A reference is never also shown as a prediction; a stale prediction says so.
  const kind = f.ref_url ? "reference" : f.pred_url ? (f.stale ? "stale" : "predicted") : "pending";
  return h("a", { class: `thumb thumb-${kind}`, href: `#/p/${enc(pid)}/view/${enc(groupKey)}/${enc(f.pk)}`, "data-pk": f.pk,
    title: `${f.pk} · ${kind}${f.flagged && f.flagged.length ? " · flagged: " + f.flagged.join(", ") : ""}` },
  h("div", { class: "thumb-img" },
    h("img", { src: withToken(f.thumb_url), alt: String(f.pk), loading: "lazy" }),
    // Thumbnail-sized and outlined: a full-size overlay per tile is heavy, and an ID coloured like
    // the specimen (orange on an orange butterfly) shows only by its edge.
    mask ? h("img", { class: "thumb-mask", src: withToken(`${colorUrl(mask, version)}&max=256&outline=1`), alt: "", loading: "lazy" }) : null),
  h("div", { class: "thumb-label" }, h("span", { class: "ellipsis" }, String(f.pk)),
    // The reason codes ("empty", "nearly_full", "missing_id"), not a bare "flag": they say what to check.
    f.flagged && f.flagged.length ? h("span", { class: "badge badge-flag" }, [...new Set(f.flagged.map((r) => String(r).split(" ")[0]))].join(", ")) : null,
    h("span", { class: `badge badge-${kind}`, title: kind === "stale" ? "Predicted before the group's newest reference: the next run predicts it again" : null },
      kind === "reference" ? "ref" : kind === "predicted" ? "pred" : kind === "stale" ? "stale" : "–")));
}

/** Mask URLs are served raw or coloured; overlays need the coloured version. */
export function colorUrl(url, version = 0) {
  if (!url) return url;
  let out = url;
  if (!/[?&]color=/.test(out)) out += (out.includes("?") ? "&" : "?") + "color=1";
  // Masks are rewritten in place; a version parameter keeps the browser from showing a stale copy.
  return version && !/[?&]v=/.test(out) ? `${out}&v=${version}` : out;
}
