// Bounding-box editor: drag to draw, handles to adjust, keys to move through the catalog.
// Boxes are kept in natural image pixels and saved as integers with the version that was read.

import * as api from "./api.js";
import { history, undoKey } from "./history.js";
import { el, errorText, notice, segmented, staticNotice, typing } from "./ui.js";
import { zoomable } from "./zoom.js";

const HANDLES = ["nw", "n", "ne", "e", "se", "s", "sw", "w"];
const MIN_DRAG_PX = 4; // a shorter drag is a click, not a box

/** The editor on this image; `ids`: in id order instead of the review queue's. */
const href = (id, ids = false) => `#/boxes/${encodeURIComponent(id)}${ids ? "?order=ids" : ""}`;

function parseStored(res) {
  if (!res || typeof res !== "object") return null;
  const b = "left" in res ? res : res.box;
  if (!b || typeof b !== "object" || !("left" in b)) return null;
  return { left: b.left, top: b.top, right: b.right, bottom: b.bottom, version: b.version ?? res.version ?? 0 };
}

/** Integer pixels inside the image, at least 1 px wide and high. */
export function roundBox(b, width, height) {
  const clamp = (v, hi) => Math.max(0, Math.min(hi, Math.round(v)));
  let left = clamp(Math.min(b.left, b.right), width);
  let right = clamp(Math.max(b.left, b.right), width);
  let top = clamp(Math.min(b.top, b.bottom), height);
  let bottom = clamp(Math.max(b.top, b.bottom), height);
  if (right <= left) right < width ? (right = left + 1) : (left = right - 1);
  if (bottom <= top) bottom < height ? (bottom = top + 1) : (top = bottom - 1);
  return { left, top, right, bottom };
}

const same = (a, b) =>
  (!a && !b) || (a && b && ["left", "top", "right", "bottom"].every((k) => Math.round(a[k]) === Math.round(b[k])));

export async function render(main, ctx) {
  main.append(el("div.page-head", {}, el("h1", {}, "Box editor")));
  if (api.isStatic()) {
    main.append(staticNotice("The box editor"));
    return;
  }
  // The review queue (most uncertain located boxes first) is the default order; ?order=ids
  // walks the catalog by id instead.
  const byIds = ctx.query.get("order") === "ids";
  const link = (target) => href(target, byIds);
  let queue = null;
  let queueError = null;
  const [loaded] = await Promise.all([
    api.allImages(),
    byIds ? null : api.reviewQueue("boxes").then((q) => (queue = q), (e) => (queueError = errorText(e))),
  ]);
  let catalog = loaded;
  if (!ctx.alive()) return;
  if (!catalog.length) {
    main.append(notice("The catalog is empty: add images with `tiefjax init`.", "info"));
    return;
  }
  let id = ctx.parts[0];
  if (!id) {
    const todo = queue && queue.items.length ? queue.items[0] : catalog.find((r) => !r.box) || catalog[0];
    location.replace(link(todo.id));
    return;
  }
  let index = catalog.findIndex((r) => r.id === id);
  if (index < 0) {
    // Perhaps added since the list was loaded.
    catalog = await api.allImages(true);
    index = catalog.findIndex((r) => r.id === id);
    if (index < 0) {
      main.append(notice(`No image "${id}" in the catalog.`, "error"));
      return;
    }
  }
  const rec = catalog[index];
  const W = rec.width;
  const H = rec.height;

  // ---- state -------------------------------------------------------------------------------
  let saved = null; // {left, top, right, bottom, version} from the server
  let draft = null; // what is drawn now (natural px, may be fractional while dragging)
  let conflict = null; // {current} after a 409
  let saving = false;
  let pendingNav = null;
  let message = null; // {text, kind}

  const statusEl = el("span#box-status.status-pill", { role: "status", "aria-live": "polite" });
  const progressEl = el("span#box-progress.muted");
  const coordsEl = el("span#box-coords.coords");
  const messageEl = el("div#box-message", { "aria-live": "assertive" });
  const conflictEl = el("div#box-conflict");

  const img = el("img.edit-image", { src: api.imageUrl(id), alt: `${id}: draw the product box on this image`, width: W, height: H, draggable: "false" });
  const detEl = el("div.overlay-box.detected", { hidden: true, "aria-hidden": "true" });
  const curEl = el("div.overlay-box.conflict", { hidden: true, "aria-hidden": "true" });
  const selEl = el("div.overlay-box.selection#box-selection", { hidden: true, "aria-label": "drawn box" }, HANDLES.map((h) => el(`div.handle.h-${h}`, { dataset: { h } })));
  const stage = el("div.stage#box-stage", { "aria-label": "Image; drag to draw a box" }, img, detEl, curEl, selEl);
  const viewport = el("div.stage-wrap#box-viewport", {}, stage);
  const zoomEl = el("span#box-zoom.zoom-level", { "aria-live": "polite", title: "zoom: CSS pixels per image pixel" });

  const button = (label, key, fn, extra = {}) =>
    el("button.btn", { type: "button", onclick: fn, title: key ? `${label} (${key})` : label, ...extra }, label, key ? el("kbd", {}, key) : null);

  const saveBtn = button("Save", "s", () => save(), { class: "btn primary", id: "box-save" });
  const edits = history(() => update());
  const undoBtn = button("Undo", null, () => undoRedo("undo"), { id: "box-undo", title: "Undo (Ctrl+Z)" });
  const redoBtn = button("Redo", null, () => undoRedo("redo"), { id: "box-redo", title: "Redo (Ctrl+Shift+Z or Ctrl+Y)" });
  const toolbar = el(
    "div.toolbar.editor-tools",
    { role: "toolbar", "aria-label": "Box editor" },
    button("Previous", "p", () => navigate(-1), { id: "box-prev" }),
    button("Next", "n", () => navigate(1), { id: "box-next" }),
    button("Next unannotated", "u", () => navigateUnannotated(), { id: "box-next-todo" }),
    saveBtn,
    button("Clear", "c", () => clear(), { id: "box-clear" }),
    undoBtn,
    redoBtn,
    rec.detection && !rec.detection.fallback ? button("Use detection", "d", () => useDetection(), { id: "box-use-detection" }) : null,
    el(
      "span.toolbar.zoom-tools",
      { role: "group", "aria-label": "Zoom" },
      button("−", null, () => zoom.zoomOut(), { id: "box-zoom-out", "aria-label": "Zoom out", title: "Zoom out (-)" }),
      zoomEl,
      button("+", null, () => zoom.zoomIn(), { id: "box-zoom-in", "aria-label": "Zoom in", title: "Zoom in (+)" }),
      button("Fit", "0", () => zoom.fit(), { id: "box-zoom-fit" }),
      button("100%", "1", () => zoom.actual(), { id: "box-zoom-actual" }),
    ),
  );

  const order = segmented(
    "Order",
    [
      { value: "queue", text: "Review queue", title: "least certain located boxes first (n/p follow it)" },
      { value: "ids", text: "Id order", title: "every image by id" },
    ],
    byIds ? "ids" : "queue",
    (value) => (location.hash = href(id, value === "ids")),
  );
  const historyLink = el("a#box-history", { href: `#/history?image=${encodeURIComponent(id)}`, title: "Who changed this image's box, and when" }, "History");
  main.querySelector(".page-head").append(el("p.ref-name", { title: id }, id), progressEl, historyLink, el("div.toolbar#box-order", {}, order));
  // Status and messages sit beside the image (below it on narrow screens): when they come and
  // go, the image stays where it is under the pointer.
  main.append(
    toolbar,
    el(
      "div.editor-layout",
      {},
      viewport,
      el(
        "div.editor-side",
        {},
        el("div.editor-status", {}, statusEl, coordsEl),
        queueInfo(),
        messageEl,
        conflictEl,
        el(
          "p.hint",
          {},
          "Drag on the image to draw; drag the box or its handles to adjust. Keys: ",
          el("kbd", {}, "n"), "/", el("kbd", {}, "→"), " next, ",
          el("kbd", {}, "p"), "/", el("kbd", {}, "←"), " previous, ",
          el("kbd", {}, "s"), " save, ",
          el("kbd", {}, "c"), "/", el("kbd", {}, "Delete"), " clear, ",
          el("kbd", {}, "u"), " next unannotated, ",
          el("kbd", {}, "Alt+arrows"), " move the box 1 px (with ", el("kbd", {}, "Shift"), " 10 px). Zoom: the wheel, ",
          el("kbd", {}, "+"), "/", el("kbd", {}, "-"), ", ", el("kbd", {}, "0"), " fit, ", el("kbd", {}, "1"), " 100 %; pan: drag with ",
          el("kbd", {}, "Space"), " held or the middle button. Undo: ", el("kbd", {}, "Ctrl+Z"), ", redo: ",
          el("kbd", {}, "Ctrl+Shift+Z"), ". Coordinates are saved in image pixels.",
        ),
      ),
    ),
  );

  const zoom = zoomable(viewport, img, W, H, (percent) => (zoomEl.textContent = `${percent}%`));

  // ---- drawing -----------------------------------------------------------------------------
  const place = (node, b) => {
    node.hidden = !b;
    if (!b) return;
    const l = Math.min(b.left, b.right);
    const t = Math.min(b.top, b.bottom);
    node.style.left = `${(l / W) * 100}%`;
    node.style.top = `${(t / H) * 100}%`;
    node.style.width = `${(Math.abs(b.right - b.left) / W) * 100}%`;
    node.style.height = `${(Math.abs(b.bottom - b.top) / H) * 100}%`;
  };

  const dirty = () => !same(draft, saved);

  function update() {
    place(selEl, draft);
    place(detEl, rec.detection && !rec.detection.fallback ? rec.detection : null);
    place(curEl, conflict ? conflict.current : null);
    selEl.classList.toggle("unsaved", dirty());
    const annotated = catalog.filter((r) => r.box).length;
    progressEl.textContent = `Image ${index + 1} of ${catalog.length} · ${annotated} of ${catalog.length} annotated`;
    let state;
    let text;
    if (saving) [state, text] = ["saving", "Saving…"];
    else if (conflict) [state, text] = ["conflict", "Conflict: not saved"];
    else if (dirty()) [state, text] = ["unsaved", saved && !draft ? "Unsaved: box cleared" : "Unsaved changes"];
    else if (saved) [state, text] = ["saved", `Saved (version ${saved.version})`];
    else [state, text] = ["empty", "No box yet: drag on the image"];
    statusEl.textContent = text;
    statusEl.dataset.state = state;
    saveBtn.disabled = saving || !dirty();
    undoBtn.disabled = !edits.canUndo();
    redoBtn.disabled = !edits.canRedo();
    if (draft) {
      const r = roundBox(draft, W, H);
      coordsEl.textContent = `left ${r.left}, top ${r.top}, right ${r.right}, bottom ${r.bottom} · ${r.right - r.left} × ${r.bottom - r.top} px of ${W} × ${H}`;
    } else {
      coordsEl.textContent = `${W} × ${H} px`;
    }
    messageEl.replaceChildren(message ? notice(message.text, message.kind) : "");
    conflictEl.replaceChildren(conflict ? conflictPanel() : "");
  }

  function say(text, kind = "info") {
    message = text ? { text, kind } : null;
    update();
  }

  function conflictPanel() {
    const c = conflict.current;
    const now = c
      ? `The stored box is now left ${c.left}, top ${c.top}, right ${c.right}, bottom ${c.bottom} (version ${c.version}); it is drawn dashed in orange.`
      : "The stored box was deleted: this image has no box now.";
    return el(
      "div.notice.warn.conflict-panel",
      { role: "alert" },
      el("strong", {}, "Someone else changed this box while you were editing. "),
      `${now} Your box was not saved.`,
      el(
        "div.actions",
        {},
        el("button.btn#box-reload", { type: "button", onclick: () => reloadFromConflict() }, "Reload the stored box"),
        el("button.btn#box-overwrite", { type: "button", onclick: () => overwrite() }, "Save mine over it"),
      ),
    );
  }

  let drag = null;
  const toNatural = (event) => {
    const r = img.getBoundingClientRect();
    return {
      x: Math.max(0, Math.min(W, ((event.clientX - r.left) / r.width) * W)),
      y: Math.max(0, Math.min(H, ((event.clientY - r.top) / r.height) * H)),
      px: event.clientX,
      py: event.clientY,
    };
  };

  stage.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 || saving) return;
    event.preventDefault();
    const p = toNatural(event);
    const handle = event.target.closest(".handle");
    const before = draft ? { ...draft } : null;
    if (handle && draft) drag = { kind: "resize", h: handle.dataset.h, start: p, before };
    else if (event.target.closest(".selection") && draft) drag = { kind: "move", start: p, before };
    else drag = { kind: "draw", start: p, before };
    stage.setPointerCapture(event.pointerId);
    stage.classList.add("dragging");
  });

  stage.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const p = toNatural(event);
    const b = drag.before;
    if (drag.kind === "draw") {
      if (Math.abs(p.px - drag.start.px) < MIN_DRAG_PX && Math.abs(p.py - drag.start.py) < MIN_DRAG_PX) return;
      draft = { left: drag.start.x, top: drag.start.y, right: p.x, bottom: p.y };
    } else if (drag.kind === "move") {
      const w = b.right - b.left;
      const h = b.bottom - b.top;
      const left = Math.max(0, Math.min(W - w, b.left + p.x - drag.start.x));
      const top = Math.max(0, Math.min(H - h, b.top + p.y - drag.start.y));
      draft = { left, top, right: left + w, bottom: top + h };
    } else {
      const d = { ...b };
      if (drag.h.includes("w")) d.left = p.x;
      if (drag.h.includes("e")) d.right = p.x;
      if (drag.h.includes("n")) d.top = p.y;
      if (drag.h.includes("s")) d.bottom = p.y;
      draft = d;
    }
    message = null;
    update();
  });

  const endDrag = () => {
    if (!drag) return;
    const { before } = drag;
    drag = null;
    stage.classList.remove("dragging");
    if (draft) {
      draft = {
        left: Math.min(draft.left, draft.right),
        right: Math.max(draft.left, draft.right),
        top: Math.min(draft.top, draft.bottom),
        bottom: Math.max(draft.top, draft.bottom),
      };
      if (draft.right - draft.left < 1 || draft.bottom - draft.top < 1) draft = null;
    }
    changed(before);
    update();
  };
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);
  stage.addEventListener("lostpointercapture", endDrag);

  // ---- undo / redo: every change of the drawn box on this image -------------------------------
  const copy = (b) => (b ? { left: b.left, top: b.top, right: b.right, bottom: b.bottom } : null);
  const show = (box) => {
    draft = copy(box);
    message = null;
    update();
  };

  /** Record a change from `before` to the current draft (none when nothing changed). */
  function changed(before) {
    if (same(before, draft)) return;
    const [from, to] = [copy(before), copy(draft)];
    edits.record({ undo: () => show(from), redo: () => show(to) });
  }

  async function undoRedo(what) {
    if (!(await edits[what]())) say(`Nothing to ${what}.`);
  }

  // ---- actions -----------------------------------------------------------------------------
  /** Replace the drawn box (null: none) as one undoable change. */
  function setDraft(box) {
    const before = draft;
    draft = copy(box);
    changed(before);
    message = null;
    update();
  }

  function clear() {
    if (!draft) return say("There is no box to clear.");
    setDraft(null);
  }

  function useDetection() {
    const d = rec.detection;
    if (d && !d.fallback) setDraft(d);
  }

  async function save(overwriteVersion = null) {
    if (saving) return;
    if (!dirty() && overwriteVersion === null) return say("Nothing to save: no changes.");
    saving = true;
    message = null;
    update();
    const version = overwriteVersion ?? (saved ? saved.version : 0);
    try {
      if (draft) {
        const box = roundBox(draft, W, H);
        const res = await api.putBox(id, box, version);
        saved = parseStored(res) || { ...box, version: version + 1 };
        if (saved.version === undefined || saved.version === null) saved.version = version + 1;
        draft = { left: saved.left, top: saved.top, right: saved.right, bottom: saved.bottom };
      } else if (overwriteVersion !== null || saved) {
        await api.deleteBox(id, version);
        saved = null;
      }
      conflict = null;
      rec.box = saved ? { ...saved } : null;
      saving = false;
      say(saved ? "Saved." : "Box removed.", "success");
      ctx.refreshStats();
    } catch (e) {
      saving = false;
      if (e instanceof api.ApiError && e.status === 409) {
        const current = parseStored(e.body && e.body.current ? e.body.current : null);
        conflict = { current };
        message = null;
        update();
      } else {
        say(errorText(e), "error");
      }
    }
  }

  function reloadFromConflict() {
    const current = conflict ? conflict.current : null;
    saved = current;
    rec.box = current ? { ...current } : null;
    conflict = null;
    setDraft(current);
    say("Reloaded the stored box.", "info");
  }

  function overwrite() {
    const v = conflict && conflict.current ? conflict.current.version : 0;
    saved = conflict ? conflict.current : null;
    conflict = null;
    save(v);
  }

  // Every way out (keys, buttons, the top bar, a typed address) passes the router's guard.
  ctx.guardLeaving((target) => {
    if (!dirty() || pendingNav === target) return true;
    pendingNav = target;
    say("Unsaved changes: press s to save, or repeat to leave without saving.", "warn");
    return false;
  });
  const go = (targetId) => (location.hash = link(targetId));
  /** What n and p walk: the review queue, or the catalog by id. */
  const queued = queue && queue.items.length > 0; // an empty queue: n and p walk the ids
  const sequence = queued ? queue.items.map((q) => q.id) : catalog.map((r) => r.id);

  function navigate(step) {
    const at = sequence.indexOf(id);
    const i = at < 0 ? (step > 0 ? 0 : -1) : at + step; // off the queue: n goes to its top
    if (i < 0) return say(queued ? "This is the top of the review queue." : "This is the first image.");
    if (i >= sequence.length) return say(queued ? "This is the end of the review queue." : "This is the last image.");
    go(sequence[i]);
  }

  /** Where this image stands in the review queue and why the model queued it. */
  function queueInfo() {
    if (byIds) return el("p.muted#box-queue", { dataset: { state: "ids" } }, "Id order: every image by id.");
    if (!queue) return notice(`The review queue is unavailable (${queueError}); n and p follow the id order.`, "warn");
    const at = queue.items.findIndex((q) => q.id === id);
    if (at >= 0) {
      const item = queue.items[at];
      return el(
        "p#box-queue.queue-info",
        { dataset: { state: "queued", reason: item.reason } },
        el("strong", {}, `Review queue ${at + 1} of ${queue.total}: `),
        item.message,
      );
    }
    const text = queue.total
      ? `Not in the review queue (${queue.total} to review); n goes to its top.`
      : "The review queue is empty (every located photo is annotated and agrees with its detection), so n and p follow the id order. Retrain and run `tiefjax index` to locate and score new photos.";
    return el("p.muted#box-queue", { dataset: { state: queue.total ? "off" : "empty" } }, text);
  }

  function navigateUnannotated() {
    for (let step = 1; step <= catalog.length; step++) {
      const r = catalog[(index + step) % catalog.length];
      if (!r.box && r.id !== id) return go(r.id);
    }
    if (rec.box) say("Every image has a box.", "success");
    else say("This is the only image without a box.");
  }

  /** Move the box by (dx, dy) image pixels, kept inside the image (Alt+arrows). */
  function nudge(dx, dy) {
    if (!draft) return say("There is no box to move: draw one first.");
    const before = copy(draft);
    const w = draft.right - draft.left;
    const h = draft.bottom - draft.top;
    const left = Math.min(Math.max(0, draft.left + dx), W - w);
    const top = Math.min(Math.max(0, draft.top + dy), H - h);
    draft = { left, top, right: left + w, bottom: top + h };
    message = null;
    changed(before);
    update();
  }
  const NUDGE = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

  const onKey = (event) => {
    if (typing(event) || document.querySelector("dialog[open]")) return;
    if (event.altKey && NUDGE[event.key] && !event.ctrlKey && !event.metaKey) {
      event.preventDefault();
      const [dx, dy] = NUDGE[event.key];
      const step = event.shiftKey ? 10 : 1;
      nudge(dx * step, dy * step);
      return;
    }
    if (event.altKey) return;
    const undoing = undoKey(event);
    if (undoing) {
      event.preventDefault();
      undoRedo(undoing);
      return;
    }
    if (event.ctrlKey || event.metaKey) return;
    const k = event.key;
    const handled = {
      n: () => navigate(1),
      ArrowRight: () => navigate(1),
      p: () => navigate(-1),
      ArrowLeft: () => navigate(-1),
      s: () => save(),
      c: () => clear(),
      Delete: () => clear(),
      Backspace: () => clear(),
      u: () => navigateUnannotated(),
      d: () => useDetection(),
      "+": () => zoom.zoomIn(),
      "=": () => zoom.zoomIn(),
      "-": () => zoom.zoomOut(),
      0: () => zoom.fit(),
      1: () => zoom.actual(),
      Escape: () => {
        if (drag) {
          draft = drag.before;
          drag = null;
          stage.classList.remove("dragging");
          update();
        }
      },
    }[k];
    if (handled) {
      event.preventDefault();
      handled();
    }
  };
  document.addEventListener("keydown", onKey);
  const beforeUnload = (event) => {
    if (dirty()) event.preventDefault();
  };
  window.addEventListener("beforeunload", beforeUnload);

  // ---- load the stored box -----------------------------------------------------------------
  update();
  try {
    saved = parseStored(await api.getBox(id));
  } catch (e) {
    say(errorText(e), "error");
  }
  if (!ctx.alive()) return cleanupFn;
  rec.box = saved ? { ...saved } : null;
  draft = saved ? { left: saved.left, top: saved.top, right: saved.right, bottom: saved.bottom } : null;
  update();
  stage.dataset.ready = "true";

  function cleanupFn() {
    document.removeEventListener("keydown", onKey);
    window.removeEventListener("beforeunload", beforeUnload);
    zoom.detach();
  }
  return cleanupFn;
}
