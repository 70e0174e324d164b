// Drawing helpers of the label screen: the edit model's ID map as a coloured overlay.

import { hexToRgb, idColor } from "./util.js";

// The overlay is drawn at most this many pixels on its long side (the model keeps full size).
export const OVERLAY_MAX_SIDE = 2048;

/**
 * A canvas showing every object of `model` in its ID colour (the selected one stronger), with a
 * darker edge; nearest-pixel sampling of the full-size ID map. Cached on (version, selected).
 */
export class LabelOverlay {
  constructor() {
    this.canvas = document.createElement("canvas");
    this.key = null;
  }

  update(model) {
    const key = `${model.version}|${model.selected}|${model.width}x${model.height}`;
    if (key === this.key) return this.canvas;
    this.key = key;
    const { width: W, height: H, labels } = model;
    const scale = Math.min(1, OVERLAY_MAX_SIDE / Math.max(W, H));
    const w = Math.max(1, Math.round(W * scale));
    const hh = Math.max(1, Math.round(H * scale));
    this.canvas.width = w;
    this.canvas.height = hh;
    const g = this.canvas.getContext("2d");
    const out = g.createImageData(w, hh);
    const px = out.data;
    const colours = new Map();
    const colour = (id) => {
      let c = colours.get(id);
      if (!c) colours.set(id, (c = hexToRgb(idColor(id))));
      return c;
    };
    const sx = new Int32Array(w);
    for (let x = 0; x < w; x++) sx[x] = Math.min(W - 1, Math.floor(((x + 0.5) * W) / w));
    // Three sampled rows (above, this, below) rotate down the image.
    let prevRow = new Uint8Array(w);
    let row = new Uint8Array(w);
    let nextRow = new Uint8Array(w);
    const sample = (y, into) => {
      const base = Math.min(H - 1, Math.floor(((y + 0.5) * H) / hh)) * W;
      for (let x = 0; x < w; x++) into[x] = labels[base + sx[x]];
    };
    sample(0, row);
    for (let y = 0; y < hh; y++) {
      const hasNext = y + 1 < hh;
      if (hasNext) sample(y + 1, nextRow);
      for (let x = 0; x < w; x++) {
        const v = row[x];
        if (!v) continue;
        const edge = y === 0 || !hasNext || x === 0 || x === w - 1 ||
          prevRow[x] !== v || nextRow[x] !== v || row[x - 1] !== v || row[x + 1] !== v;
        const [r, gg, b] = colour(v);
        const p = (y * w + x) * 4;
        const selected = v === model.selected;
        px[p] = edge ? (selected ? 255 : r * 0.6) : r;
        px[p + 1] = edge ? (selected ? 255 : gg * 0.6) : gg;
        px[p + 2] = edge ? (selected ? 255 : b * 0.6) : b;
        px[p + 3] = edge ? 255 : selected ? 165 : 120;
      }
      [prevRow, row, nextRow] = [row, nextRow, prevRow];
    }
    g.putImageData(out, 0, 0);
    return this.canvas;
  }
}
