// The one data layer of the site: the live tiefjax server (/api/...) or a static export
// (static/...). Every URL is relative, so the site works from any sub-path of any host.

const TOKEN_KEY = "tiefjax.token";
const ANNOTATOR_KEY = "tiefjax.annotator";
const MODES = ["unsupervised", "supervised"];

let manifest = null; // static-export manifest, or null when a server answers
let statsCache = null;
let tokenPrompt = null; // async (reason) => token | null, set by the app

/** An API failure with the server's own message (meant for people). */
export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** Static mode: an export loads js/bundle.js (which sets the flag) and ships static/manifest.json;
 * the live site never asks for it. */
export async function init() {
  if (globalThis.TIEFJAX_STATIC_EXPORT) {
    const j = await staticData("static/manifest.js");
    if (j && j.static === true) manifest = j;
  }
  return manifest;
}

export const isStatic = () => manifest !== null;
export const staticManifest = () => manifest;

/** The key of an id in the export's file names, as tiefjax.export_site.static_key: the 64-bit
 * FNV-1a hash of its UTF-8 bytes in 16 hex digits (short on every file system). */
export function staticKey(id) {
  let key = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(id)) {
    key = ((key ^ BigInt(byte)) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return key.toString(16).padStart(16, "0");
}
/** The shard of a key, as tiefjax.export_site.shard_of: its first `digits` hex digits after
 * MurmurHash3's 64-bit finaliser. */
export function staticShardOf(key, digits) {
  const mask = 0xffffffffffffffffn;
  let k = BigInt(`0x${key}`);
  for (const mult of [0xff51afd7ed558ccdn, 0xc4ceb9fe1a85ec53n]) k = ((k ^ (k >> 33n)) * mult) & mask;
  return (k ^ (k >> 33n)).toString(16).padStart(16, "0").slice(0, digits);
}
const staticPath = (dir, id, ext) => `static/${dir}/${staticKey(id)}.${ext}`;
const idPath = (id) => `api/images/${encodeURIComponent(id)}`;

// ---- token --------------------------------------------------------------------------------

export const getToken = () => localStorage.getItem(TOKEN_KEY) || "";
/** The annotator the stored token names ("" when unknown or no token). */
export const getAnnotator = () => (getToken() && localStorage.getItem(ANNOTATOR_KEY)) || "";
export function setToken(token, annotator = "") {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  if (token && annotator) localStorage.setItem(ANNOTATOR_KEY, annotator);
  else localStorage.removeItem(ANNOTATOR_KEY);
  for (const fn of tokenListeners) fn(getAnnotator());
}
const tokenListeners = [];
/** Call `fn(annotator)` whenever the token changes. */
export const onTokenChange = (fn) => tokenListeners.push(fn);
export function setTokenPrompt(fn) {
  tokenPrompt = fn;
}

/** The annotator `token` names when the server accepts it (POST /api/auth/check), else null. */
export async function checkToken(token) {
  const r = await fetch("api/auth/check", {
    method: "POST",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (r.ok) return (await r.json()).annotator;
  if (r.status === 401 || r.status === 403) return null;
  throw await toError(r);
}

// ---- plumbing -----------------------------------------------------------------------------

async function toError(r) {
  let body = null;
  try {
    body = await r.json();
  } catch {
    body = null;
  }
  return errorOf(r.status, body);
}

/** The ApiError of an answer with this status and (parsed JSON, or null) body. */
function errorOf(status, body) {
  const e = body && body.error;
  const message =
    (e && e.message) ||
    (status === 404
      ? "Not found."
      : status >= 500
        ? `The server failed (HTTP ${status}). Check its log and try again.`
        : `Request failed (HTTP ${status}).`);
  return new ApiError(status, (e && e.code) || `http_${status}`, message, body);
}

async function fetchJson(url, options = {}) {
  let r;
  try {
    r = await fetch(url, options);
  } catch {
    throw new ApiError(0, "network", "Cannot reach the server. Is `tiefjax serve` still running?");
  }
  if (!r.ok) throw await toError(r);
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : null;
}

// A page opened from a file may not fetch(), but may load scripts: every data file of an export
// is one ("tiefjaxData(<the JSON>);"), loaded by a <script> element from a host and a file alike.
let scriptData;
globalThis.tiefjaxData = (value) => (scriptData = value);

/** A data file of a static export (`static/...js`), loaded as a script. */
function staticData(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    // a script's load event follows its execution at once: scriptData is this script's value
    script.onload = () => {
      script.remove();
      resolve(scriptData);
      scriptData = undefined;
    };
    script.onerror = () => {
      script.remove();
      reject(new ApiError(404, "not_found", `This export has no file ${decodeURIComponent(src)}.`));
    };
    document.head.append(script);
  });
}

function requireServer(what) {
  if (manifest) {
    throw new ApiError(
      0,
      "static",
      `${what} needs the tiefjax server; this is a static export of the catalog.`,
    );
  }
}

/** A write: needs the bearer token; asks for it when missing and again after a 401. */
async function write(method, url, body) {
  requireServer("Saving");
  let token = getToken();
  for (let attempt = 0; attempt < 3; attempt++) {
    if (!token) {
      token = tokenPrompt ? await tokenPrompt(attempt ? "The server rejected the token." : "") : "";
      if (!token) throw new ApiError(401, "no_token", "Not saved: a token is needed to save.");
    }
    const headers = { Authorization: `Bearer ${token}` };
    const options = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    try {
      const result = await fetchJson(url, options);
      statsCache = null;
      cursors.clear(); // a saved box can move images in or out of a filtered listing
      return result;
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) {
        setToken("");
        token = "";
        continue;
      }
      throw e;
    }
  }
  throw new ApiError(401, "no_token", "Not saved: the server did not accept the token.");
}

// ---- reads ----------------------------------------------------------------------------------

export function imageUrl(id) {
  return manifest ? staticPath("images", id, "jpg") : `${idPath(id)}/file`;
}

export function thumbUrl(id, size = 256) {
  return manifest ? staticPath("thumbs", id, "jpg") : `${idPath(id)}/thumb?size=${size}`;
}

export async function stats(fresh = false) {
  if (!statsCache || fresh) {
    statsCache = manifest ? staticData("static/stats.js") : fetchJson("api/stats");
    statsCache.catch(() => (statsCache = null));
  }
  return statsCache;
}

/** Search modes that have an index: ["unsupervised", "supervised"] or a subset. */
export async function modes() {
  if (manifest) return manifest.modes || MODES;
  try {
    const s = await stats();
    return (s.index && s.index.modes) || [];
  } catch {
    return MODES;
  }
}

const pageCache = new Map();
function staticPage(n) {
  if (!pageCache.has(n)) {
    const p = staticData(`static/pages/${n}.js`);
    p.catch(() => pageCache.delete(n));
    pageCache.set(n, p);
  }
  return pageCache.get(n);
}

// Where each page of a listing starts, as the server's keyset cursor: `${listing}@${offset}` ->
// the `next` of the page that ended there. Walking pages in order (the pager, PageDown, the
// editors' catalog) then asks for `after=<cursor>`, which costs the same on page 1 and page 5,000;
// a page reached by a jump (a deep link, "last") is asked for by offset. Dropped after writes.
const cursors = new Map();

/** {total, offset, limit, images:[{id,width,height,box,detection}]} for any offset/limit.
 * `filters` ({q, match, state, sort, order}: GET /api/images) need the server; a static export
 * lists every image by id. */
export async function listImages(offset = 0, limit = 24, filters = {}) {
  if (!manifest) {
    const listing = JSON.stringify([limit, Object.entries(filters).sort()]);
    const key = `${listing}@${offset}`;
    const ask = (where) => fetchJson(`api/images?${new URLSearchParams({ ...where, limit: String(limit), ...filters })}`);
    let page;
    if (cursors.has(key)) {
      try {
        page = await ask({ after: cursors.get(key) });
      } catch (e) {
        // the cursor's image left this listing meanwhile (another tab, tiefjax init): by offset
        if (!(e instanceof ApiError) || e.status < 400 || e.status >= 500) throw e;
        cursors.delete(key);
      }
    }
    page = page || (await ask({ offset: String(offset) }));
    if (cursors.size > 1000) cursors.clear(); // bounded: a long session's listings
    if (page.next !== null && page.next !== undefined) cursors.set(`${listing}@${offset + page.images.length}`, page.next);
    return { ...page, offset };
  }
  const size = manifest.page_size;
  const total = manifest.total;
  const first = Math.floor(offset / size);
  const last = Math.floor((Math.min(offset + limit, total) - 1) / size);
  const pages = [];
  for (let n = first; n <= last; n++) pages.push(staticPage(n));
  const images = (await Promise.all(pages)).flatMap((p) => p.images);
  const start = offset - first * size;
  return { total, offset, limit, images: images.slice(start, start + limit) };
}

let catalog = null;

/** Every image record (server pages through /api/images; the export through its pages).
 * Cached: editors share the list and update its boxes as they save. */
export async function allImages(fresh = false) {
  if (!catalog || fresh) {
    catalog = loadAll();
    catalog.catch(() => (catalog = null));
  }
  return catalog;
}

async function loadAll() {
  const out = [];
  let offset = 0;
  for (;;) {
    const page = await listImages(offset, 200);
    out.push(...page.images);
    offset += page.images.length;
    if (!page.images.length || offset >= page.total) return out;
  }
}

const shardCache = new Map();
/** The export's shard file `static/<dir>/<shard>.js` holding `id` ({id: value}), cached:
 * records and neighbours are grouped by the first `shard_digits` hex digits of the id's key. */
async function staticShard(dir, id) {
  const path = `static/${dir}/${staticShardOf(staticKey(id), manifest.shard_digits)}.js`;
  if (!shardCache.has(path)) {
    const p = staticData(path);
    p.catch(() => shardCache.delete(path));
    shardCache.set(path, p);
  }
  return (await shardCache.get(path))[id];
}

export async function getImage(id) {
  if (!manifest) return fetchJson(idPath(id));
  const rec = await staticShard("records", id);
  if (rec) return rec;
  throw new ApiError(404, "not_found", `No image "${id}" in this catalog.`);
}

/** The records of `ids`, in order (null for one that cannot be read): boxes for result cards. */
export async function records(ids) {
  const one = manifest ? (id) => staticShard("records", id) : (id) => fetchJson(idPath(id));
  return Promise.all(ids.map((id) => one(id).then((r) => r || null, () => null)));
}

/** The stored box {left, top, right, bottom, version} of an image, or null: read fresh from the
 * image's record (GET .../box answers 404 for an image without one). */
export async function getBox(id) {
  requireServer("The box editor");
  return (await fetchJson(idPath(id))).box;
}

/** {id, mode, hits:[{id, score}]} */
export async function similar(id, mode = "unsupervised", k = 10) {
  if (manifest) {
    const r = (await staticShard(`similar/${mode}`, id)) || { id, mode, hits: [] };
    return { ...r, hits: r.hits.slice(0, k) };
  }
  return fetchJson(`${idPath(id)}/similar?mode=${encodeURIComponent(mode)}&k=${k}`);
}

/** Upload search: {width, height, box, probability, fallback, mode, copy_of, copy_score, hits}. `onProgress(phase,
 * fraction)` hears "upload" with the share of the bytes sent, then "search" once all are sent
 * (XMLHttpRequest: fetch() reports no upload progress). */
export async function search(file, mode = "unsupervised", k = 12, onProgress = () => {}) {
  requireServer("Search by upload");
  const form = new FormData();
  form.append("image", file, file.name || "pasted-image");
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `api/search?mode=${encodeURIComponent(mode)}&k=${k}`);
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress("upload", e.loaded / e.total);
    xhr.upload.onload = () => onProgress("search", 1);
    xhr.onload = () => (xhr.status >= 200 && xhr.status < 300 ? resolve(xhr.response) : reject(errorOf(xhr.status, xhr.response)));
    xhr.onerror = () => reject(new ApiError(0, "network", "Cannot reach the server. Is `tiefjax serve` still running?"));
    xhr.send(form);
  });
}

export async function candidates(id, mode = "supervised", k = 24) {
  requireServer("The similarity editor");
  return fetchJson(`api/candidates/${encodeURIComponent(id)}?mode=${encodeURIComponent(mode)}&k=${k}`);
}

/** The review queue the model fills, most uncertain first: `kind` "boxes" or "triplets";
 * {total, next, items} (GET /api/review/...). */
export async function reviewQueue(kind, limit = 200) {
  requireServer(kind === "boxes" ? "The box editor" : "The similarity editor");
  return fetchJson(`api/review/${kind}?limit=${limit}`);
}

export async function listTriplets(reference) {
  requireServer("The similarity editor");
  return (await fetchJson(`api/triplets?reference=${encodeURIComponent(reference)}`)).triplets;
}

// ---- writes ---------------------------------------------------------------------------------

/** PUT a box in natural image pixels; version = the version read (0 when there was none). */
export function putBox(id, box, version) {
  const { left, top, right, bottom } = box;
  return write("PUT", `${idPath(id)}/box`, { left, top, right, bottom, version });
}

export function deleteBox(id, version) {
  return write("DELETE", `${idPath(id)}/box?version=${version}`, { version });
}

/** Bulk review: save the detected boxes of `images` ([{id, version}], version = the box version
 * seen, 0 for none) as annotated boxes; {saved: [box], skipped: [{id, reason}]}. Without
 * `overwrite` images that have a box are skipped. */
export function acceptDetections(images, overwrite = false) {
  return write("POST", "api/boxes/accept-detections", { images, overwrite });
}

export function addTriplet(reference, positive, negative) {
  return write("POST", "api/triplets", { reference, positive, negative });
}

/** Store the triplets that "same product" / "more" / "less" marks expand into, in one
 * transaction: {added: [triplet], existing: n} (POST /api/triplets/marks). */
export function addMarkedTriplets(reference, same, more, less) {
  return write("POST", "api/triplets/marks", { reference, same, more, less });
}

/** Who changed which box or triplet, newest first: {items, next} (GET /api/history);
 * `filters`: image, annotator, before (the `next` of the previous page), limit. */
export async function changes(filters = {}) {
  requireServer("The history");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  return fetchJson(`api/history?${q}`);
}

/** Delete these triplets in one transaction (all, or none when one is gone): {deleted}. */
export function deleteTriplets(ids) {
  return write("POST", "api/triplets/delete", { ids });
}

export function deleteTriplet(tid) {
  return write("DELETE", `api/triplets/${encodeURIComponent(tid)}`);
}
