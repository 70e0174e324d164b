// The job bar: every running background job (candidates, downloads, runs) on every screen, with
// progress and Cancel. It asks the server, so a job started before a page reload shows too.

import { call } from "./transport.js";
import { formatEta, h, progressBar, showError } from "./util.js";

const POLL_MS = 1000;
let jobs = [];
const listeners = new Set();
let host = null;
let timer = 0;

/** Start the job bar in `el` (once, from app.js). */
export function mountJobBar(el) {
  host = el;
  poll();
}

/** Poll now (after starting a job) instead of at the next tick. */
export function refreshJobs() {
  clearTimeout(timer);
  return poll();
}

/**
 * Call onJobs(running jobs of the project) now and after every poll; returns the unsubscribe
 * function. Screens use it to disable what would start a conflicting job, saying why.
 */
export function jobBlocking(projectId, onJobs) {
  const fn = () => onJobs(jobs.filter((j) => projectId === null || String(j.project_id) === String(projectId)));
  listeners.add(fn);
  fn();
  return () => listeners.delete(fn);
}

async function poll() {
  try {
    jobs = await call("list_jobs", null);
  } catch (err) {
    console.warn(err);
  }
  draw();
  for (const fn of listeners) {
    try { fn(); } catch (err) { console.error(err); }
  }
  timer = setTimeout(poll, POLL_MS);
}

function draw() {
  if (!host) return;
  host.classList.toggle("hidden", !jobs.length);
  host.replaceChildren(...jobs.map((j) => {
    const cancel = h("button", { class: "btn btn-small", title: `Cancel: ${j.title || j.kind}`, "data-job-id": j.id }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
      try { await call("cancel_job", j.id); } catch (err) { showError(err); }
      refreshJobs();
    });
    const counts = j.total ? `${j.done} / ${j.total}` : "";
    const eta = j.eta_s !== null && j.eta_s !== undefined ? ` · ETA ${formatEta(j.eta_s)}` : "";
    return h("div", { class: "job-chip", "data-kind": j.kind, "data-job-id": j.id, title: j.message || "" },
      h("span", { class: "job-title" }, j.title || j.kind),
      h("span", { class: "job-progress" }, j.total ? progressBar(j.done, j.total) : h("span", { class: "spinner spinner-small" })),
      h("span", { class: "small muted job-count" }, `${counts}${counts ? " · " : ""}${formatEta(j.elapsed_s)}${eta}`),
      cancel);
  }));
}
