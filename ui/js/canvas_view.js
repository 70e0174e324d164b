// A zoomable, pannable canvas showing one image with mask layers in image coordinates.

import { hexToRgb } from "./util.js";

// Masks are hit-tested and drawn at most this many pixels on their long side (memory stays small).
export const MASK_MAX_SIDE = 1024;

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`Cannot load ${url.replace(/[?&]token=[^&]*/, "")}`));
    img.src = url;
  });
}

/** Bitmap of one mask: which pixels (at a reduced grid) belong to it, plus outline pixels. */
export class MaskBitmap {
  constructor(alpha, width, height) {
    this.alpha = alpha; // Uint8Array, 1 where inside
    this.width = width;
    this.height = height;
    this.layers = new Map();
  }

  static async fromUrl(url, imageWidth, imageHeight) {
    const img = await loadImage(url);
    const scale = Math.min(1, MASK_MAX_SIDE / Math.max(imageWidth, imageHeight));
    const w = Math.max(1, Math.round(imageWidth * scale));
    const hgt = Math.max(1, Math.round(imageHeight * scale));
    const canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = hgt;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    g.imageSmoothingEnabled = false;
    g.drawImage(img, 0, 0, w, hgt);
    const data = g.getImageData(0, 0, w, hgt).data;
    const alpha = new Uint8Array(w * hgt);
    // A raw ID mask (opaque, grey levels) and an RGBA overlay both work: inside = visible and non-black.
    for (let i = 0, p = 0; i < alpha.length; i++, p += 4) {
      const a = data[p + 3];
      alpha[i] = a > 0 && (a < 255 || (data[p] | data[p + 1] | data[p + 2]) > 0) ? 1 : 0;
    }
    return new MaskBitmap(alpha, w, hgt);
  }

  /** True when image pixel (x, y) of an image of size (iw, ih) is inside the mask. */
  contains(x, y, iw, ih) {
    const mx = Math.floor((x / iw) * this.width);
    const my = Math.floor((y / ih) * this.height);
    if (mx < 0 || my < 0 || mx >= this.width || my >= this.height) return false;
    return this.alpha[my * this.width + mx] === 1;
  }

  /** A canvas with the mask filled (fillAlpha 0..1) and outlined in a colour; cached per style. */
  layer(hex, fillAlpha, edgeAlpha) {
    const key = `${hex}|${fillAlpha}|${edgeAlpha}`;
    let canvas = this.layers.get(key);
    if (canvas) return canvas;
    const [r, g, b] = hexToRgb(hex);
    const { width: w, height: hh, alpha } = this;
    canvas = document.createElement("canvas");
    canvas.width = w;
    canvas.height = hh;
    const ctx = canvas.getContext("2d");
    const out = ctx.createImageData(w, hh);
    const px = out.data;
    const fa = Math.round(fillAlpha * 255);
    const ea = Math.round(edgeAlpha * 255);
    for (let y = 0; y < hh; y++) {
      for (let x = 0; x < w; x++) {
        const i = y * w + x;
        if (!alpha[i]) continue;
        const edge = x === 0 || y === 0 || x === w - 1 || y === hh - 1 ||
          !alpha[i - 1] || !alpha[i + 1] || !alpha[i - w] || !alpha[i + w];
        const p = i * 4;
        px[p] = edge ? Math.min(255, r * 0.7) : r;
        px[p + 1] = edge ? Math.min(255, g * 0.7) : g;
        px[p + 2] = edge ? Math.min(255, b * 0.7) : b;
        px[p + 3] = edge ? ea : fa;
      }
    }
    ctx.putImageData(out, 0, 0);
    if (this.layers.size > 8) this.layers.clear();
    this.layers.set(key, canvas);
    return canvas;
  }
}

/**
 * The stage: owns a <canvas>, the view transform and interaction (wheel zoom, drag pan).
 * draw(ctx) callbacks paint in image coordinates.
 */
export class CanvasView {
  constructor(container, { onClick, onHover, paint, onStroke } = {}) {
    this.container = container;
    this.canvas = document.createElement("canvas");
    this.canvas.className = "stage-canvas";
    this.canvas.tabIndex = 0;
    container.append(this.canvas);
    this.ctx = this.canvas.getContext("2d");
    this.image = null;
    this.iw = 1;
    this.ih = 1;
    this.scale = 1;
    this.tx = 0;
    this.ty = 0;
    this.panMode = false;
    this.spaceDown = false;
    this.onClick = onClick;
    this.onHover = onHover;
    this.paint = paint;
    // onStroke(phase: "start"|"move"|"end", [x, y], event): left drags when strokeMode is on (brush).
    this.onStroke = onStroke;
    this.strokeMode = false;
    this._stroke = false;
    // Until the user zooms or pans, the image is refitted whenever the stage changes size.
    this.autoFit = true;
    this._drag = null;
    this._raf = 0;
    this._listeners = [];
    this._bind();
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(container);
    this.resize();
  }

  _on(target, type, fn, opts) {
    target.addEventListener(type, fn, opts);
    this._listeners.push([target, type, fn, opts]);
  }

  destroy() {
    this.resizeObserver.disconnect();
    for (const [t, type, fn, opts] of this._listeners) t.removeEventListener(type, fn, opts);
    cancelAnimationFrame(this._raf);
  }

  setImage(img, width, height) {
    this.image = img;
    this.iw = width;
    this.ih = height;
    this.fit();
  }

  resize() {
    const rect = this.container.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.cssW = Math.max(50, rect.width);
    this.cssH = Math.max(50, rect.height);
    this.canvas.width = Math.round(this.cssW * dpr);
    this.canvas.height = Math.round(this.cssH * dpr);
    this.canvas.style.width = this.cssW + "px";
    this.canvas.style.height = this.cssH + "px";
    this.dpr = dpr;
    if (!this._fitted || this.autoFit) this.fit();
    else this.redraw();
  }

  fit() {
    const pad = 16;
    this.autoFit = true;
    this.scale = Math.min((this.cssW - 2 * pad) / this.iw, (this.cssH - 2 * pad) / this.ih);
    if (!isFinite(this.scale) || this.scale <= 0) this.scale = 1;
    this.tx = (this.cssW - this.iw * this.scale) / 2;
    this.ty = (this.cssH - this.ih * this.scale) / 2;
    this._fitted = Boolean(this.image);
    this.redraw();
  }

  zoomAt(factor, cx, cy) {
    const next = Math.min(40, Math.max(0.02, this.scale * factor));
    const f = next / this.scale;
    this.tx = cx - (cx - this.tx) * f;
    this.ty = cy - (cy - this.ty) * f;
    this.scale = next;
    this.autoFit = false;
    this.redraw();
  }

  /** Image coordinates of a mouse event. */
  toImage(e) {
    const rect = this.canvas.getBoundingClientRect();
    return [(e.clientX - rect.left - this.tx) / this.scale, (e.clientY - rect.top - this.ty) / this.scale];
  }

  inside(x, y) {
    return x >= 0 && y >= 0 && x < this.iw && y < this.ih;
  }

  redraw() {
    cancelAnimationFrame(this._raf);
    this._raf = requestAnimationFrame(() => this._draw());
  }

  _draw() {
    const g = this.ctx;
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.clearRect(0, 0, this.canvas.width, this.canvas.height);
    // The view transform, readable by tests and tools: screen = image * scale + (tx, ty).
    Object.assign(this.canvas.dataset, { scale: this.scale, tx: this.tx, ty: this.ty });
    if (!this.image) return;
    g.setTransform(this.dpr * this.scale, 0, 0, this.dpr * this.scale, this.dpr * this.tx, this.dpr * this.ty);
    g.imageSmoothingEnabled = this.scale < 2;
    g.drawImage(this.image, 0, 0, this.iw, this.ih);
    if (this.paint) this.paint(g, this);
  }

  _bind() {
    const c = this.canvas;
    this._on(c, "wheel", (e) => {
      e.preventDefault();
      const rect = c.getBoundingClientRect();
      this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - rect.left, e.clientY - rect.top);
    }, { passive: false });
    this._on(c, "mousedown", (e) => {
      c.focus({ preventScroll: true });
      const pan = e.button === 1 || (e.button === 0 && (this.panMode || this.spaceDown));
      if (pan) {
        e.preventDefault();
        this._drag = { x: e.clientX, y: e.clientY, tx: this.tx, ty: this.ty, moved: false };
        c.classList.add("panning");
        return;
      }
      if (e.button === 0 && this.strokeMode && this.onStroke) {
        e.preventDefault();
        this._stroke = true;
        this.onStroke("start", this.toImage(e), e);
        return;
      }
      this._down = { x: e.clientX, y: e.clientY, button: e.button };
    });
    this._on(window, "mousemove", (e) => {
      if (this._drag) {
        this.tx = this._drag.tx + e.clientX - this._drag.x;
        this.ty = this._drag.ty + e.clientY - this._drag.y;
        this.autoFit = false;
        this.redraw();
        return;
      }
      if (this._stroke) {
        this.onStroke("move", this.toImage(e), e);
        return;
      }
      if (e.target === c && this.onHover) this.onHover(this.toImage(e), e);
    });
    this._on(window, "mouseup", (e) => {
      if (this._drag) {
        this._drag = null;
        c.classList.remove("panning");
        return;
      }
      if (this._stroke) {
        this._stroke = false;
        this.onStroke("end", this.toImage(e), e);
        return;
      }
      const down = this._down;
      this._down = null;
      if (!down || e.target !== c) return;
      if (Math.abs(e.clientX - down.x) + Math.abs(e.clientY - down.y) > 6) return;
      if (this.onClick) this.onClick(this.toImage(e), e, down.button);
    });
    this._on(c, "contextmenu", (e) => e.preventDefault());
    this._on(c, "mouseleave", () => { if (this.onHover) this.onHover(null, null); });
  }
}
