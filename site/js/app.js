// Entry point: hash router, navbar, footer stats and the token dialog.
// Routes: #/gallery?page=N&size=S&mode=M   #/image/<id>?mode=M   #/search
//         #/boxes[/<id>]   #/similarity[/<id>]   #/history?image=ID&annotator=NAME&before=N

import * as api from "./api.js";
import * as boxEditor from "./box-editor.js";
import * as changes from "./changes.js";
import * as gallery from "./gallery.js";
import * as searchPage from "./search.js";
import * as simEditor from "./similarity-editor.js";
import { el, errorText, fmt, notice, parseHash, relativeAge } from "./ui.js";

const main = document.getElementById("main");
const footer = document.getElementById("footer");
let cleanup = null;
let generation = 0;
let shownHash = location.hash; // the route on screen
let leaveGuard = null; // set by a page: (hash) => false keeps it on screen (the page says why)

const ROUTES = {
  gallery: { nav: "gallery", title: "Gallery", render: gallery.renderGallery },
  image: { nav: "gallery", title: "Similar images", render: gallery.renderImage },
  search: { nav: "search", title: "Search", render: searchPage.render },
  boxes: { nav: "boxes", title: "Box editor", render: boxEditor.render },
  similarity: { nav: "similarity", title: "Similarity editor", render: simEditor.render },
  history: { nav: "history", title: "History", render: changes.render },
};

async function route() {
  if (leaveGuard && location.hash !== shownHash && !leaveGuard(location.hash)) {
    history.replaceState(null, "", shownHash || location.pathname + location.search);
    return;
  }
  leaveGuard = null;
  shownHash = location.hash;
  const { parts, query } = parseHash();
  const name = parts[0] || "gallery";
  const r = ROUTES[name];
  if (typeof cleanup === "function") cleanup();
  cleanup = null;
  const gen = ++generation;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (r && a.dataset.nav === r.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  main.replaceChildren();
  if (!r) {
    document.title = "Not found — tiefjax";
    main.append(
      el("h1", {}, "Page not found"),
      notice(`There is no page "${parts.join("/")}". Use the navigation above.`, "error"),
    );
    return;
  }
  document.title = `${r.title} — tiefjax`;
  const ctx = {
    parts: parts.slice(1),
    query,
    alive: () => gen === generation,
    refreshStats: () => renderStats(true),
    guardLeaving: (fn) => gen === generation && (leaveGuard = fn),
  };
  try {
    cleanup = (await r.render(main, ctx)) || null;
    if (gen !== generation && typeof cleanup === "function") {
      cleanup();
      cleanup = null;
    }
  } catch (e) {
    if (gen !== generation) return;
    main.replaceChildren(el("h1", {}, r.title), notice(errorText(e), "error"));
  }
}

async function renderStats(fresh = false) {
  try {
    const s = await api.stats(fresh);
    const parts = [
      `${s.images} images`,
      `${s.boxes} boxes`,
      `${s.triplets} triplets`,
    ];
    if (s.index) {
      let idx = `index: ${s.index.size ?? "?"} images`;
      const built = s.index.built_at ? new Date(s.index.built_at) : null;
      if (api.isStatic() && built && !Number.isNaN(built.getTime())) {
        idx += `, built ${built.toLocaleString()}`; // an export's age_s froze when it was written
      } else if (typeof s.index.age_s === "number") {
        idx += `, built ${relativeAge(s.index.age_s)}`;
      }
      if (typeof s.index.recall_at_10 === "number") idx += `, recall@10 ${fmt(s.index.recall_at_10, 2)}`;
      parts.push(idx);
      for (const warning of s.index.warnings ?? []) parts.push(`warning: ${warning}`);
    } else if (!api.isStatic()) {
      parts.push("no index yet (run tiefjax index)");
    }
    if (api.isStatic()) parts.push("static export");
    footer.replaceChildren(el("span", {}, parts.join(" · ")));
    footer.dataset.ready = "true";
  } catch (e) {
    footer.replaceChildren(el("span.error-text", {}, `Stats unavailable: ${errorText(e)}`));
  }
}

// ---- token dialog -------------------------------------------------------------------------

const dialog = document.getElementById("token-dialog");
const input = document.getElementById("token-input");
const reasonText = document.getElementById("token-reason");
const errorBox = document.getElementById("token-error");
const defaultReason = reasonText.innerHTML;
let pending = null;

function askToken(reason) {
  if (pending) return pending.promise;
  let resolve;
  const promise = new Promise((res) => (resolve = res));
  pending = { promise, resolve };
  reasonText.innerHTML = defaultReason;
  if (reason) reasonText.prepend(el("strong", {}, `${reason} `));
  errorBox.hidden = true;
  input.value = "";
  dialog.showModal();
  input.focus();
  return promise;
}

function finishToken(token) {
  if (!pending) return;
  const { resolve } = pending;
  pending = null;
  if (dialog.open) dialog.close();
  resolve(token);
}

document.getElementById("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) return;
  try {
    const annotator = await api.checkToken(token);
    if (annotator) {
      api.setToken(token, annotator);
      finishToken(token);
    } else {
      errorBox.textContent = "The server rejected this token. Copy it again from the server's output.";
      errorBox.hidden = false;
      input.select();
    }
  } catch (e) {
    errorBox.textContent = errorText(e);
    errorBox.hidden = false;
  }
});
document.getElementById("token-cancel").addEventListener("click", () => finishToken(null));
dialog.addEventListener("cancel", (event) => {
  event.preventDefault();
  finishToken(null);
});

// The skip link moves focus; following its "#main" would be taken for a route.
document.getElementById("skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});

// ---- who is annotating ----------------------------------------------------------------------

const annotatorPill = document.getElementById("annotator");

/** The top bar names the annotator the stored token belongs to; a click forgets the token. */
function showAnnotator(name) {
  annotatorPill.hidden = !name;
  annotatorPill.textContent = name ? `Annotating as ${name}` : "";
  annotatorPill.title = name ? `Saves are recorded as ${name}. Click to forget this token in this browser.` : "";
}
annotatorPill.addEventListener("click", () => api.setToken(""));

/** Learn (or re-check) whose the stored token is: a revoked one is forgotten. */
async function checkStoredToken() {
  const token = api.getToken();
  if (!token) return;
  try {
    const name = await api.checkToken(token);
    api.setToken(name ? token : "", name || "");
  } catch {
    showAnnotator(api.getAnnotator()); // server unreachable: keep what we knew
  }
}

// ---- start --------------------------------------------------------------------------------

async function start() {
  api.setTokenPrompt(askToken);
  const manifest = await api.init();
  const badge = document.getElementById("mode-badge");
  if (manifest) {
    document.body.classList.add("static-mode");
    badge.textContent = "static export";
    badge.title = "Browsing only: search by upload and the editors need the tiefjax server.";
    badge.hidden = false;
  } else {
    api.onTokenChange(showAnnotator);
    showAnnotator(api.getAnnotator());
    checkStoredToken();
  }
  window.addEventListener("hashchange", route);
  renderStats();
  await route();
  document.body.dataset.ready = "true";
}

start();
