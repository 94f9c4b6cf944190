// History: who changed which box or triplet, and when (GET /api/history), newest first, with
// filters by image and annotator and older pages by cursor.
// Route: #/history?image=ID&annotator=NAME&before=CHANGE_ID

import * as api from "./api.js";
import { el, errorText, notice, staticNotice } from "./ui.js";

const PAGE = 50;
const WHAT = {
  "box.saved": "saved the box",
  "box.accepted": "accepted the located box",
  "box.deleted": "deleted the box",
  "triplet.added": "added a triplet",
  "triplet.deleted": "deleted a triplet",
};

const href = (filters) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
  const s = q.toString();
  return `#/history${s ? `?${s}` : ""}`;
};

const round = (x) => Math.round(x);
const boxText = (b) => (b ? `${round(b[0])}, ${round(b[1])} → ${round(b[2])}, ${round(b[3])}` : "none");

/** What changed, in words, with links to the images involved. */
function detail(change) {
  const d = change.detail;
  if (change.action.startsWith("triplet.")) {
    return [
      el("a", { href: `#/similarity/${encodeURIComponent(change.image)}` }, change.image),
      " is more like ",
      el("a", { href: `#/image/${encodeURIComponent(d.positive)}` }, d.positive),
      " than ",
      el("a", { href: `#/image/${encodeURIComponent(d.negative)}` }, d.negative),
    ];
  }
  const link = el("a", { href: `#/boxes/${encodeURIComponent(change.image)}` }, change.image);
  if (change.action === "box.deleted") return [link, ` (was ${boxText(d.previous)}; now version ${d.version})`];
  return [link, `: ${boxText(d.box)}`, d.previous ? ` (was ${boxText(d.previous)})` : "", ` — version ${d.version}`];
}

export async function render(main, ctx) {
  main.append(el("div.page-head", {}, el("h1", {}, "History")));
  if (api.isStatic()) {
    main.append(staticNotice("The history"));
    return;
  }
  const filters = { image: ctx.query.get("image") || "", annotator: ctx.query.get("annotator") || "" };
  const before = ctx.query.get("before") || "";

  const imageInput = el("input#history-image", { type: "search", name: "image", value: filters.image, placeholder: "image id" });
  const annotatorInput = el("input#history-annotator", { type: "search", name: "annotator", value: filters.annotator, placeholder: "annotator" });
  const form = el(
    "form.toolbar.filters#history-filters",
    {
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = href({ image: imageInput.value.trim(), annotator: annotatorInput.value.trim() });
      },
    },
    el("label", { for: "history-image" }, "Image"),
    imageInput,
    el("label", { for: "history-annotator" }, "Annotator"),
    annotatorInput,
    el("button.btn", { type: "submit" }, "Filter"),
    filters.image || filters.annotator ? el("a.btn", { href: "#/history" }, "Show all") : null,
  );
  const body = el("div#history-list", { "aria-busy": "true" }, el("p.muted", {}, "Loading…"));
  main.append(form, body);

  try {
    const page = await api.changes({ ...filters, before, limit: PAGE });
    if (!ctx.alive()) return;
    if (!page.items.length) {
      body.replaceChildren(
        notice(before ? "No older changes." : "No changes recorded yet (matching these filters): boxes and triplets saved from now on appear here.", "info"),
      );
      return;
    }
    const rows = page.items.map((c) =>
      el(
        "tr",
        { dataset: { id: c.id, action: c.action } },
        el("td", {}, el("time", { datetime: c.at, title: c.at }, new Date(c.at).toLocaleString())),
        el("td", {}, el("a", { href: href({ annotator: c.annotator }) }, c.annotator)),
        el("td", {}, WHAT[c.action] || c.action),
        el("td", {}, detail(c)),
      ),
    );
    const table = el(
      "table.history-table",
      {},
      el("thead", {}, el("tr", {}, ["When", "Who", "What", "Details"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows),
    );
    const pager = el(
      "p.actions",
      {},
      before ? el("a.btn#history-newest", { href: href(filters) }, "« Newest") : null,
      page.next ? el("a.btn#history-older", { href: href({ ...filters, before: page.next }) }, "Older ›") : null,
    );
    body.replaceChildren(table, pager);
  } catch (e) {
    if (ctx.alive()) body.replaceChildren(notice(errorText(e), "error"));
  } finally {
    body.setAttribute("aria-busy", "false");
  }
}
