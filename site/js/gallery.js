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
  scoreHelp,
  skeletonGrid,
  typing,
} from "./ui.js";

const PAGE_SIZES = [12, 24, 48, 96];
const DEFAULT_SIZE = 24;
let lastGallery = "#/gallery";
let focusNext = null; // "first" | "last" | index to focus after a page change
let returnTo = null; // id of the image whose neighbours were shown: focused back in the grid
let refocusSearch = false; // the id filter was being typed in: keep the caret there

/** The gallery's filters and sorts (GET /api/images), their choices and their defaults. */
const FILTERS = {
  q: { default: "" },
  match: { default: "substring", options: [["substring", "contains"], ["prefix", "starts with"]] },
  state: {
    default: "all",
    options: [["all", "All images"], ["annotated", "Annotated"], ["detected", "Detected, no box"], ["none", "Neither"]],
  },
  sort: {
    default: "id",
    options: [["id", "Id"], ["probability", "Foreground probability"], ["iou", "Detection vs box (IoU)"]],
  },
  order: { default: "asc", options: [["asc", "Ascending"], ["desc", "Descending"]] },
};
const SORTED_ONLY = {
  probability: "sorted by the locator's foreground probability: only located images are listed",
  iou: "sorted by the overlap (IoU) of detected and annotated box: only images with both are listed",
};

/** The filters of a gallery hash; an unknown value falls back to its default. */
function readFilters(query) {
  const out = {};
  for (const [key, spec] of Object.entries(FILTERS)) {
    const value = query.get(key) ?? spec.default;
    out[key] = !spec.options || spec.options.some(([v]) => v === value) ? value : spec.default;
  }
  return out;
}

/** The filters that differ from their defaults (what the URL and the API get). */
const changedFilters = (filters) =>
  Object.fromEntries(Object.entries(filters).filter(([key, value]) => value !== FILTERS[key].default));

const galleryHref = (page, size, mode, filters = {}, select = false) => {
  const q = new URLSearchParams({ page: String(page) });
  if (size !== DEFAULT_SIZE) q.set("size", String(size));
  if (mode && mode !== "unsupervised") q.set("mode", mode);
  for (const [key, value] of Object.entries(changedFilters({ ...readFilters(new URLSearchParams()), ...filters }))) q.set(key, value);
  if (select) q.set("select", "1");
  return `#/gallery?${q}`;
};

const iou = (a, b) => {
  const w = Math.max(0, Math.min(a.right, b.right) - Math.max(a.left, b.left));
  const h = Math.max(0, Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top));
  const area = (r) => (r.right - r.left) * (r.bottom - r.top);
  return (w * h) / (area(a) + area(b) - w * h);
};

const SKIPPED = {
  has_box: "had a box already",
  no_detection: "were never located",
  no_product: "had no product found (the locator used the whole photo)",
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
  const page = Math.max(1, parseInt(q.get("page") || "1", 10) || 1);
  const filters = readFilters(q);
  const live = !api.isStatic();
  const asked = changedFilters(filters);
  const selecting = live && q.get("select") === "1";
  const loading = skeletonGrid(size, "Loading images…");
  main.append(el("div.page-head", {}, el("h1", {}, "Gallery")), loading);
  const { mode, available } = await pickMode(q.get("mode") || "unsupervised");
  if (!ctx.alive()) return;
  const href = (p, f = filters, sel = selecting) => galleryHref(p, size, mode, f, sel);
  const load = () => api.listImages((page - 1) * size, size, live ? asked : {});
  let data = await load();
  if (!ctx.alive()) return;
  const pages = () => Math.max(1, Math.ceil(data.total / size));
  if (page > pages() && data.total > 0) {
    location.replace(href(pages()));
    return;
  }
  lastGallery = location.hash || "#/gallery";
  main.replaceChildren();

  const go = (p) => {
    const target = Math.max(1, Math.min(pages(), p));
    if (target !== page) location.hash = href(target);
  };

  const sizeSelect = el(
    "select#page-size",
    { "aria-label": "Images per page" },
    PAGE_SIZES.map((n) => el("option", { value: n, selected: n === size }, `${n} per page`)),
  );
  sizeSelect.addEventListener("change", () => {
    const n = Number(sizeSelect.value);
    location.hash = galleryHref(Math.floor(((page - 1) * size) / n) + 1, n, mode, filters, selecting);
  });

  // filters and sorts: every change is a new hash (page 1), so links and reloads keep them
  const setFilter = (key, value) => (location.hash = href(1, { ...filters, [key]: value }));
  const choice = (key, label) => {
    const select = el(
      `select#gallery-${key}`,
      { "aria-label": label, disabled: !live },
      FILTERS[key].options.map(([value, text]) => el("option", { value, selected: value === filters[key] }, text)),
    );
    select.addEventListener("change", () => setFilter(key, select.value));
    return select;
  };
  const search = el("input#gallery-q", { type: "search", value: filters.q, placeholder: "Filter by id", "aria-label": "Filter by id", disabled: !live, maxlength: "200" });
  let typingTimer = null;
  let gone = false; // left (the input's change event comes as it is removed)
  const applySearch = () => {
    clearTimeout(typingTimer);
    if (!gone && search.value !== filters.q) {
      refocusSearch = document.activeElement === search;
      setFilter("q", search.value);
    }
  };
  search.addEventListener("input", () => {
    clearTimeout(typingTimer);
    typingTimer = setTimeout(applySearch, 350);
  });
  search.addEventListener("change", applySearch);
  const filterBar = el(
    "form.filters#gallery-filters",
    { role: "search", "aria-label": "Filter and sort the gallery", onsubmit: (e) => (e.preventDefault(), applySearch()) },
    search,
    choice("match", "How the id text matches"),
    choice("state", "Show"),
    el("span.label", {}, "Sort"),
    choice("sort", "Sort by"),
    choice("order", "Sort order"),
    Object.keys(asked).length && live ? el("a.btn.small#clear-filters", { href: galleryHref(1, size, mode, {}, selecting) }, "Clear") : null,
  );
  const staticNote = live
    ? null
    : notice(
        Object.keys(asked).length
          ? `This link asks for ${Object.entries(asked).map(([k, v]) => `${k}=${v}`).join(", ")}, but filters and sorts are not available in the static export (they need the tiefjax server): showing every image by id.`
          : "Filters and sorts are not available in the static export (they need the tiefjax server); images are listed by id.",
        Object.keys(asked).length ? "warn" : "info",
      );

  // bulk review: pick cards, then save their detected boxes as annotated boxes
  const picked = new Set();
  const selectToggle = live
    ? el("a.btn#select-mode", { href: href(page, filters, !selecting), "aria-pressed": selecting ? "true" : "false" }, selecting ? "Done selecting" : "Select")
    : null;
  const bulkCount = el("span#bulk-count", { "aria-live": "polite" });
  const acceptButton = el("button.btn.primary#accept-detections", { type: "button", disabled: true }, "Accept detections as boxes");
  const bulkMessage = el("div#bulk-message");
  const bulkBar = selecting
    ? el(
        "div.bulk-bar#bulk-bar",
        { role: "region", "aria-label": "Bulk review" },
        bulkCount,
        el("button.btn.small#select-detected", { type: "button", onclick: () => pickWhere((r) => !r.box && located(r)) }, "Select detected, no box"),
        el("button.btn.small#select-all", { type: "button", onclick: () => pickWhere(() => true) }, "Select all on page"),
        el("button.btn.small#select-none", { type: "button", onclick: () => pickWhere(() => false) }, "Clear selection"),
        acceptButton,
        bulkMessage,
      )
    : null;
  const located = (r) => r.detection && !r.detection.fallback;
  const showPicked = () => {
    bulkCount.textContent = `${picked.size} selected`;
    acceptButton.disabled = picked.size === 0;
    for (const box of main.querySelectorAll("input.pick")) box.checked = picked.has(box.dataset.id);
  };
  const pickWhere = (test) => {
    picked.clear();
    for (const r of data.images) if (test(r)) picked.add(r.id);
    showPicked();
  };

  const count = el("p.muted#gallery-count");
  const gridSlot = el("div#gallery-body");
  const pagerTop = el("div.pager-slot");
  const pagerBottom = el("div.pager-slot");
  main.append(
    el(
      "div.page-head",
      {},
      el("h1", {}, "Gallery"),
      count,
      filterBar,
      el(
        "div.toolbar",
        {},
        el("span.label", {}, "Open similar as"),
        modeToggle(mode, available, (m) => (location.hash = galleryHref(page, size, m, filters, selecting))),
        selectToggle,
        sizeSelect,
      ),
    ),
    ...[staticNote, pagerTop, bulkBar].filter(Boolean), // main.append would write "null"
    gridSlot,
    pagerBottom,
    el(
      "p.hint",
      {},
      "Keys: arrows move, Enter opens, PageUp/PageDown change page. ",
      el("span.legend.annotated", {}, "annotated box"),
      " ",
      el("span.legend.detected", {}, "detected box"),
    ),
  );
  if (refocusSearch && live) {
    search.focus();
    search.setSelectionRange(search.value.length, search.value.length);
  }
  refocusSearch = false;

  // A link to the page shown is disabled: without href it also leaves the Tab order.
  const pageLink = (target, label, text, rel = null) => {
    const off = target === page;
    return el("a.btn", { href: off ? null : href(target), rel, "aria-disabled": off ? "true" : null, "aria-label": label }, text);
  };
  const pager = (where) =>
    el(
      "nav.pager",
      { "aria-label": `Pages (${where})` },
      pageLink(1, "First page", "«"),
      pageLink(Math.max(1, page - 1), "Previous page", "‹ Prev", "prev"),
      el("span.page-info", { "aria-live": "polite" }, `Page ${page} of ${pages()}`),
      pageLink(Math.min(pages(), page + 1), "Next page", "Next ›", "next"),
      pageLink(pages(), "Last page", "»"),
    );

  const card = (rec) => {
    const label = `${rec.id}${rec.box ? ", annotated" : ""}`;
    const d = rec.detection;
    const value =
      filters.sort === "probability" && d
        ? el("span.chip.value", { title: "the locator's foreground probability" }, `p ${fmt(d.score, 2)}`)
        : filters.sort === "iou" && d && rec.box
          ? el("span.chip.value", { title: "overlap (IoU) of the detected and the annotated box" }, `IoU ${fmt(iou(rec.box, d), 2)}`)
          : null;
    const link = el(
      "a.card.tile",
      { href: imageHref(rec.id, mode), dataset: { id: rec.id }, "aria-label": `${label}: show similar images` },
      el("div.frame", {}, figure(api.thumbUrl(rec.id), rec.width, rec.height, recordBoxes(rec), label)),
      el(
        "div.caption",
        {},
        el("span.name", { title: rec.id }, rec.id),
        value,
        rec.box
          ? el("span.chip.annotated", { title: "box annotated by hand" }, "box")
          : located(rec)
            ? el("span.chip.detected", { title: `detected, p=${fmt(d.score)}` }, "auto")
            : null,
      ),
    );
    if (!selecting) return listItem(link);
    const pick = el("input.pick", { type: "checkbox", dataset: { id: rec.id }, "aria-label": `Select ${rec.id}` });
    pick.addEventListener("change", () => {
      if (pick.checked) picked.add(rec.id);
      else picked.delete(rec.id);
      showPicked();
    });
    return el("div.cell.selectable", { role: "listitem" }, pick, link);
  };

  let cards = [];
  const draw = () => {
    const first = data.total ? (page - 1) * size + 1 : 0;
    const scope = SORTED_ONLY[filters.sort] ? ` (${SORTED_ONLY[filters.sort]})` : "";
    count.textContent = data.total ? `Images ${first}–${first + data.images.length - 1} of ${data.total}${live && Object.keys(asked).length ? " matching" : ""}${live ? scope : ""}` : "";
    const grid = el("div.grid#gallery-grid", { role: "list", "aria-label": "Catalog images" }, data.images.map(card));
    const empty = live && Object.keys(asked).length
      ? notice(`No image matches these filters${scope}.`, "info")
      : notice("The catalog is empty. Add images with `tiefjax init WORKSPACE --images DIR`.", "info");
    gridSlot.replaceChildren(data.total ? grid : empty);
    pagerTop.replaceChildren(data.total ? pager("top") : "");
    pagerBottom.replaceChildren(data.total ? pager("bottom") : "");
    cards = [...grid.querySelectorAll(".card")];
    for (const id of [...picked]) if (!data.images.some((r) => r.id === id)) picked.delete(id);
    if (selecting) showPicked();
  };
  draw();

  async function accept(overwrite) {
    const chosen = data.images.filter((r) => picked.has(r.id));
    acceptButton.disabled = true;
    bulkMessage.replaceChildren(el("p.muted", {}, `Saving ${chosen.length} boxes…`));
    try {
      const done = await api.acceptDetections(chosen.map((r) => ({ id: r.id, version: r.box ? r.box.version : 0 })), overwrite);
      const why = {};
      for (const s of done.skipped) why[s.reason] = (why[s.reason] || 0) + 1;
      const skipped = Object.entries(why).map(([reason, n]) => `${n} ${SKIPPED[reason] || reason}`);
      const text = `Saved ${done.saved.length} detected box${done.saved.length === 1 ? "" : "es"} as annotated box${done.saved.length === 1 ? "" : "es"}.${skipped.length ? ` Skipped: ${skipped.join("; ")}.` : ""}`;
      picked.clear();
      data = await load();
      if (!ctx.alive()) return;
      draw();
      ctx.refreshStats();
      bulkMessage.replaceChildren(notice(text, "success"));
    } catch (e) {
      if (!ctx.alive()) return;
      const reload = el("button.btn.small", { type: "button", onclick: async () => ((data = await load()), draw(), bulkMessage.replaceChildren()) }, "Reload this page");
      bulkMessage.replaceChildren(el("div.notice.error", { role: "alert" }, errorText(e), " ", reload));
      showPicked();
    }
  }
  acceptButton.addEventListener("click", () => {
    const chosen = data.images.filter((r) => picked.has(r.id));
    const replacing = chosen.filter((r) => r.box && located(r));
    if (!replacing.length) return accept(false);
    // boxes drawn by hand are replaced only when the reviewer says so
    bulkMessage.replaceChildren(
      el(
        "div.notice.warn#overwrite-confirm",
        { role: "alertdialog", "aria-label": "Replace boxes drawn by hand?" },
        `${replacing.length} of the ${chosen.length} selected images already have a box drawn by hand (${replacing.map((r) => r.id).join(", ")}). Replace those with the detected boxes too?`,
        el(
          "div.actions",
          {},
          el("button.btn#accept-overwrite", { type: "button", onclick: () => accept(true) }, "Replace them too"),
          el("button.btn.primary#accept-new-only", { type: "button", onclick: () => accept(false) }, "Only images without a box"),
          el("button.btn#accept-cancel", { type: "button", onclick: () => bulkMessage.replaceChildren() }, "Cancel"),
        ),
      ),
    );
    bulkMessage.querySelector("#accept-new-only").focus();
  });

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
    } else if (event.key === "PageDown" && page < pages()) {
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
  return () => {
    gone = true;
    clearTimeout(typingTimer);
    document.removeEventListener("keydown", onKey);
  };
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
  const results = el("section.results", { "aria-label": "Similar images", "aria-busy": "true" }, skeletonGrid(12, "Searching…"));
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
        ...(res.hits.length ? [el("p.hint.score-help", {}, scoreHelp(mode)), grid] : [notice("No similar images found.", "info")]),
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
