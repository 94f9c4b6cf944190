// Small DOM helpers shared by the pages: element builder, image-with-boxes figures, notices.

import * as api from "./api.js";

const SVG = "http://www.w3.org/2000/svg";

/** el("div.card#x", {attrs, on*: handlers}, children...) */
export function el(spec, attrs = {}, ...children) {
  const tag = spec.match(/^[a-z0-9]*/i)[0] || "div";
  const id = (spec.match(/#([\w-]+)/) || [])[1];
  const classes = [...spec.matchAll(/\.([\w-]+)/g)].map((m) => m[1]);
  const node = document.createElement(tag);
  if (id) node.id = id;
  if (classes.length) node.className = classes.join(" ");
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (key === "text") {
      node.textContent = value;
    } else {
      node.setAttribute(key, value === true ? "" : value);
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  return node;
}

/**
 * An image scaled to fit its container with boxes drawn in natural pixels.
 * boxes: [{box:{left,top,right,bottom}, kind:"annotated"|"detected"|"query"|"conflict", label}]
 */
export function figure(src, width, height, boxes = [], label = "") {
  const root = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "xMidYMid meet",
    role: "img",
    "aria-label": label,
    class: "figure",
  });
  const title = svg("title");
  title.textContent = label;
  root.append(title);
  root.append(svg("image", { href: src, x: 0, y: 0, width, height }));
  const stroke = Math.max(2, Math.round(Math.max(width, height) / 110));
  for (const b of boxes) {
    if (!b || !b.box) continue;
    const { left, top, right, bottom } = b.box;
    const rect = svg("rect", {
      x: left,
      y: top,
      width: Math.max(0, right - left),
      height: Math.max(0, bottom - top),
      class: `box box-${b.kind}`,
      "stroke-width": stroke,
    });
    if (b.kind === "detected" || b.kind === "conflict") {
      rect.setAttribute("stroke-dasharray", `${stroke * 3} ${stroke * 2}`);
    }
    if (b.label) {
      const t = svg("title");
      t.textContent = b.label;
      rect.append(t);
    }
    root.append(rect);
  }
  return root;
}

/** The boxes of an image record: the annotated box solid, else the detection dashed. */
export function recordBoxes(rec) {
  const out = [];
  if (rec.box) out.push({ box: rec.box, kind: "annotated", label: "annotated box" });
  if (rec.detection) {
    const d = rec.detection;
    const what = d.fallback ? "no product found: whole image" : `detected product (p=${fmt(d.score)})`;
    out.push({ box: d, kind: "detected", label: what });
  }
  return out;
}

export const fmt = (x, digits = 3) =>
  typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";

/** A notice box; kind: info | error | warn | success. */
export function notice(text, kind = "info") {
  return el(`p.notice.${kind}`, { role: kind === "error" ? "alert" : "status" }, text);
}

export function errorText(e) {
  return e && e.message ? e.message : String(e);
}

/** The plain message shown where a page needs the live server. */
export function staticNotice(what) {
  return el(
    "section.panel.static-note",
    { "aria-label": "Needs the server" },
    el("h2", {}, `${what} needs the tiefjax server`),
    el(
      "p",
      {},
      "This is a static export of the catalog: browsing and similar images work, but ",
      `${what.toLowerCase()} runs on the server. Start it with `,
      el("code", {}, "tiefjax serve WORKSPACE"),
      " and open the address it prints.",
    ),
    el("p", {}, el("a.btn", { href: "#/gallery" }, "Back to the gallery")),
  );
}

/** A grid cell for assistive technology's list; the card inside stays a link or a button. */
export const listItem = (card) => el("div.cell", { role: "listitem" }, card);

/** Route hash for an image's similar-images view. */
export const imageHref = (id, mode) =>
  `#/image/${encodeURIComponent(id)}${mode ? `?mode=${encodeURIComponent(mode)}` : ""}`;

const MODE_MEANING = {
  unsupervised: "unsupervised: ImageNet features compared, nothing learnt from your judgements",
  supervised: "supervised ranking: learnt from this catalog's similarity triplets",
};

/** What a result's score and bar mean in `mode` (shown above result lists). */
export const scoreHelp = (mode) =>
  `Score: cosine similarity of the two product boxes (1 = the same picture), ${MODE_MEANING[mode] || mode}. Each card draws the box it was matched on; its bar places it between this list's lowest and highest score.`;

/** A plain-language word for a cosine similarity. */
export function scoreWords(score) {
  if (!Number.isFinite(score)) return "no score";
  if (score >= 0.98) return "nearly identical";
  if (score >= 0.9) return "very similar";
  if (score >= 0.75) return "similar";
  if (score >= 0.5) return "somewhat similar";
  return "not much alike";
}

const MATCHED_ON = { annotation: "annotated box", detection: "detected box", whole: "whole photo" };

/** The box a hit was matched on (from the index; else the record's boxes when it does not say). */
function matchedBoxes(hit, rec) {
  if (!hit.box) return rec ? recordBoxes(rec) : [];
  const kind = hit.box_source === "annotation" ? "annotated" : "detected";
  return [{ box: hit.box, kind, label: `matched on its ${MATCHED_ON[hit.box_source] || "box"}` }];
}

/** Placeholder cards while a grid loads (hidden from assistive technology, which hears
 * `aria-busy` and the text). */
export function skeletonGrid(n, text = "Loading…") {
  const grid = el("div.grid.skeletons", { "aria-hidden": "true" });
  for (let i = 0; i < n; i++) grid.append(el("div.cell", {}, el("div.card.skeleton", {}, el("div.frame"), el("div.caption", {}, el("span.bar")))));
  return el("div.loading", { role: "status" }, el("span.sr-only", {}, text), grid);
}

/** Result cards (with their boxes when `recs` has the records) in a list for assistive technology. */
export function resultList(hits, recs, { id, label, mode }) {
  const scores = hits.map((h) => h.score).filter(Number.isFinite);
  const [lo, hi] = [Math.min(...scores), Math.max(...scores)];
  const grid = el(`div.grid.hits#${id}`, { role: "list", "aria-label": label });
  hits.forEach((hit, i) => {
    const spread = hi > lo ? (hit.score - lo) / (hi - lo) : 1;
    grid.append(listItem(hitCard(hit, i + 1, { mode, rec: recs[i], spread })));
  });
  return grid;
}

/** A result card: thumbnail + rank + score (and its place in the list), linking to that
 * image's neighbours. */
function hitCard(hit, rank, { mode, rec, spread }) {
  const w = rec ? rec.width : 3;
  const h = rec ? rec.height : 4;
  const words = scoreWords(hit.score);
  const on = hit.box_source ? `, matched on its ${MATCHED_ON[hit.box_source] || "box"}` : "";
  const label = `${hit.id}, rank ${rank}, ${words} (cosine ${fmt(hit.score)})${on}`;
  const img = rec
    ? figure(api.thumbUrl(hit.id), w, h, matchedBoxes(hit, rec), label)
    : el("img.thumb", { src: api.thumbUrl(hit.id), alt: label, loading: "lazy" });
  const fill = el("span");
  fill.style.width = `${Math.round(spread * 100)}%`; // CSSOM: the CSP allows no style attributes
  return el(
    "a.card.hit",
    { href: imageHref(hit.id, mode), dataset: { id: hit.id }, "aria-label": label },
    el("div.frame", {}, img),
    el(
      "div.caption",
      {},
      el("span.rank", {}, `#${rank}`),
      el("span.name", { title: hit.id }, hit.id),
      el("span.score", { title: scoreHelp(mode) }, fmt(hit.score)),
      el("span.score-bar", { "aria-hidden": "true" }, fill),
      el("span.why", {}, `${words}${hit.box_source ? ` · ${MATCHED_ON[hit.box_source] || "box"}` : ""}`),
    ),
  );
}

/** Segmented control (radio group); options: [{value, text, title, disabled}]. */
export function segmented(label, options, current, onChange) {
  const group = el("div.segmented", { role: "radiogroup", "aria-label": label });
  for (const o of options) {
    const on = o.value === current;
    group.append(
      el(
        "button.seg",
        {
          type: "button",
          role: "radio",
          "aria-checked": on ? "true" : "false",
          disabled: !!o.disabled,
          title: o.title,
          dataset: { value: o.value },
          onclick: () => !on && onChange(o.value),
        },
        o.text,
      ),
    );
  }
  return group;
}

/** Segmented control for search modes; disabled modes have no index. */
export function modeToggle(current, available, onChange) {
  const options = ["unsupervised", "supervised"].map((m) => {
    const ok = available.includes(m);
    return { value: m, text: m, disabled: !ok, title: ok ? `${m} similarity` : `no ${m} index has been built` };
  });
  return segmented("Similarity mode", options, current, onChange);
}

/** Parse "#/a/b?x=1" into {parts:["a","b"], query: URLSearchParams}. */
export function parseHash(hash = location.hash) {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q >= 0 ? raw.slice(0, q) : raw;
  const query = new URLSearchParams(q >= 0 ? raw.slice(q + 1) : "");
  const parts = path.split("/").filter(Boolean).map((p) => {
    try {
      return decodeURIComponent(p);
    } catch {
      return p; // a hand-typed "%" that is not an escape: take it literally
    }
  });
  return { parts, query };
}

/** True when a key event comes from a text field (page shortcuts stay out of the way). */
export function typing(event) {
  const t = event.target;
  return (
    t instanceof HTMLElement &&
    (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName)) &&
    !(t instanceof HTMLInputElement && ["radio", "checkbox", "button"].includes(t.type))
  );
}

export function relativeAge(seconds) {
  if (typeof seconds !== "number") return "";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}
