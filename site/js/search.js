// Search by picture: drag & drop, file picker or paste; shows the detected box and the results.

import * as api from "./api.js";
import { el, errorText, figure, fmt, modeToggle, notice, resultList, scoreHelp, skeletonGrid, staticNotice } from "./ui.js";

const ACCEPT = "image/jpeg,image/png,image/webp";
let mode = "unsupervised";
let last = null; // {file, url, result} survives a mode switch

export async function render(main, ctx) {
  main.append(el("div.page-head", {}, el("h1", {}, "Search by picture")));
  if (api.isStatic()) {
    main.append(staticNotice("Search by upload"));
    return;
  }
  const available = await api.modes();
  if (!ctx.alive()) return;
  if (!available.includes(mode)) mode = available[0] || "unsupervised";

  const input = el("input#search-file.visually-hidden", { type: "file", accept: ACCEPT });
  const drop = el(
    "label.dropzone#dropzone",
    { for: "search-file", tabindex: "0", "aria-describedby": "drop-help" },
    el("span.drop-icon", { "aria-hidden": "true" }, "⤓"),
    el("strong", {}, "Drop a product photo here"),
    el("span#drop-help.muted", {}, "or click to choose a file, or paste an image (Ctrl+V). JPEG, PNG or WebP."),
  );
  const toggleSlot = el("div.toolbar");
  const status = el("div#search-status", { "aria-live": "polite" });
  const query = el("section.panel.reference#search-query", { "aria-label": "Your picture", hidden: true });
  const results = el("section.results#search-results", { "aria-label": "Results" });
  main.querySelector(".page-head").append(toggleSlot);
  main.append(el("div.search-top", {}, input, drop), status, el("div.split", {}, query, results));

  const drawToggle = () =>
    toggleSlot.replaceChildren(
      el("span.label", {}, "Mode"),
      modeToggle(mode, available, (m) => {
        mode = m;
        drawToggle();
        if (last) run(last.file);
      }),
    );
  drawToggle();

  let seq = 0;
  async function run(file) {
    const mine = ++seq;
    if (!file) return;
    if (file.type && !ACCEPT.split(",").includes(file.type)) {
      status.replaceChildren(notice(`"${file.name || "pasted data"}" is ${file.type}, not a JPEG, PNG or WebP picture.`, "error"));
      return;
    }
    if (!last || last.file !== file) {
      if (last) URL.revokeObjectURL(last.url);
      last = { file, url: URL.createObjectURL(file), result: null };
    }
    // upload progress, then "searching" until the answer: a big photo on a slow link takes a while
    const bar = el("progress#upload-progress", { max: "100", value: "0", "aria-label": "Upload progress" });
    const phase = el("span", {}, "Uploading…");
    status.replaceChildren(el("p.muted.busy#search-phase", {}, bar, " ", phase));
    results.setAttribute("aria-busy", "true");
    results.replaceChildren(skeletonGrid(12, "Searching…"));
    const progress = (step, fraction) => {
      if (mine !== seq) return;
      bar.value = Math.round(fraction * 100);
      phase.textContent = step === "upload" ? `Uploading ${Math.round(fraction * 100)}%…` : `Uploaded; searching (${mode})…`;
    };
    try {
      const res = await api.search(file, mode, 12, progress);
      const recs = await api.records(res.hits.map((h) => h.id));
      if (mine !== seq || !ctx.alive()) return;
      last.result = { ...res, recs };
      show(last.result);
      status.replaceChildren();
    } catch (e) {
      if (mine !== seq || !ctx.alive()) return;
      query.hidden = true;
      results.replaceChildren();
      status.replaceChildren(notice(errorText(e), "error"));
    } finally {
      results.setAttribute("aria-busy", "false");
    }
  }

  function show(res) {
    const what = res.fallback
      ? "No product found with confidence — the whole picture was used."
      : `Box from the locator, p = ${fmt(res.probability)}: its classifier's confidence, learnt from catalog photos only, so it is no proof that the picture shows a product.`;
    query.hidden = false;
    query.replaceChildren(
      el("div.frame.large", {}, figure(last.url, res.width, res.height, [{ box: res.box, kind: res.fallback ? "detected" : "query", label: what }], "your picture with the detected product box")),
      el("h2.ref-name", {}, last.file.name || "pasted image"),
      el("p.muted#search-detection", {}, `${res.width} × ${res.height} px · ${what}`),
      ...(res.copy_of
        ? [el("p.notice.info#search-copy", {}, `A copy of catalog image ${res.copy_of}: its photo lines up with your picture pixel for pixel (match ${fmt(res.copy_score)}), so it comes first.`)]
        : []),
    );
    const grid = resultList(res.hits, res.recs, { id: "search-grid", label: "Similar catalog images", mode: res.mode || mode });
    results.replaceChildren(
      ...(res.hits.length ? [el("p.hint.score-help", {}, scoreHelp(res.mode || mode)), grid] : [notice("No similar images in the catalog.", "info")]),
    );
  }

  input.addEventListener("change", () => run(input.files[0]));
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      input.click();
    }
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "dragend"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = [...(e.dataTransfer?.files || [])][0];
    if (file) run(file);
    else status.replaceChildren(notice("Drop a picture file (JPEG, PNG or WebP).", "error"));
  });
  const onPaste = (e) => {
    const item = [...(e.clipboardData?.items || [])].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (!item) return;
    e.preventDefault();
    run(item.getAsFile());
  };
  document.addEventListener("paste", onPaste);
  if (last && last.result) show(last.result);
  return () => document.removeEventListener("paste", onPaste);
}
