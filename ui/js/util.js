// Small shared helpers: DOM building, toasts, dialogs, job polling, palette colours.

import { call } from "./transport.js";

/** Build an element: h("div", {class: "x", onclick: fn}, child, "text", [more]). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "style" && typeof value === "object") {
      // Custom properties (--c) only work through setProperty.
      for (const [prop, v] of Object.entries(value)) {
        if (prop.startsWith("--")) el.style.setProperty(prop, v);
        else el.style[prop] = v;
      }
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key in el && typeof value !== "string") {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  appendChildren(el, children);
  return el;
}

function appendChildren(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// ---------- toasts ----------

export function toast(message, kind = "info", ms = 5000) {
  const host = document.getElementById("toasts");
  const close = h("button", { class: "toast-close", title: "Dismiss", "aria-label": "Dismiss" }, "×");
  const el = h("div", { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status" },
    h("span", { class: "toast-text" }, message), close);
  const remove = () => el.remove();
  close.addEventListener("click", remove);
  // The same message again replaces the older one instead of stacking up.
  for (const old of host.querySelectorAll(".toast")) {
    if (old.querySelector(".toast-text").textContent === String(message)) old.remove();
  }
  host.append(el);
  // Errors stay to be read until dismissed or the screen changes (clearErrorToasts); others fade.
  if (kind !== "error") setTimeout(remove, ms);
  while (host.children.length > 5) host.firstChild.remove();
  return el;
}

/** Remove the error toasts: called when the user moves to another screen, where they no longer apply. */
export function clearErrorToasts() {
  for (const el of document.querySelectorAll("#toasts .toast-error")) el.remove();
}

export function showError(err) {
  const message = err && err.message ? err.message : String(err);
  console.error(err);
  toast(message, "error");
}

/** Run an async function, reporting failures as an error toast; returns undefined on failure. */
export async function guard(fn) {
  try {
    return await fn();
  } catch (err) {
    showError(err);
    return undefined;
  }
}

/** Call the API, toasting any error; resolves undefined on failure. */
export function tryCall(name, ...args) {
  return guard(() => call(name, ...args));
}

// ---------- dialogs ----------

/** A modal dialog; resolves with the value of the clicked button (or null on Esc/cancel). */
export function dialog({ title, body, buttons }) {
  return new Promise((resolve) => {
    const dlg = h("dialog", { class: "dialog" });
    const finish = (value) => {
      dlg.close();
      dlg.remove();
      resolve(value);
    };
    // A button with `submit(dlg)` keeps the dialog open while it runs; when it throws, the dialog
    // stays (its `onError(err, dlg)` shows the message inside it, next to the field at fault).
    const press = async (b, button) => {
      if (typeof b.submit !== "function") {
        finish(typeof b.value === "function" ? b.value(dlg) : b.value);
        return;
      }
      button.disabled = true;
      try {
        finish(await b.submit(dlg));
      } catch (err) {
        if (typeof b.onError === "function") b.onError(err, dlg);
        else showError(err);
      } finally {
        button.disabled = false;
      }
    };
    const row = h("div", { class: "dialog-buttons" },
      buttons.map((b) => {
        const button = h("button", { class: b.class || "btn", "data-action": b.action || null }, b.label);
        button.addEventListener("click", () => press(b, button));
        return button;
      }));
    dlg.append(h("h2", {}, title), h("div", { class: "dialog-body" }, body), row);
    dlg.addEventListener("cancel", (e) => {
      e.preventDefault();
      finish(null);
    });
    document.body.append(dlg);
    dlg.showModal();
    const primary = dlg.querySelector(".btn-primary, .btn-danger");
    if (primary) primary.focus();
  });
}

// ---------- jobs ----------

/**
 * Poll job_status about twice a second until the job ends; onUpdate(status) after each poll.
 * Resolves with the final status; rejects with the job's error when it failed.
 */
export async function pollJob(jobId, onUpdate, { interval = 500, signal } = {}) {
  for (;;) {
    const status = await call("job_status", jobId);
    if (onUpdate) onUpdate(status);
    if (status.state === "failed") throw new Error(status.error || status.message || "The job failed.");
    if (status.state !== "running") return status;
    if (signal && signal.aborted) return status;
    await sleep(interval);
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

// ---------- palette & formatting ----------

let PALETTE = [];

export function setPalette(hexes) {
  PALETTE = Array.isArray(hexes) ? hexes : [];
}

/** The palette colour of an object ID as "#rrggbb" (the same colour as in the saved overlays). */
export function idColor(id) {
  const fallback = ["#000000", "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
    "#46f0f0", "#f032e6", "#bcf60c"];
  if (PALETTE.length) return PALETTE[((id % PALETTE.length) + PALETTE.length) % PALETTE.length];
  return fallback[id % fallback.length];
}

export function hexToRgb(hex) {
  const v = parseInt(hex.replace("#", ""), 16);
  return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
}

/** The text colour readable on background `hex`: dark on light colours (yellow), white on dark ones. */
export function textOn(hex) {
  const lin = (c) => { const v = c / 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const [r, g, b] = hexToRgb(hex).map(lin);
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  // WCAG contrast against white (1.05 / (L + 0.05)) vs against near-black #101828 (L ≈ 0.009).
  return 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.059 ? "#ffffff" : "#101828";
}

export function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function plural(n, word, many = word + "s") {
  return `${n} ${n === 1 ? word : many}`;
}

export function progressBar(done, total) {
  const pct = total > 0 ? Math.min(100, (100 * done) / total) : 0;
  return h("div", { class: "progress", role: "progressbar", "aria-valuenow": Math.round(pct),
    "aria-valuemin": 0, "aria-valuemax": 100 },
  h("div", { class: "progress-fill", style: { width: pct + "%" } }));
}

/**
 * Frames with a mask, as the screens list them: references plus predictions, stale ones included
 * (they are shown, marked stale, until the next run replaces them); never a frame twice.
 */
export function framesDone(c) {
  return (c.refs || 0) + (c.preds || 0);
}

/** "12" or "12 (3 stale)": predictions, with those made before the group's newest reference. */
export function predText(c) {
  return c.stale ? `${c.preds || 0} (${c.stale} stale)` : String(c.preds || 0);
}

export function emptyState(title, text, action) {
  return h("div", { class: "empty" }, h("h3", {}, title), h("p", {}, text), action || null);
}

/** Encode a path segment (group keys and pks may contain slashes or spaces). */
export function enc(value) {
  return encodeURIComponent(String(value));
}
