// New project screen: CSV, key, image paths, grouping, SAM2 variant and mask mode, with live validation.

import { call, inWindow } from "./transport.js";
import { debounce, enc, h, plural, pollJob, progressBar, showError, toast } from "./util.js";

export async function render(root, _params, ctx) {
  ctx.setCrumbs([{ label: "Projects", href: "#/" }, { label: "New project" }]);
  root.className = "page";
  const info = ctx.info;
  const windowMode = inWindow() && info.mode !== "browser";
  const state = { columns: [], preview: null, uploaded: false, projectNames: new Set(), guessSeq: 0 };
  call("list_projects").then((list) => { state.projectNames = new Set(list.map((p) => String(p.name).toLowerCase())); checkName(); },
    () => { /* the name check is a courtesy */ });

  // ---- fields ----
  const name = h("input", { type: "text", id: "f-name", placeholder: "e.g. Beetles 2024", autocomplete: "off" });
  const csvPath = h("input", { type: "text", id: "f-csv", placeholder: "/path/to/images.csv", autocomplete: "off" });
  const csvFile = h("input", { type: "file", id: "f-csv-file", accept: ".csv,text/csv", class: "visually-hidden" });
  const csvButton = h("button", { class: "btn", type: "button", id: "csv-browse",
    title: windowMode ? "Choose a CSV file" : "Upload a CSV from this computer" },
  windowMode ? "Choose CSV…" : "Upload CSV…");
  const previewBox = h("div", { class: "csv-preview muted" }, "Choose a CSV to see its columns and first rows.");
  // The field separator: detected (comma, semicolon, tab or pipe), or the user's choice.
  const delimiter = h("select", { id: "f-delimiter", title: "How the CSV separates its fields" },
    h("option", { value: "" }, "detect"), h("option", { value: "," }, "comma ,"), h("option", { value: ";" }, "semicolon ;"),
    h("option", { value: "\t" }, "tab"), h("option", { value: "|" }, "pipe |"));
  const delimiterNote = h("span", { class: "muted small", id: "delimiter-note" });
  const primaryKey = h("select", { id: "f-pk" });
  const imgPath = h("input", { type: "text", id: "f-img-path", placeholder: "a column, or a template such as {folder}/{file}.jpg", autocomplete: "off" });
  const chips = h("div", { class: "chips", id: "column-chips" });
  const imageRoot = h("input", { type: "text", id: "f-image-root", placeholder: "folder that relative image paths start from (optional)", autocomplete: "off" });
  const rootButton = windowMode ? h("button", { class: "btn", type: "button", title: "Choose the image folder" }, "Browse…") : null;
  const groupBy = h("div", { class: "chips", id: "f-group-by", role: "group", "aria-label": "Group by columns" });
  const variant = h("select", { id: "f-variant" },
    (info.variants || []).map((v) => h("option", { value: v.name },
      v.label && v.label.includes("MB") ? v.label : `${v.label || v.name} (~${v.approx_mb} MB)`)));
  const modelBox = h("div", { class: "model-status", id: "model-status" });
  const maskMode = h("select", { id: "f-mask-mode" }, (info.mask_modes || ["original"]).map((m) => h("option", { value: m }, m)));
  const checkpoint = h("input", { type: "text", id: "f-checkpoint", placeholder: "use the variant's standard checkpoint", autocomplete: "off" });
  const imageSize = h("input", { type: "number", id: "f-image-size", min: 256, max: 2048, step: 32, value: 1024 });
  const device = h("select", { id: "f-device" }, (info.devices || ["auto", "cpu"]).map((d) => h("option", { value: d }, d)));
  const folder = h("input", { type: "text", id: "f-folder", placeholder: "default: the app's projects folder", autocomplete: "off" });
  const nameNote = h("p", { class: "field-note", id: "name-note" });
  const imgPathNote = h("p", { class: "field-note muted small", id: "img-path-note" });
  const imageRootNote = h("p", { class: "field-note", id: "image-root-note" });
  const variantNote = h("p", { class: "field-note muted small", id: "variant-note" });
  const report = h("div", { class: "validation", id: "validation", "aria-live": "polite" },
    h("p", { class: "muted" }, "Validation appears here as you fill in the form."));
  const create = h("button", { class: "btn btn-primary", id: "create-project", type: "submit", disabled: true,
    title: "Create the project and open its groups" }, "Create project");

  const defaults = info.defaults || {};
  if (defaults.image_size) imageSize.value = defaults.image_size;
  if (info.default_variant) variant.value = info.default_variant;
  // No GPU: a large model is slow and a big download; start from a variant that fits the machine.
  const gpu = (info.devices || []).some((d) => /^(cuda|mps)/.test(String(d)));
  const cpuChoice = (info.variants || []).find((v) => v.name === "sam2.1_hiera_small")
    || (info.variants || []).find((v) => /tiny|small/.test(v.name));
  if (!gpu && cpuChoice && !/tiny|small/.test(variant.value)) {
    variant.value = cpuChoice.name;
    variantNote.textContent = `No GPU found: ${cpuChoice.label || cpuChoice.name} is chosen because the large model `
      + "is several times slower on a CPU (and a bigger download). You can still choose any variant.";
  }

  const form = h("form", { class: "form-grid", onsubmit: (e) => { e.preventDefault(); submit(); } },
    section("1", "Image table",
      field("CSV file", h("div", { class: "row" }, csvPath, csvButton, csvFile),
        windowMode ? null : "Upload a CSV, or type the path of a CSV on the machine running SST Desktop."),
      field("Delimiter", h("div", { class: "row" }, delimiter, delimiterNote)),
      previewBox),
    section("2", "Columns",
      field("Project name", h("div", {}, name, nameNote)),
      field("Primary key (unique per row)", primaryKey),
      field("Image path", h("div", {}, imgPath, imgPathNote, chips), "A column name, or click columns to build a template like {folder}/{file}.jpg."),
      field("Image root", h("div", {}, h("div", { class: "row" }, imageRoot, rootButton), imageRootNote), "Relative image paths are resolved from here (default: the CSV's folder)."),
      field("Group by", groupBy, "Images sharing these values form a group (e.g. a species). Leave empty for a single group.")),
    section("3", "Model",
      field("SAM2 variant", h("div", {}, variant, variantNote, modelBox)),
      field("Mask mode", maskMode, "original keeps your IDs; binary makes every object 1; position numbers objects by where they sit."),
      h("details", { class: "advanced", id: "advanced" },
        h("summary", {}, "Advanced"),
        field("Checkpoint file", h("div", { class: "row" }, checkpoint,
          windowMode ? h("button", { class: "btn", type: "button", onclick: pickCheckpoint }, "Choose…") : null),
        "A .pt file to use instead of the standard one."),
        field("Model image size", imageSize, "SAM2 works on square images of this side (1024 for released checkpoints)."),
        field("Device", device),
        field("Project folder", folder, "Where the spec and the ref_masks/ and pred_masks/ folders are written."))),
    h("aside", { class: "form-side" }, h("h3", {}, "Check"), report, create));

  root.append(h("div", { class: "page-head" }, h("h1", {}, "New project")), form);

  // ---- behaviour ----
  const config = () => ({
    name: name.value.trim(),
    csv: csvPath.value.trim(),
    delimiter: delimiter.value || null,
    primary_key: primaryKey.value,
    img_path: imgPath.value.trim(),
    image_root: imageRoot.value.trim() || null,
    group_by: [...groupBy.querySelectorAll("input:checked")].map((i) => i.value),
    sam2: variant.value,
    mask_mode: maskMode.value,
    device: device.value,
    image_size: parseInt(imageSize.value, 10) || 1024,
    folder: folder.value.trim() || null,
    checkpoint: checkpoint.value.trim() || null,
  });

  let validationSeq = 0;
  // Create is enabled only while the latest check passes: any edit disables it until the
  // check of the new values comes back.
  const validate = () => {
    validationSeq++;
    create.disabled = true;
    report.classList.add("busy");
    const ready = report.querySelector("#validation-ok"); // no "Ready" for values not yet checked
    if (ready) ready.replaceWith(h("p", { class: "muted", id: "validation-checking" }, "Checking…"));
    runValidation();
  };
  const runValidation = debounce(async () => {
    const seq = ++validationSeq;
    const cfg = config();
    if (state.uploaded && !cfg.image_root) {
      create.disabled = true;
      report.classList.remove("busy");
      report.replaceChildren(h("div", { class: "banner banner-warn" },
        "Enter the folder that holds your images (Image root): an uploaded CSV has no folder of its own."));
      return;
    }
    if (!cfg.csv || !cfg.primary_key || !cfg.img_path || !state.columns.length) {
      report.classList.remove("busy");
      create.disabled = true;
      report.replaceChildren(cfg.csv && state.csvError
        ? h("div", { class: "banner banner-error" }, "The CSV could not be read: see the message under the CSV file.")
        : h("p", { class: "muted" }, "Choose a CSV, a primary key and an image path."));
      return;
    }
    report.classList.add("busy");
    try {
      const result = await call("validate_config", cfg);
      if (seq !== validationSeq) return;
      renderReport(report, result);
      create.disabled = !result || result.ok === false;
    } catch (err) {
      if (seq !== validationSeq) return;
      create.disabled = true;
      report.replaceChildren(h("div", { class: "banner banner-error" }, err.message));
    } finally {
      if (seq === validationSeq) report.classList.remove("busy");
    }
  }, 350);

  async function loadCsv(path, { uploadedName = null } = {}) {
    csvPath.value = path;
    state.uploaded = Boolean(uploadedName);
    state.uploadedName = uploadedName;
    state.csvError = false;
    validate(); // the previous check no longer applies
    previewBox.replaceChildren(h("div", { class: "spinner" }));
    try {
      state.preview = await call("preview_csv", path, delimiter.value || null);
    } catch (err) {
      previewBox.replaceChildren(h("div", { class: "banner banner-error" }, err.message));
      state.preview = null;
      state.csvError = true;
      state.columns = [];
      // What was filled in from the previous CSV no longer applies (typed values stay).
      state.guessSeq++;
      if (name.dataset.auto === "1") { name.value = ""; checkName(); }
      if (imgPath.dataset.auto === "1") imgPath.value = "";
      imgPathNote.textContent = "";
      delimiterNote.textContent = "";
      fillColumns();
      validate();
      return;
    }
    state.columns = state.preview.columns;
    previewBox.replaceChildren(previewTable(state.preview));
    const used = state.preview.delimiter;
    const names = { ",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe" };
    delimiterNote.textContent = used === undefined ? "" : delimiter.value
      ? `fields split at each ${names[used] || used}`
      : `detected: ${names[used] || used}${state.columns.length === 1 ? " (one column: choose another delimiter if that is wrong)" : ""}`;
    if (!name.value || name.dataset.auto === "1") {
      name.value = defaultName(uploadedName || path, !uploadedName, state.projectNames);
      name.dataset.auto = "1";
      checkName();
    }
    if (state.uploaded) {
      imageRootNote.className = "field-note banner banner-warn";
      imageRootNote.textContent = "You uploaded the CSV: enter the folder on this machine that holds the images"
        + " (relative paths in the CSV start there).";
      if (!imageRoot.value) imageRoot.focus();
    } else {
      imageRootNote.className = "field-note";
      imageRootNote.textContent = "";
    }
    fillColumns();
    validate();
    guessImagePath();
  }

  function checkName() {
    const taken = name.value.trim() && state.projectNames.has(name.value.trim().toLowerCase());
    nameNote.className = taken ? "field-note banner banner-warn" : "field-note";
    nameNote.textContent = taken ? `A project named “${name.value.trim()}” already exists: choose another name to tell them apart.` : "";
  }
  name.addEventListener("input", () => { name.dataset.auto = "0"; checkName(); });

  // The image path column: of the columns that look like paths, the one whose values resolve to
  // the most existing files (asked of the server's check), not merely the first named "image".
  async function guessImagePath() {
    const seq = ++state.guessSeq;
    const cols = state.columns;
    if (!cols.length || (imgPath.value && imgPath.dataset.auto !== "1")) return;
    const rows = (state.preview && state.preview.rows) || [];
    const looksLikePath = (i) => rows.some((r) => /[\\/]|\.(jpe?g|png|tiff?|bmp|webp|gif)$/i.test(String(r[i] ?? "")));
    const named = (c) => /path|file|image|img|photo|pic/i.test(c);
    const candidates = cols.filter((c, i) => looksLikePath(i) || named(c)).slice(0, 8);
    if (!candidates.length) return;
    const results = [];
    for (const c of candidates) {
      try {
        const r = await call("validate_config", { ...config(), group_by: [], img_path: c });
        results.push({ column: c, found: r.images_found || 0, total: (r.images_found || 0) + (r.images_missing || 0) });
      } catch (_) {
        results.push({ column: c, found: 0, total: 0 });
      }
      if (seq !== state.guessSeq || (imgPath.value && imgPath.dataset.auto !== "1")) return;
    }
    const best = results.reduce((a, b) => (b.found > a.found ? b : a));
    const pick = best.found > 0 ? best : results.find((r) => named(r.column)) || best;
    imgPath.value = pick.column;
    imgPath.dataset.auto = "1";
    const others = results.filter((r) => r !== pick).map((r) => `${r.column}: ${r.found}`).join(", ");
    imgPathNote.textContent = pick.found > 0
      ? `Chose ${pick.column}: its values point to ${pick.found} of ${pick.total} existing images${others ? ` (${others})` : ""}.`
      : `No column points to existing images yet${state.uploaded ? " (enter the Image root)" : ""}; guessed ${pick.column} from its name.`;
    validate();
  }

  function fillColumns() {
    const cols = state.columns;
    primaryKey.replaceChildren(...cols.map((c) => h("option", { value: c }, c)));
    const guessKey = cols.find((c) => /^(pk|id|key|.*_id|.*key)$/i.test(c)) || cols[0];
    if (guessKey) primaryKey.value = guessKey;
    chips.replaceChildren(...cols.map((c) => h("button", { type: "button", class: "chip", title: `Insert {${c}} at the cursor`,
      onclick: () => insertAtCursor(imgPath, `{${c}}`) }, `{${c}}`)));
    groupBy.replaceChildren(...(cols.length ? cols.map((c) => h("label", { class: "chip chip-check" },
      h("input", { type: "checkbox", value: c, onchange: validate }), h("span", {}, c))) : [h("span", { class: "muted" }, "No columns yet")]));
  }

  function insertAtCursor(input, text) {
    const start = input.selectionStart ?? input.value.length;
    const end = input.selectionEnd ?? input.value.length;
    input.value = input.value.slice(0, start) + text + input.value.slice(end);
    input.focus();
    input.setSelectionRange(start + text.length, start + text.length);
    validate();
  }

  csvButton.addEventListener("click", async () => {
    if (windowMode) {
      try {
        const picked = await call("pick_file", "csv");
        if (picked && picked.path) await loadCsv(picked.path);
      } catch (err) { showError(err); }
    } else {
      csvFile.click();
    }
  });
  csvFile.addEventListener("change", async () => {
    const file = csvFile.files[0];
    if (!file) return;
    try {
      const b64 = await fileToBase64(file);
      const uploaded = await call("upload_file", file.name, b64);
      await loadCsv(uploaded.path, { uploadedName: file.name });
    } catch (err) { showError(err); }
  });
  csvPath.addEventListener("change", () => { if (csvPath.value.trim()) loadCsv(csvPath.value.trim()); });
  delimiter.addEventListener("change", () => {
    if (!csvPath.value.trim()) return;
    // Columns change with the delimiter: the image column is guessed again unless typed.
    if (imgPath.dataset.auto === "1") imgPath.value = "";
    loadCsv(csvPath.value.trim(), { uploadedName: state.uploadedName });
  });
  if (rootButton) {
    rootButton.addEventListener("click", async () => {
      try {
        const picked = await call("pick_folder");
        if (picked && picked.path) { imageRoot.value = picked.path; validate(); }
      } catch (err) { showError(err); }
    });
  }
  async function pickCheckpoint() {
    try {
      const picked = await call("pick_file", "checkpoint");
      if (picked && picked.path) { checkpoint.value = picked.path; refreshModel(); }
    } catch (err) { showError(err); }
  }
  for (const el of [name, csvPath, imgPath, imageRoot, folder, imageSize, checkpoint]) el.addEventListener("input", validate);
  imgPath.addEventListener("input", () => { imgPath.dataset.auto = "0"; imgPathNote.textContent = ""; });
  // After an upload the image folder decides which column resolves: guess again once it is given.
  imageRoot.addEventListener("change", () => { if (imgPath.dataset.auto === "1") guessImagePath(); });
  for (const el of [primaryKey, maskMode, device]) el.addEventListener("change", validate);
  variant.addEventListener("change", () => { refreshModel(); validate(); });
  checkpoint.addEventListener("input", debounce(refreshModel, 300));

  async function refreshModel() {
    if (checkpoint.value.trim()) {
      modelBox.replaceChildren(h("span", { class: "badge badge-ok" }, "custom checkpoint"), " ", h("code", {}, checkpoint.value.trim()));
      return;
    }
    modelBox.replaceChildren(h("span", { class: "muted" }, "checking…"));
    let status;
    try {
      status = await call("model_status", variant.value);
    } catch (err) {
      modelBox.replaceChildren(h("span", { class: "badge badge-warn" }, err.message));
      return;
    }
    if (status.present) {
      modelBox.replaceChildren(h("span", { class: "badge badge-ok" }, "checkpoint present"), " ", h("code", { class: "small" }, status.path || ""));
      return;
    }
    const download = h("button", { class: "btn", type: "button", title: "Download the official checkpoint" }, `Download (~${status.approx_mb} MB)`);
    const pick = h("button", { class: "btn btn-ghost", type: "button", title: "Use a checkpoint file you already have" }, "Use a file…");
    pick.addEventListener("click", () => {
      if (windowMode) pickCheckpoint();
      else { document.getElementById("advanced").open = true; checkpoint.focus(); }
    });
    download.addEventListener("click", () => downloadModel(variant.value));
    modelBox.replaceChildren(h("span", { class: "badge badge-warn" }, "not downloaded"), " ", download, " ", pick,
      h("p", { class: "muted small" }, "You can create the project now and download later; labelling needs the model."));
  }

  async function downloadModel(name) {
    const bar = h("div", {}, progressBar(0, 1));
    const text = h("span", { class: "small muted" }, "starting…");
    modelBox.replaceChildren(h("div", { class: "download" }, bar, text));
    try {
      const { job_id } = await call("download_model", name);
      await pollJob(job_id, (s) => {
        bar.replaceChildren(progressBar(s.done || 0, s.total || 1));
        const mb = (n) => (n / 1e6).toFixed(0);
        text.textContent = s.total ? `${mb(s.done)} / ${mb(s.total)} MB ${s.message || ""}` : s.message || "";
      });
      toast("Checkpoint downloaded", "success");
    } catch (err) {
      showError(err);
    }
    refreshModel();
  }

  async function submit() {
    create.disabled = true;
    const cfg = config();
    try {
      const project = await call("create_project", cfg);
      toast(`Project “${project.name}” created`, "success");
      window.location.hash = `#/p/${enc(project.id)}`;
    } catch (err) {
      showError(err);
      create.disabled = false;
    }
  }

  fillColumns();
  refreshModel();
}

const GENERIC_STEMS = /^(master|data|metadata|meta|images?|index|table|export|list|sheet\d*|book\d*|untitled|specimens?)$/i;

/** A project name from the CSV: its stem, or its folder's name when the stem says nothing ("master"). */
function defaultName(path, hasFolder, taken) {
  const parts = String(path).split(/[\\/]/).filter(Boolean);
  const stem = (parts.pop() || "").replace(/\.[^.]*$/, "");
  const folder = hasFolder ? parts.pop() || "" : "";
  let base = GENERIC_STEMS.test(stem) && folder ? folder : stem;
  base = base || "New project";
  let candidate = base;
  for (let n = 2; taken.has(candidate.toLowerCase()); n++) candidate = `${base} ${n}`;
  return candidate;
}

function section(num, title, ...children) {
  return h("fieldset", { class: "card form-section" }, h("legend", {}, h("span", { class: "step" }, num), title), ...children);
}

function field(labelText, control, hint) {
  const id = control.id || (control.querySelector && control.querySelector("input,select") || {}).id;
  return h("div", { class: "field" },
    h("label", { for: id || null }, labelText), control, hint ? h("p", { class: "hint" }, hint) : null);
}

function previewTable(preview) {
  return h("div", {},
    h("p", { class: "muted small" }, `${plural(preview.n_rows, "row")}, ${plural(preview.columns.length, "column")}; first rows:`),
    h("div", { class: "table-scroll" },
      h("table", { class: "table", id: "csv-table" },
        h("thead", {}, h("tr", {}, preview.columns.map((c) => h("th", {}, c)))),
        h("tbody", {}, preview.rows.map((r) => h("tr", {}, r.map((v) => h("td", { title: v ?? "" }, v ?? ""))))))));
}

function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).replace(/^data:[^,]*,/, ""));
    reader.onerror = () => reject(new Error(`Cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

/** Render a ValidationReport dict (project.ValidationReport.to_dict()). */
function renderReport(box, r) {
  const items = [];
  const errors = r.errors || [];
  const warnings = r.warnings || [];
  const facts = [["Rows", r.rows ?? r.n_rows]];
  const sizes = (r.group_sizes || []).map((g) => g.size);
  const lo = Math.min(...sizes);
  const hi = Math.max(...sizes);
  const range = sizes.length ? ` (${lo === hi ? lo : `${lo}–${hi}`} images each)` : "";
  facts.push(["Groups", `${r.groups ?? 0}${range}`]);
  facts.push(["Images found", r.images_found ?? 0]);
  facts.push(["Images missing", r.images_missing ?? 0]);
  if (r.duplicate_key_count) facts.push(["Duplicate keys", r.duplicate_key_count]);
  if (r.blank_keys) facts.push(["Blank keys", r.blank_keys]);
  if (r.unreadable_count) facts.push(["Unreadable images", r.unreadable_count]);
  items.push(h("dl", { class: "facts", id: "validation-facts" }, facts.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k),
    h("dd", { class: /missing|Duplicate|Blank|Unreadable/.test(k) && Number(v) > 0 ? "warn" : "", "data-fact": k }, String(v))])));
  const resolved = r.path_examples || [];
  if (resolved.length) {
    // What the image path (column, template or SQL expression) gives for the first rows.
    items.push(h("div", { class: "examples", id: "path-examples" }, h("p", { class: "small" }, "Image paths of the first rows:"),
      h("ul", {}, resolved.slice(0, 3).map((e) => h("li", {}, h("code", {}, String(e)))))));
  }
  const examples = r.missing_examples || [];
  if (examples.length) {
    items.push(h("div", { class: "examples" }, h("p", { class: "small" }, "Missing, for example:"),
      h("ul", {}, examples.slice(0, 5).map((e) => h("li", {}, h("code", {}, String(e)))))));
  }
  const dups = r.duplicate_keys || [];
  if (dups.length) {
    items.push(h("div", { class: "examples" }, h("p", { class: "small" }, "Duplicate keys:"),
      h("ul", {}, dups.slice(0, 5).map((d) => h("li", {}, h("code", {}, String(d.key)),
        d.rows ? ` rows ${[].concat(d.rows).slice(0, 4).join(", ")}` : "")))));
  }
  for (const u of (r.unreadable || []).slice(0, 3)) items.push(h("div", { class: "banner banner-warn" }, `${u.path}: ${u.error}`));
  for (const e of errors) items.push(h("div", { class: "banner banner-error" }, e));
  for (const w of warnings) items.push(h("div", { class: "banner banner-warn" }, w));
  if (r.ok !== false && !errors.length) items.unshift(h("div", { class: "banner banner-ok", id: "validation-ok" }, "Ready to create."));
  box.replaceChildren(...items);
}
