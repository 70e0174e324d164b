// Thumbnail grids of thousands of frames: tiles are built a page at a time as the grid's end nears
// the viewport, so opening a 5,000-image group builds (and fetches) only what is about to be seen.

import { h } from "./util.js";

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
