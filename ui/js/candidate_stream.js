// Candidates as they arrive: the server adds each prompt batch's candidates to the frame's
// session; this fetches what changed since the last look, and shows progress with Cancel.
import { call } from "./transport.js";
import { h, progressBar } from "./util.js";

/** What the label screen says when generation ends with `n` candidates (n > 0). */
export function candidatesFoundText(n) {
  return n === 1 ? "1 candidate mask: click it if it belongs to the object"
    : `${n} candidate masks: click the ones that belong to the object`;
}

/** "3 s", "1 min 20 s": a short duration. */
export function seconds(s) {
  if (s === null || s === undefined || !isFinite(s)) return "";
  s = Math.max(0, Math.round(s));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${s % 60} s`;
}

/** One line for a candidates job: steps done of total, elapsed time, time left. */
export function progressText(s) {
  const parts = [];
  if (s.total) parts.push(`step ${s.done} of ${s.total}`);
  parts.push(`${seconds(s.elapsed_s)} elapsed`);
  if (s.total && s.done < s.total && s.eta_s !== null && s.eta_s !== undefined) parts.push(`about ${seconds(s.eta_s)} left`);
  return `Finding candidates: ${parts.join(" · ")}`;
}

/** Follows one frame's generation: `poll()` returns {masks, removed} new since the last call. */
export class CandidateFeed {
  constructor(pid, pk) {
    this.pid = pid;
    this.pk = pk;
    this.since = 0;
    this.busy = null;
  }

  /** Changes since the last poll; concurrent calls share one request. */
  poll() {
    if (!this.busy) {
      this.busy = call("candidate_updates", this.pid, this.pk, this.since).then((u) => {
        this.since = u.version;
        return u;
      }).finally(() => { this.busy = null; });
    }
    return this.busy;
  }
}

/** A progress card that does not block the image (clicks keep working under it). */
export class CandidateProgress {
  constructor() {
    this.text = h("span", { class: "small", id: "cand-progress-text" });
    this.bar = h("div", { class: "cand-progress-bar" });
    this.cancelBtn = h("button", { class: "btn btn-small", id: "cancel-candidates", type: "button" }, "Cancel");
    this.el = h("div", { class: "cand-progress hidden", id: "cand-progress", role: "status" }, this.text, this.bar, this.cancelBtn);
  }

  show(status, onCancel, message = null) {
    this.el.classList.remove("hidden");
    this.text.textContent = message || progressText(status);
    this.bar.replaceChildren(progressBar(status.done || 0, status.total || 0));
    this.cancelBtn.onclick = onCancel;
    this.cancelBtn.disabled = !onCancel;
  }

  hide() {
    this.el.classList.add("hidden");
  }
}
