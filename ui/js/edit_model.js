// The label screen's editing model, without any DOM: the frame's objects as one ID map.
//
// Every pixel holds one object ID (0 = background), exactly what ref_masks/{pk}.png stores, so an
// object is an (ID, mask) pair and what is saved is what is shown. Content edits (add/remove a
// mask, brush, eraser, renumber, delete) are undoable steps; the state the frame was opened or last
// saved in is kept, so Discard restores it exactly and `dirty` says whether anything is unsaved.
// States are stored run-length encoded: an undo step costs a few kB for smooth masks.

export const MAX_ID = 255;
const MAX_UNDO = 200;

/** Run-length encoding of an ID map: [value, length, value, length, ...] in row-major order. */
export function encodeRuns(labels) {
  const runs = [];
  const n = labels.length;
  let i = 0;
  while (i < n) {
    const v = labels[i];
    let j = i + 1;
    while (j < n && labels[j] === v) j++;
    runs.push(v, j - i);
    i = j;
  }
  return runs;
}

/** The ID map of `n` pixels that `encodeRuns` encoded; an error when the lengths do not add up. */
export function decodeRuns(runs, n) {
  const out = new Uint8Array(n);
  let p = 0;
  for (let k = 0; k + 1 < runs.length; k += 2) {
    const v = runs[k];
    const len = runs[k + 1];
    if (!Number.isInteger(v) || v < 0 || v > MAX_ID || !Number.isInteger(len) || len < 0 || p + len > n) {
      throw new Error(`Bad mask runs at pair ${k / 2}: value ${v}, length ${len}.`);
    }
    if (v) out.fill(v, p, p + len);
    p += len;
  }
  if (p !== n) throw new Error(`Mask runs cover ${p} pixels, the image has ${n}.`);
  return out;
}

/** A binary mask cropped to its box, in image pixels: {x0, y0, width, height, data: 0/1 bytes}. */
export function cropFromRuns({ x0, y0, width, height, runs }) {
  return { x0, y0, width, height, data: decodeRuns(runs, width * height) };
}

function sameRuns(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function checkId(id) {
  const v = Number(id);
  if (!Number.isInteger(v) || v < 1 || v > MAX_ID) throw new Error(`An object ID is a whole number from 1 to ${MAX_ID}, got ${id}.`);
  return v;
}

export class EditModel {
  /**
   * width, height: the image's (post-EXIF) size; labels: a Uint8Array ID map or runs, or null for
   * an empty frame. The opened state is the "saved" one until markSaved().
   */
  constructor({ width, height, labels = null }) {
    if (!(width > 0 && height > 0)) throw new Error(`Bad image size ${width}×${height}.`);
    this.width = width;
    this.height = height;
    const n = width * height;
    if (labels instanceof Uint8Array) {
      if (labels.length !== n) throw new Error(`The ID map has ${labels.length} pixels, the image ${n}.`);
      this.labels = labels.slice();
    } else {
      this.labels = labels ? decodeRuns(labels, n) : new Uint8Array(n);
    }
    this.currentId = 1;
    this.selected = null; // ID of the selected object, or null: the next edit starts a new object
    this.version = 0; // bumped by every change of labels (caches key on it)
    this._undo = [];
    this._redo = [];
    this._runs = null;
    this._stats = null;
    this._stroke = null;
    this._saved = this.runs();
    // The first ID not in use is where a new object starts.
    this.currentId = this.nextFreeId();
  }

  // ---------- reading ----------

  /** Run-length encoding of the current ID map (cached until the next change). */
  runs() {
    if (!this._runs) this._runs = encodeRuns(this.labels);
    return this._runs;
  }

  /** True when the ID map differs from the state last opened or saved. */
  get dirty() {
    return !sameRuns(this.runs(), this._saved);
  }

  get canUndo() {
    return this._undo.length > 0;
  }

  get canRedo() {
    return this._redo.length > 0;
  }

  /** The objects, by ID: [{id, area, bbox: [x0, y0, x1, y1] (x1/y1 exclusive)}]. */
  objects() {
    if (!this._stats) {
      const { width: w, height: hh, labels } = this;
      // Per ID: area and box, in typed arrays indexed by ID (no per-pixel map lookups).
      const area = new Float64Array(256);
      const x0 = new Int32Array(256).fill(w);
      const y0 = new Int32Array(256).fill(hh);
      const x1 = new Int32Array(256);
      const y1 = new Int32Array(256);
      for (let y = 0, i = 0; y < hh; y++) {
        for (let x = 0; x < w; x++, i++) {
          const v = labels[i];
          if (!v) continue;
          area[v]++;
          if (x < x0[v]) x0[v] = x;
          if (x >= x1[v]) x1[v] = x + 1;
          if (y < y0[v]) y0[v] = y;
          y1[v] = y + 1; // rows come in order
        }
      }
      const stats = new Map();
      for (let v = 1; v < 256; v++) {
        if (area[v]) stats.set(v, { id: v, area: area[v], bbox: [x0[v], y0[v], x1[v], y1[v]] });
      }
      this._stats = [...stats.values()].sort((a, b) => a.id - b.id);
    }
    return this._stats;
  }

  has(id) {
    return this.objects().some((o) => o.id === id);
  }

  /** The object ID at image pixel (x, y); 0 for background or outside the image. */
  idAt(x, y) {
    const xi = Math.floor(x);
    const yi = Math.floor(y);
    if (xi < 0 || yi < 0 || xi >= this.width || yi >= this.height) return 0;
    return this.labels[yi * this.width + xi];
  }

  /** The smallest ID not in use (1 when the frame is empty); null when all 255 are taken. */
  nextFreeId() {
    const used = new Set(this.objects().map((o) => o.id));
    for (let id = 1; id <= MAX_ID; id++) if (!used.has(id)) return id;
    return null;
  }

  /** The ID the next add/brush edit paints: the selected object's, else the current ID. */
  get targetId() {
    return this.selected ?? this.currentId;
  }

  // ---------- selection (not undo steps) ----------

  /** Select an object by ID (its ID becomes current), or null to select none. */
  select(id) {
    if (id === null || id === undefined) {
      this.selected = null;
      return;
    }
    const v = checkId(id);
    this.currentId = v;
    this.selected = this.has(v) ? v : null;
  }

  /** Set the current ID: selects that object when it exists, else the next edit starts it. */
  setCurrentId(id) {
    this.select(checkId(id));
  }

  /** Select none and move the current ID to the first free one: the next edit starts a new object. */
  newObject() {
    this.selected = null;
    const free = this.nextFreeId();
    if (free !== null) this.currentId = free;
  }

  // ---------- edits (each one undo step) ----------

  /**
   * Add a mask's pixels to the selected object, or start an object with the current ID when none
   * is selected. Pixels of other objects are left alone (the brush paints over them).
   */
  addMask(crop) {
    const target = this.targetId;
    const changed = this._edit(() => this._forCrop(crop, (i) => {
      const v = this.labels[i];
      if (v === 0) { this.labels[i] = target; return true; }
      return false;
    }));
    if (this.has(target)) {
      this.selected = target;
      this.currentId = target;
    }
    return changed;
  }

  /** Remove a mask's pixels from the selected object; nothing happens when none is selected. */
  removeMask(crop) {
    const target = this.selected;
    if (target === null) return false;
    const changed = this._edit(() => this._forCrop(crop, (i) => {
      if (this.labels[i] === target) { this.labels[i] = 0; return true; }
      return false;
    }));
    if (!this.has(target)) this.selected = null;
    return changed;
  }

  /** Give object `from` the ID `to` (merging into `to` when it exists); `to` becomes selected. */
  renumber(from, to) {
    const a = checkId(from);
    const b = checkId(to);
    if (a === b || !this.has(a)) return false;
    const changed = this._edit(() => {
      let any = false;
      const { labels } = this;
      for (let i = 0; i < labels.length; i++) if (labels[i] === a) { labels[i] = b; any = true; }
      return any;
    });
    this.currentId = b;
    this.selected = b;
    return changed;
  }

  /** Delete an object (its pixels become background). */
  deleteObject(id) {
    const a = checkId(id);
    const changed = this._edit(() => {
      let any = false;
      const { labels } = this;
      for (let i = 0; i < labels.length; i++) if (labels[i] === a) { labels[i] = 0; any = true; }
      return any;
    });
    if (this.selected === a) this.selected = null;
    return changed;
  }

  /**
   * Start a brush (paints the target ID over anything) or eraser stroke (clears the selected
   * object's pixels, or every object's when none is selected) of `radius` image pixels.
   * strokeTo() adds points, endStroke() makes the whole stroke one undo step.
   */
  beginStroke({ erase = false, radius = 8 } = {}) {
    this.endStroke();
    this._stroke = { erase, radius: Math.max(0.5, Number(radius) || 0.5), last: null, before: this.runs(),
      state: this._state(), changed: false, target: erase ? this.selected : this.targetId };
  }

  strokeTo(x, y) {
    const s = this._stroke;
    if (!s) return false;
    const step = Math.max(0.5, s.radius / 2);
    const from = s.last ?? [x, y];
    const dist = Math.hypot(x - from[0], y - from[1]);
    const n = Math.max(1, Math.ceil(dist / step));
    let any = false;
    for (let k = s.last ? 1 : 0; k <= n; k++) {
      const t = k / n;
      any = this._dab(from[0] + (x - from[0]) * t, from[1] + (y - from[1]) * t, s) || any;
    }
    s.last = [x, y];
    if (any) {
      s.changed = true;
      this._changed();
    }
    return any;
  }

  /** Finish the stroke: one undo step if it changed anything. */
  endStroke() {
    const s = this._stroke;
    if (!s) return false;
    this._stroke = null;
    if (!s.changed) return false;
    this._pushUndo({ runs: s.before, ...s.state });
    if (!s.erase && this.has(s.target)) {
      this.selected = s.target;
      this.currentId = s.target;
    }
    if (this.selected !== null && !this.has(this.selected)) this.selected = null;
    return true;
  }

  /** One dab (a stroke of a single point). */
  paint(x, y, { erase = false, radius = 8 } = {}) {
    this.beginStroke({ erase, radius });
    this.strokeTo(x, y);
    return this.endStroke();
  }

  undo() {
    if (this._stroke) this.endStroke();
    const step = this._undo.pop();
    if (!step) return false;
    this._redo.push(this._snapshot());
    this._restore(step);
    return true;
  }

  redo() {
    const step = this._redo.pop();
    if (!step) return false;
    this._undo.push(this._snapshot());
    this._restore(step);
    return true;
  }

  /** The state the server wrote is the saved one: `runs` as sent (default: the current state). */
  markSaved(runs = this.runs()) {
    this._saved = runs;
  }

  /** Back to the saved state, exactly; an undo step, so Discard itself can be undone. */
  discard() {
    if (!this.dirty) return false;
    this._pushUndo(this._snapshot());
    this._restore({ runs: this._saved, selected: null, currentId: this.currentId });
    this.newObject();
    return true;
  }

  // ---------- internals ----------

  _state() {
    return { selected: this.selected, currentId: this.currentId };
  }

  _snapshot() {
    return { runs: this.runs(), ...this._state() };
  }

  _restore(step) {
    this.labels = decodeRuns(step.runs, this.width * this.height);
    this._changed();
    this._runs = step.runs;
    this.currentId = step.currentId;
    this.selected = step.selected !== null && this.has(step.selected) ? step.selected : null;
  }

  _pushUndo(step) {
    this._undo.push(step);
    if (this._undo.length > MAX_UNDO) this._undo.shift();
    this._redo = [];
  }

  _changed() {
    this.version++;
    this._runs = null;
    this._stats = null;
  }

  /** Run `fn` (returns whether it changed labels) as one undo step. */
  _edit(fn) {
    if (this._stroke) this.endStroke();
    const before = this._snapshot();
    const changed = fn();
    if (changed) {
      this._pushUndo(before);
      this._changed();
    }
    return changed;
  }

  /** Call fn(pixelIndex) for each pixel of a crop inside the image; true if any call returned true. */
  _forCrop(crop, fn) {
    const { x0, y0, width: cw, height: ch, data } = crop;
    if (data.length !== cw * ch) throw new Error(`A ${cw}×${ch} mask needs ${cw * ch} values, got ${data.length}.`);
    const W = this.width;
    let any = false;
    for (let cy = Math.max(0, -y0); cy < ch && y0 + cy < this.height; cy++) {
      const row = (y0 + cy) * W + x0;
      for (let cx = Math.max(0, -x0); cx < cw && x0 + cx < W; cx++) {
        if (data[cy * cw + cx] && fn(row + cx)) any = true;
      }
    }
    return any;
  }

  _dab(x, y, s) {
    // Pixel (px, py) is painted when its centre lies within the radius.
    const r = s.radius;
    const W = this.width;
    const H = this.height;
    const { labels } = this;
    let any = false;
    const y0 = Math.max(0, Math.ceil(y - r - 0.5));
    const y1 = Math.min(H - 1, Math.floor(y + r - 0.5));
    for (let py = y0; py <= y1; py++) {
      const dy = py + 0.5 - y;
      const half = Math.sqrt(Math.max(0, r * r - dy * dy));
      const x0 = Math.max(0, Math.ceil(x - half - 0.5));
      const x1 = Math.min(W - 1, Math.floor(x + half - 0.5));
      for (let px = x0; px <= x1; px++) {
        const i = py * W + px;
        const v = labels[i];
        if (s.erase) {
          if (v !== 0 && (s.target === null || v === s.target)) { labels[i] = 0; any = true; }
        } else if (v !== s.target) {
          labels[i] = s.target;
          any = true;
        }
      }
    }
    return any;
  }
}
