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

// Polls are numbered: refreshJobs() may start one while another is still waiting for its answer,
// and an older answer arriving last must not be drawn (it would drop a job's chip, and with it
// the Cancel button under the mouse) nor start a second polling loop.
let latestPoll = 0;

async function poll() {
  const seq = ++latestPoll;
  clearTimeout(timer);
  let fresh = null;
  try {
    fresh = await call("list_jobs", null);
  } catch (err) {
    console.warn(err);
  }
  if (seq !== latestPoll) return; // a newer poll is under way: its answer is the one to show
  if (fresh) jobs = fresh;
  draw();
  for (const fn of listeners) {
    try { fn(); } catch (err) { console.error(err); }
  }
  timer = setTimeout(poll, POLL_MS);
}

// Chips by job id: a poll updates them in place, so a Cancel button is never swapped for a new
// one between the press and the release of a click (which would lose the click).
const chips = new Map();

// What a chip shows, apart from the job's id: a job that ends while another starts for the same
// thing (candidates of one frame generated again, a run started again) between two polls takes
// over the ended job's chip. Otherwise the bar, which still shows the ended job until its next
// poll, would swap that chip for an identical-looking new one under the user's pointer.
function slotKey(j) {
  return JSON.stringify([j.kind, j.project_id ?? null, j.title || j.kind]);
}

let draws = 0; // numbers the draws: a chip taken over stays held for the rest of its draw

function draw() {
  if (!host) return;
  draws += 1;
  host.classList.toggle("hidden", !jobs.length);
  const ids = new Set(jobs.map((j) => j.id));
  const ended = new Map(); // chips of jobs no longer running, by what they show
  for (const [id, chip] of chips) {
    if (!ids.has(id) && !ended.has(slotKey(chip.job))) ended.set(slotKey(chip.job), chip);
  }
  jobs.forEach((j, index) => {
    let chip = chips.get(j.id);
    if (!chip) {
      chip = ended.get(slotKey(j));
      if (chip) {
        ended.delete(slotKey(j));
        chips.delete(chip.job.id);
        rebind(chip, j);
      } else {
        chip = makeChip(j);
      }
      chips.set(j.id, chip);
    }
    updateChip(chip, j);
    if (host.children[index] !== chip.el) host.insertBefore(chip.el, host.children[index] || null);
  });
  for (const [id, chip] of chips) {
    if (!ids.has(id)) {
      chip.el.remove();
      chips.delete(id);
    }
  }
}

function makeChip(j) {
  const cancel = h("button", { class: "btn btn-small", "data-job-id": j.id }, "Cancel");
  const title = h("span", { class: "job-title" });
  const progress = h("span", { class: "job-progress" });
  const count = h("span", { class: "small muted job-count" });
  const el = h("div", { class: "job-chip", "data-kind": j.kind, "data-job-id": j.id }, title, progress, count, cancel);
  const chip = { el, title, progress, count, cancel, spinner: null, job: j, pressed: null, held: 0 };
  // The job the chip showed when Cancel was pressed: another job may take the chip over before
  // the release, and the click must then cancel nothing rather than a job the user never saw.
  const press = () => { chip.pressed = chip.job.id; };
  cancel.addEventListener("pointerdown", press);
  cancel.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") press();
  });
  cancel.addEventListener("click", async () => {
    const pressed = chip.pressed;
    chip.pressed = null;
    const id = chip.job.id; // the job the chip shows at the click
    if (pressed !== null && pressed !== id) return; // pressed on a job that has ended since
    cancel.disabled = true;
    cancel.textContent = "Cancelling…";
    try {
      await call("cancel_job", id);
    } catch (err) {
      // The job runs on: let the user try again.
      if (chip.job.id === id) {
        cancel.disabled = false;
        cancel.textContent = "Cancel";
      }
      showError(err);
    }
    refreshJobs();
  });
  return chip;
}

/**
 * Give an ended job's chip to the job that took its place. A chip whose job was being cancelled
 * keeps its Cancel disabled until the next poll: the second click of a double click, or a
 * repeated one, must not stop the new job.
 */
function rebind(chip, j) {
  chip.el.dataset.jobId = j.id;
  chip.cancel.dataset.jobId = j.id;
  chip.held = chip.cancel.disabled ? draws : 0;
  chip.cancel.textContent = "Cancel";
}

function updateChip(chip, j) {
  chip.job = j;
  if (chip.held && chip.held !== draws) {
    chip.held = 0;
    chip.cancel.disabled = false;
  }
  const name = j.title || j.kind;
  chip.el.title = j.message || "";
  chip.cancel.title = `Cancel: ${name}`;
  chip.title.textContent = name;
  const hasTotal = Boolean(j.total);
  chip.progress.replaceChildren(hasTotal ? progressBar(j.done, j.total) : chip.spinner || (chip.spinner = h("span", { class: "spinner spinner-small" })));
  const counts = hasTotal ? `${j.done} / ${j.total}` : "";
  const eta = j.eta_s !== null && j.eta_s !== undefined ? ` · ETA ${formatEta(j.eta_s)}` : "";
  chip.count.textContent = `${counts}${counts ? " · " : ""}${formatEta(j.elapsed_s)}${eta}`;
}
