// Gallery (paged grid with product boxes) and the similar-images view of one image.

import * as api from "./api.js";
import {
  el,
  errorText,
  figure,
  fmt,
  imageHref,
  listItem,
  modeToggle,
  notice,
  recordBoxes,
  resultList,
  SCORE_HELP,
  typing,
} from "./ui.js";

const PAGE_SIZES = [12, 24, 48, 96];
const DEFAULT_SIZE = 24;
let lastGallery = "#/gallery";
let focusNext = null; // "first" | "last" | index to focus after a page change
let returnTo = null; // id of the image whose neighbours were shown: focused back in the grid

const galleryHref = (page, size, mode) => {
  const q = new URLSearchParams({ page: String(page) });
  if (size !== DEFAULT_SIZE) q.set("size", String(size));
  if (mode && mode !== "unsupervised") q.set("mode", mode);
  return `#/gallery?${q}`;
};

async function pickMode(requested) {
  const available = await api.modes();
  const mode = available.includes(requested)
    ? requested
    : available.includes("unsupervised")
      ? "unsupervised"
      : available[0] || requested;
  return { mode, available };
}

/** Move focus between cards with the arrow keys, row-aware (uses the rendered layout). */
function moveFocus(cards, index, key) {
  if (!cards.length) return;
  const tops = cards.map((c) => c.offsetTop);
  const perRow = Math.max(1, tops.filter((t) => t === tops[0]).length);
  let next = index;
  if (key === "ArrowRight") next = index + 1;
  else if (key === "ArrowLeft") next = index - 1;
  else if (key === "ArrowDown") next = index + perRow;
  else if (key === "ArrowUp") next = index - perRow;
  else if (key === "Home") next = 0;
  else if (key === "End") next = cards.length - 1;
  next = Math.max(0, Math.min(cards.length - 1, index < 0 ? 0 : next));
  cards[next].focus();
}

const ARROWS = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "Home", "End"];

export async function renderGallery(main, ctx) {
  const q = ctx.query;
  const size = PAGE_SIZES.includes(Number(q.get("size"))) ? Number(q.get("size")) : DEFAULT_SIZE;
  let page = Math.max(1, parseInt(q.get("page") || "1", 10) || 1);
  const { mode, available } = await pickMode(q.get("mode") || "unsupervised");
  const data = await api.listImages((page - 1) * size, size);
  if (!ctx.alive()) return;
  const pages = Math.max(1, Math.ceil(data.total / size));
  if (page > pages && data.total > 0) {
    location.replace(galleryHref(pages, size, mode));
    return;
  }
  lastGallery = location.hash || "#/gallery";

  const go = (p) => {
    const target = Math.max(1, Math.min(pages, p));
    if (target !== page) location.hash = galleryHref(target, size, mode);
  };

  const sizeSelect = el(
    "select#page-size",
    { "aria-label": "Images per page" },
    PAGE_SIZES.map((n) => el("option", { value: n, selected: n === size }, `${n} per page`)),
  );
  sizeSelect.addEventListener("change", () => {
    const n = Number(sizeSelect.value);
    const firstIndex = (page - 1) * size;
    location.hash = galleryHref(Math.floor(firstIndex / n) + 1, n, mode);
  });

  // A link to the page shown is disabled: without href it also leaves the Tab order.
  const pageLink = (target, label, text, rel = null) => {
    const off = target === page;
    return el("a.btn", { href: off ? null : galleryHref(target, size, mode), rel, "aria-disabled": off ? "true" : null, "aria-label": label }, text);
  };
  const pager = (where) =>
    el(
      "nav.pager",
      { "aria-label": `Pages (${where})` },
      pageLink(1, "First page", "«"),
      pageLink(Math.max(1, page - 1), "Previous page", "‹ Prev", "prev"),
      el("span.page-info", { "aria-live": "polite" }, `Page ${page} of ${pages}`),
      pageLink(Math.min(pages, page + 1), "Next page", "Next ›", "next"),
      pageLink(pages, "Last page", "»"),
    );

  const grid = el("div.grid#gallery-grid", { role: "list", "aria-label": "Catalog images" });
  for (const rec of data.images) {
    const label = `${rec.id}${rec.box ? ", annotated" : ""}`;
    grid.append(listItem(
      el(
        "a.card.tile",
        { href: imageHref(rec.id, mode), dataset: { id: rec.id }, "aria-label": `${label}: show similar images` },
        el("div.frame", {}, figure(api.thumbUrl(rec.id), rec.width, rec.height, recordBoxes(rec), label)),
        el(
          "div.caption",
          {},
          el("span.name", { title: rec.id }, rec.id),
          rec.box
            ? el("span.chip.annotated", { title: "box annotated by hand" }, "box")
            : rec.detection && !rec.detection.fallback
              ? el("span.chip.detected", { title: `detected, p=${fmt(rec.detection.score)}` }, "auto")
              : null,
        ),
      ),
    ));
  }

  const first = data.total ? (page - 1) * size + 1 : 0;
  main.append(
    el(
      "div.page-head",
      {},
      el("h1", {}, "Gallery"),
      el("p.muted", {}, data.total ? `Images ${first}–${first + data.images.length - 1} of ${data.total}` : ""),
      el(
        "div.toolbar",
        {},
        el("span.label", {}, "Open similar as"),
        modeToggle(mode, available, (m) => (location.hash = galleryHref(page, size, m))),
        sizeSelect,
      ),
    ),
    data.total
      ? grid
      : notice("The catalog is empty. Add images with `tiefjax init WORKSPACE --images DIR`.", "info"),
    ...(data.total ? [pager("bottom")] : []),
    el(
      "p.hint",
      {},
      "Keys: arrows move, Enter opens, PageUp/PageDown change page. ",
      el("span.legend.annotated", {}, "annotated box"),
      " ",
      el("span.legend.detected", {}, "detected box"),
    ),
  );
  main.querySelector(".page-head").after(pager("top"));

  const cards = [...grid.querySelectorAll(".card")];
  const back = returnTo ? cards.find((c) => c.dataset.id === returnTo) : null;
  returnTo = null;
  if (back) back.focus();
  else if (focusNext !== null && cards.length) {
    const i = focusNext === "last" ? cards.length - 1 : focusNext === "first" ? 0 : Math.min(focusNext, cards.length - 1);
    cards[i].focus();
  }
  focusNext = null;

  const onKey = (event) => {
    if (typing(event) || event.altKey || event.ctrlKey || event.metaKey) return;
    const index = cards.indexOf(document.activeElement);
    if (ARROWS.includes(event.key)) {
      event.preventDefault();
      if (index < 0) (event.key === "End" ? cards[cards.length - 1] : cards[0])?.focus();
      else moveFocus(cards, index, event.key);
    } else if (event.key === "PageDown" && page < pages) {
      event.preventDefault();
      focusNext = "first";
      go(page + 1);
    } else if (event.key === "PageUp" && page > 1) {
      event.preventDefault();
      focusNext = "first";
      go(page - 1);
    }
  };
  document.addEventListener("keydown", onKey);
  return () => document.removeEventListener("keydown", onKey);
}

export async function renderImage(main, ctx) {
  const id = ctx.parts[0];
  if (!id) {
    location.replace("#/gallery");
    return;
  }
  const back = lastGallery;
  returnTo = id;
  // Keys work from the start (Esc while the results are still loading), arrows once cards exist.
  let cards = [];
  const onKey = (event) => {
    if (typing(event) || event.altKey || event.ctrlKey || event.metaKey) return;
    if (event.key === "Escape" && !document.querySelector("dialog[open]")) {
      event.preventDefault();
      location.hash = back;
    } else if (ARROWS.includes(event.key) && cards.length) {
      event.preventDefault();
      const index = cards.indexOf(document.activeElement);
      if (index < 0) cards[0].focus();
      else moveFocus(cards, index, event.key);
    }
  };
  document.addEventListener("keydown", onKey);
  const detach = () => document.removeEventListener("keydown", onKey);
  const { mode, available } = await pickMode(ctx.query.get("mode") || "unsupervised");
  if (!ctx.alive()) return detach;

  const header = el(
    "div.page-head",
    {},
    el("a.btn.back", { href: back, "aria-label": "Back to the gallery (Esc)" }, "← Gallery"),
    el("h1", {}, "Similar images"),
    el("div.toolbar", {}, modeToggle(mode, available, (m) => location.replace(imageHref(id, m)))),
  );
  const results = el("section.results", { "aria-label": "Similar images", "aria-busy": "true" }, el("p.muted", {}, "Searching…"));
  const refPanel = el("section.panel.reference", { "aria-label": "Query image" }, el("p.muted", {}, "Loading…"));
  main.append(header, el("div.split", {}, refPanel, results));

  let rec = null;
  try {
    rec = await api.getImage(id);
  } catch (e) {
    refPanel.replaceChildren(notice(errorText(e), "error"));
  }
  if (!ctx.alive()) return detach;
  if (rec) {
    const box = rec.box
      ? `annotated box ${rec.box.left}, ${rec.box.top} – ${rec.box.right}, ${rec.box.bottom}`
      : rec.detection
        ? rec.detection.fallback
          ? "no product found (whole image used)"
          : `detected product, p=${fmt(rec.detection.score)}`
        : "no box";
    refPanel.replaceChildren(
      el("div.frame.large", {}, figure(api.imageUrl(id), rec.width, rec.height, recordBoxes(rec), `${id} (query image)`)),
      el("h2.ref-name", { title: id }, id),
      el("p.muted", {}, `${rec.width} × ${rec.height} px · ${box}`),
      ...(api.isStatic()
        ? []
        : [el(
            "p.actions",
            {},
            el("a.btn", { href: `#/boxes/${encodeURIComponent(id)}` }, "Edit box"),
            el("a.btn", { href: `#/similarity/${encodeURIComponent(id)}` }, "Judge similar images"),
          )]),
    );
  }

  if (!available.length) {
    results.replaceChildren(notice("No search index yet. Build one with `tiefjax index WORKSPACE`.", "warn"));
  } else {
    try {
      const k = api.isStatic() ? api.staticManifest().k || 10 : 12;
      const res = await api.similar(id, mode, k);
      const recs = await api.records(res.hits.map((h) => h.id));
      if (!ctx.alive()) return detach;
      const grid = resultList(res.hits, recs, { id: "similar-grid", label: `Images similar to ${id}`, mode });
      results.replaceChildren(
        el("h2.sr-only", {}, "Results"),
        ...(res.hits.length ? [el("p.hint.score-help", {}, SCORE_HELP), grid] : [notice("No similar images found.", "info")]),
      );
      cards = [...grid.querySelectorAll(".card")];
    } catch (e) {
      if (!ctx.alive()) return detach;
      results.replaceChildren(notice(errorText(e), "error"));
    }
  }
  results.setAttribute("aria-busy", "false");
  return detach;
}
