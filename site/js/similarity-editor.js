// Similarity editor: mark candidates "same product" (green), "more similar" (blue) or "less
// similar" (red) to the reference; saving stores the triplets the marks expand into, in one
// request (tiefjax.triplet_marks: every ranked pair for the reference, and each same-product
// photo as a reference of its own group).

import * as api from "./api.js";
import { history, undoKey } from "./history.js";
import { el, errorText, fmt, modeToggle, notice, segmented, staticNotice, typing } from "./ui.js";

const K = 24;
let mode = "supervised";
let tapMark = "more"; // what a plain click or tap marks; shift-click and right-click mark "less"
const other = (m) => (m === "less" ? "more" : "less");
const TAGS = { same: "same product", more: "more similar", less: "less similar" };
/** How many triplets s same-product, m more and l less marks expand into (triplet_marks.count). */
const tripletCount = (s, m, l) => s * (s + 1) * (m + l) + m * l;
/** The editor on this reference; `ids`: in id order instead of the review queue's. */
const href = (id, ids = false) => `#/similarity/${encodeURIComponent(id)}${ids ? "?order=ids" : ""}`;

export async function render(main, ctx) {
  main.append(el("div.page-head", {}, el("h1", {}, "Similarity editor")));
  if (api.isStatic()) {
    main.append(staticNotice("The similarity editor"));
    return;
  }
  const [catalog, available] = await Promise.all([api.allImages(), api.modes()]);
  if (!ctx.alive()) return;
  if (!catalog.length) {
    main.append(notice("The catalog is empty: add images with `tiefjax init`.", "info"));
    return;
  }
  // The review queue (references whose rankings disagree most, with the pair to judge) is the
  // default order once an index exists; ?order=ids walks the catalog by id instead.
  const byIds = ctx.query.get("order") === "ids";
  const link = (target) => href(target, byIds);
  let queue = null;
  let queueError = available.length ? null : "there is no search index yet";
  if (!byIds && available.length) {
    try {
      queue = await api.reviewQueue("triplets");
    } catch (e) {
      queueError = errorText(e);
    }
    if (!ctx.alive()) return;
  }
  const id = ctx.parts[0];
  if (!id) {
    location.replace(link(queue && queue.items.length ? queue.items[0].reference : catalog[0].id));
    return;
  }
  const index = catalog.findIndex((r) => r.id === id);
  if (index < 0) {
    main.append(notice(`No image "${id}" in the catalog.`, "error"));
    return;
  }
  if (!available.includes(mode)) mode = available.includes("supervised") ? "supervised" : available[0] || "supervised";
  const rec = catalog[index];
  /** What n and p walk: the review queue's references, or the catalog by id. */
  const sequence = queue && queue.items.length ? queue.items.map((q) => q.reference) : catalog.map((r) => r.id);
  const queued = queue ? queue.items.find((q) => q.reference === id) : null;
  const step = (delta) => {
    const at = sequence.indexOf(id);
    if (!sequence.length) return id;
    if (at < 0) return sequence[delta > 0 ? 0 : sequence.length - 1]; // off the queue: its ends
    return sequence[(at + delta + sequence.length) % sequence.length];
  };

  const marks = new Map(); // id -> "more" | "less"
  let saving = false;

  const head = main.querySelector(".page-head");
  const toggleSlot = el("div.toolbar");
  const order = segmented(
    "Order",
    [
      { value: "queue", text: "Review queue", title: "references whose rankings disagree most first (n/p follow it)" },
      { value: "ids", text: "Id order", title: "every reference by id" },
    ],
    byIds ? "ids" : "queue",
    (value) => (location.hash = href(id, value === "ids")),
  );
  head.append(el("p.muted", {}, `Reference ${index + 1} of ${catalog.length}`), toggleSlot, el("div.toolbar#sim-order", {}, order));

  const tapSlot = el("div#sim-tap");
  const countEl = el("span#sim-count.status-pill", { role: "status", "aria-live": "polite" });
  const saveBtn = el("button.btn.primary#sim-save", { type: "button", onclick: () => save(), title: "Save triplets (s)" }, "Save triplets", el("kbd", {}, "s"));
  const clearBtn = el("button.btn#sim-clear", { type: "button", onclick: () => changeMarks(() => marks.clear()) }, "Clear marks");
  const edits = history(() => paint());
  const undoBtn = el("button.btn#sim-undo", { type: "button", onclick: () => undoRedo("undo"), title: "Undo (Ctrl+Z): marks, saves and deletions" }, "Undo");
  const redoBtn = el("button.btn#sim-redo", { type: "button", onclick: () => undoRedo("redo"), title: "Redo (Ctrl+Shift+Z or Ctrl+Y)" }, "Redo");
  const messageEl = el("div#sim-message", { "aria-live": "assertive" });
  const grid = el("div.grid.candidates#sim-grid", { role: "group", "aria-label": "Candidates" });
  const storedEl = el("section.panel.stored#sim-stored", { "aria-label": "Stored triplets" });

  const reference = el(
    "section.panel.reference#sim-reference",
    { "aria-label": "Reference image", dataset: { id } },
    el("div.frame.large", {}, el("img.ref-img", { src: api.imageUrl(id), alt: `Reference image ${id}`, width: rec.width, height: rec.height })),
    el("h2.ref-name", { title: id }, id),
    el(
      "p.actions",
      {},
      el("a.btn#sim-prev", { href: link(step(-1)), title: "Previous reference (p)" }, "‹ Previous", el("kbd", {}, "p")),
      el("a.btn#sim-next", { href: link(step(1)), title: "Next reference (n)" }, "Next ›", el("kbd", {}, "n")),
    ),
  );

  main.append(
    el(
      "div.split",
      {},
      el("div.side", {}, reference, storedEl),
      el(
        "section.results.candidates-view",
        { "aria-label": "Candidates to judge" },
        el(
          "p.hint",
          {},
          "A click or tap marks ",
          el("span.legend.same", {}, "same product"),
          ", ",
          el("span.legend.more", {}, "more similar"),
          " or ",
          el("span.legend.less", {}, "less similar"),
          ", as chosen below; shift-click or right-click marks less similar (more similar when less is chosen); click again to unmark. ",
          "Photos of the same product become references of their own group too. Keys on a focused image: ",
          el("kbd", {}, "g"), " same product, ", el("kbd", {}, "m"), " more, ", el("kbd", {}, "l"), " less, ", el("kbd", {}, "0"), " unmark.",
        ),
        el("div.toolbar.editor-tools", {}, tapSlot, countEl, saveBtn, clearBtn, undoBtn, redoBtn),
        queueInfo(),
        available.length
          ? null
          : notice("There is no search index yet, so the candidates are the next images in catalog order. After `tiefjax index` they are this image's nearest neighbours.", "info"),
        messageEl,
        grid,
      ),
    ),
  );

  const drawTapToggle = () =>
    tapSlot.replaceChildren(
      segmented(
        "A click or tap marks",
        [
          { value: "same", text: "same product", title: "a click or tap marks another photo of the reference's product" },
          { value: "more", text: "more similar", title: "a click or tap marks more similar" },
          { value: "less", text: "less similar", title: "a click or tap marks less similar" },
        ],
        tapMark,
        (m) => {
          tapMark = m;
          drawTapToggle();
        },
      ),
    );
  drawTapToggle();

  const say = (text, kind = "info") => messageEl.replaceChildren(text ? notice(text, kind) : "");

  /** Where this reference stands in the review queue and what the model asks about it. */
  function queueInfo() {
    if (byIds) return el("p.muted#sim-queue", { dataset: { state: "ids" } }, "Id order: every reference by id.");
    if (!queue) return el("p.muted#sim-queue", { dataset: { state: "none" } }, `No review queue (${queueError}); n and p follow the id order.`);
    if (queued) {
      const at = queue.items.indexOf(queued);
      return el(
        "p#sim-queue.queue-info",
        { dataset: { state: "queued", reason: queued.reason } },
        el("strong", {}, `Review queue ${at + 1} of ${queue.total}: `),
        `${queued.message}. Which of the two outlined first is more similar to the reference?`,
      );
    }
    const text = queue.total ? `Not in the review queue (${queue.total} to review); n goes to its top.` : "The review queue is empty (every pair it proposed has been judged), so n and p follow the id order. Retrain and run `tiefjax index` to refill it.";
    return el("p.muted#sim-queue", { dataset: { state: queue.total ? "off" : "empty" } }, text);
  }

  /** The marked ids by mark: {same, more, less}. */
  const marked = () => {
    const by = { same: [], more: [], less: [] };
    for (const [cid, m] of marks) by[m].push(cid);
    return by;
  };

  function paint() {
    const { same, more, less } = marked();
    const n = tripletCount(same.length, more.length, less.length);
    for (const card of grid.querySelectorAll(".candidate")) {
      const m = marks.get(card.dataset.id) || "";
      card.dataset.mark = m;
      card.setAttribute("aria-pressed", m ? "true" : "false");
      card.querySelector(".mark-tag").textContent = TAGS[m] || "";
    }
    const sameText = same.length ? `${same.length} same · ` : "";
    countEl.textContent = `${sameText}${more.length} more · ${less.length} less → ${n} triplet${n === 1 ? "" : "s"}`;
    saveBtn.disabled = saving || n === 0;
    undoBtn.disabled = !edits.canUndo();
    redoBtn.disabled = !edits.canRedo();
  }

  // ---- undo / redo: marks, saved triplets and deleted ones ------------------------------------
  /** Show these marks (of the candidates still shown). */
  function showMarks(shown) {
    const ids = new Set([...grid.querySelectorAll(".candidate")].map((c) => c.dataset.id));
    marks.clear();
    for (const [cid, m] of shown) if (ids.has(cid)) marks.set(cid, m);
    say("");
    paint();
  }

  /** Change the marks with `fn`, as one undoable step. */
  function changeMarks(fn) {
    const before = new Map(marks);
    fn();
    const after = new Map(marks);
    if (before.size !== after.size || [...after].some(([k, m]) => before.get(k) !== m)) {
      edits.record({ undo: () => showMarks(before), redo: () => showMarks(after) });
    }
    say("");
    paint();
  }

  async function undoRedo(what) {
    try {
      if (!(await edits[what]())) say(`Nothing to ${what}.`);
    } catch (e) {
      say(errorText(e), "error");
    }
  }

  async function reloadLists() {
    ctx.refreshStats();
    await Promise.all([loadStored(), loadCandidates()]);
  }

  function mark(cid, what) {
    changeMarks(() => {
      if (marks.get(cid) === what || what === null) marks.delete(cid);
      else marks.set(cid, what);
    });
  }

  paint();

  const drawToggle = () =>
    toggleSlot.replaceChildren(
      el("span.label", {}, "Candidates from"),
      modeToggle(mode, available, (m) => {
        mode = m;
        drawToggle();
        loadCandidates();
      }),
    );
  drawToggle();

  /** Whether an image of the queue's pair has been judged with this reference (then it leaves
   * the candidates, as every judged image does, and the server's queue drops the pair). */
  async function pairJudged() {
    const judged = new Set((await api.listTriplets(id)).flatMap((t) => [t.positive, t.negative]));
    return judged.has(queued.first) || judged.has(queued.second);
  }

  /** Without an index: the images after the reference in catalog order, not judged yet. */
  async function catalogCandidates() {
    const judged = new Set((await api.listTriplets(id)).flatMap((t) => [t.positive, t.negative]));
    const after = [...catalog.slice(index + 1), ...catalog.slice(0, index)];
    return { candidates: after.filter((r) => !judged.has(r.id)).slice(0, K).map((r) => ({ id: r.id, score: null })) };
  }

  async function loadCandidates() {
    grid.setAttribute("aria-busy", "true");
    grid.replaceChildren(el("p.muted", {}, "Loading candidates…"));
    try {
      const res = available.length ? await api.candidates(id, mode, K) : await catalogCandidates();
      if (queued && !(await pairJudged())) {
        // the queue's pair first (it may lie outside this mode's top K)
        const pair = [queued.first, queued.second];
        res.candidates = [...pair.map((cid) => ({ id: cid, score: null, pair: true })), ...res.candidates.filter((c) => !pair.includes(c.id))];
      }
      if (!ctx.alive()) return;
      if (res.mode && res.mode !== mode && available.includes(res.mode)) {
        mode = res.mode; // the server fell back (e.g. no supervised index yet)
        drawToggle();
      }
      marks.clear();
      grid.replaceChildren();
      if (!res.candidates.length) grid.append(notice("No candidates left: every neighbour of this image has been judged.", "info"));
      for (const c of res.candidates) {
        const label = c.score === null ? c.id : `${c.id}, score ${fmt(c.score)}`;
        const card = el(
          "button.card.candidate",
          {
            type: "button",
            dataset: { id: c.id, mark: "", pair: c.pair ? "true" : "" },
            "aria-pressed": "false",
            "aria-label": label,
            onclick: (e) => mark(c.id, e.shiftKey ? other(tapMark) : tapMark),
            oncontextmenu: (e) => {
              e.preventDefault();
              mark(c.id, "less");
            },
            onkeydown: (e) => {
              const what = { g: "same", 3: "same", m: "more", 1: "more", l: "less", 2: "less", 0: null, x: null }[e.key];
              if (what !== undefined && !e.ctrlKey && !e.metaKey && !e.altKey) {
                e.preventDefault();
                e.stopPropagation();
                mark(c.id, what);
              }
            },
          },
          el("div.frame", {}, el("img.thumb", { src: api.thumbUrl(c.id), alt: "", loading: "lazy" })),
          el("div.caption", {}, el("span.name", { title: c.id }, c.id), c.score === null ? null : el("span.score", {}, fmt(c.score))),
          el("span.mark-tag", { "aria-hidden": "true" }),
        );
        grid.append(card);
      }
      paint();
    } catch (e) {
      if (!ctx.alive()) return;
      grid.replaceChildren(notice(errorText(e), "error"));
    } finally {
      grid.setAttribute("aria-busy", "false");
    }
  }

  async function loadStored() {
    try {
      const triplets = await api.listTriplets(id);
      if (!ctx.alive()) return;
      const rows = triplets.map((t) =>
        el(
          "li.triplet",
          { dataset: { tid: t.id } },
          el("img.mini.more", { src: api.thumbUrl(t.positive, 128), alt: `more similar: ${t.positive}`, title: `more similar: ${t.positive}` }),
          el("span.vs", { "aria-hidden": "true" }, "≻"),
          el("img.mini.less", { src: api.thumbUrl(t.negative, 128), alt: `less similar: ${t.negative}`, title: `less similar: ${t.negative}` }),
          el("span.triplet-text", {}, el("span.name", {}, t.positive), el("span.muted", {}, ` over ${t.negative}`)),
          el("button.btn.small.danger", { type: "button", "aria-label": `Delete triplet ${t.positive} over ${t.negative}`, onclick: () => remove(t) }, "Delete"),
        ),
      );
      storedEl.replaceChildren(
        el("h2", {}, `Stored for this reference (${triplets.length})`),
        rows.length ? el("ul.triplets#sim-triplets", {}, rows) : el("p.muted", {}, "None yet."),
      );
    } catch (e) {
      storedEl.replaceChildren(notice(errorText(e), "error"));
    }
  }

  async function remove(t) {
    try {
      await api.deleteTriplet(t.id);
      say("Triplet deleted.", "success");
      let row = t;
      edits.record({
        undo: async () => {
          row = await api.addTriplet(row.reference, row.positive, row.negative);
          await reloadLists();
        },
        redo: async () => {
          await api.deleteTriplet(row.id);
          await reloadLists();
        },
      });
      await reloadLists();
    } catch (e) {
      say(errorText(e), "error");
    }
  }

  async function save() {
    const { same, more, less } = marked();
    if (!tripletCount(same.length, more.length, less.length)) {
      say("Mark at least one image less similar (shift-click) and one more similar or of the same product (click).", "warn");
      return;
    }
    saving = true;
    paint();
    const shown = new Map(marks);
    try {
      const saved = await api.addMarkedTriplets(id, same, more, less);
      let added = saved.added;
      const already = saved.existing ? ` (${saved.existing} stored already)` : "";
      say(`Saved ${added.length} triplet${added.length === 1 ? "" : "s"}${already}.`, "success");
      edits.record({
        undo: async () => {
          if (added.length) await api.deleteTriplets(added.map((t) => t.id)); // all or none
          await reloadLists();
          showMarks(shown);
        },
        redo: async () => {
          ({ added } = await api.addMarkedTriplets(id, same, more, less));
          await reloadLists();
        },
      });
      await reloadLists();
    } catch (e) {
      say(`Nothing saved: ${errorText(e)}`, "error");
    } finally {
      saving = false;
      paint();
    }
  }

  const onKey = (event) => {
    if (typing(event) || document.querySelector("dialog[open]")) return;
    const undoing = undoKey(event);
    if (undoing) {
      event.preventDefault();
      undoRedo(undoing);
      return;
    }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const cards = [...grid.querySelectorAll(".candidate")];
    const i = cards.indexOf(document.activeElement);
    if (event.key === "s") {
      event.preventDefault();
      save();
    } else if (event.key === "n" || event.key === "p") {
      event.preventDefault();
      location.hash = link(step(event.key === "n" ? 1 : -1));
    } else if (["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown"].includes(event.key) && cards.length) {
      event.preventDefault();
      const perRow = Math.max(1, cards.filter((c) => c.offsetTop === cards[0].offsetTop).length);
      const delta = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -perRow, ArrowDown: perRow }[event.key];
      cards[i < 0 ? 0 : Math.max(0, Math.min(cards.length - 1, i + delta))].focus();
    }
  };
  document.addEventListener("keydown", onKey);
  await Promise.all([loadCandidates(), loadStored()]);
  return () => document.removeEventListener("keydown", onKey);
}
