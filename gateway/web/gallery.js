// mattepipe result gallery: the one copy of its sort, filter, paging, card and ranking code.
// An ES module with no build step, used twice: the live page imports it (app.js), and
// gateway/results/gallery.py inlines this very text into the result zip's index.html, whose
// <script type="module"> then calls offlineGallery() (works from file:, no server).
// Output names and state lists are not known here: the server hands over ready URLs (live)
// or the naming affixes it used (offline), so the rule lives in Python only.
// It is inlined: no closing script tag and no network address may appear in this file.

export const PAGE = 100;

// ---- formatting -----------------------------------------------------------------------------
export const num = (v) => (v === null || v === undefined ? "–"
  : Number(Number(v).toPrecision(4)).toString());
export const dataKey = (k) => k.replace(/_(.)/g, (_, c) => c.toUpperCase());
// File names may hold #, ? or %: each path segment is escaped, the slashes kept.
export const urlPath = (p) => p.split("/").map(encodeURIComponent).join("/");
export function stem(p) {
  const slash = p.lastIndexOf("/"), dot = p.lastIndexOf(".");
  return dot > slash + 1 ? p.slice(0, dot) : p;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (text !== undefined) { e.textContent = text; }
  return e;
}

// ---- filter, sort, page ---------------------------------------------------------------------
// Indices 0..n-1 of the items in state `state` (all when empty) whose path holds `q` (any case).
export function filterItems(n, pathOf, stateOf, state, q) {
  const needle = (q || "").toLowerCase(), out = [];
  for (let i = 0; i < n; i++) {
    if (state && stateOf(i) !== state) { continue; }
    if (needle && pathOf(i).toLowerCase().indexOf(needle) < 0) { continue; }
    out.push(i);
  }
  return out;
}

// "mse-desc" → { key: "mse", desc: true }; "name-asc" sorts by path.
export function parseSort(value) {
  const parts = String(value).split("-");
  return { key: parts[0], desc: parts[1] === "desc" };
}

// Sorts the indices in place by path or by valueOf(i) (a number or null); an item without a
// value always comes last, ties keep index order. Returns idx.
export function sortIndices(idx, sort, pathOf, valueOf) {
  const sign = sort.desc ? -1 : 1;
  if (sort.key === "name") {
    return idx.sort((a, b) => {
      const x = pathOf(a), y = pathOf(b);
      return (x < y ? -1 : x > y ? 1 : 0) * sign || a - b;
    });
  }
  const vals = new Map();
  idx.forEach((i) => { const v = valueOf(i); vals.set(i, typeof v === "number" ? v : NaN); });
  return idx.sort((a, b) => {
    const x = vals.get(a), y = vals.get(b), xn = Number.isNaN(x), yn = Number.isNaN(y);
    if (xn || yn) { return xn === yn ? a - b : (xn ? 1 : -1); }  // no value: always last
    return x === y ? a - b : sign * (x - y);
  });
}

// Page `page` (clamped) of `total` items: { page, pages, start, end, text }.
export function pageOf(total, page, size) {
  const per = size || PAGE, pages = Math.max(1, Math.ceil(total / per));
  const p = Math.min(Math.max(page, 0), pages - 1);
  return { page: p, pages, start: p * per, end: Math.min(total, (p + 1) * per),
           text: "page " + (p + 1) + " / " + pages };
}

// ---- rendering ------------------------------------------------------------------------------
// One card. it: { path, state, error, sheet, cutout } with sheet/cutout ready URLs or null;
// metrics: [[key, number|null], …] of the model shown. opts: setSrc(img, url) to load an image
// (default: img.src = url), onOpen(img, it) for a click on the sheet (default: a link to it),
// noSheet(it) for the text where there is no sheet, cutoutLink (default true).
export function card(it, metrics, opts) {
  const o = opts || {};
  const div = el("div", "item");
  div.dataset.path = it.path; div.dataset.state = it.state;
  metrics.forEach(([k, v]) => { div.dataset[dataKey(k)] = v === null ? "" : String(v); });
  if (it.sheet) {
    const img = el("img"); img.loading = "lazy"; img.decoding = "async"; img.alt = it.path;
    if (o.setSrc) { o.setSrc(img, it.sheet); } else { img.src = it.sheet; }
    if (o.onOpen) {
      img.addEventListener("click", () => o.onOpen(img, it)); div.appendChild(img);
    } else {
      const a = el("a"); a.href = it.sheet; a.target = "_blank"; a.appendChild(img);
      div.appendChild(a);
    }
  } else {
    div.appendChild(el("div", "noimg", o.noSheet ? o.noSheet(it) : "no comparison sheet"));
  }
  const meta = el("div", "meta"), p = el("div", "path", it.path + " ");
  p.appendChild(el("span", "state " + it.state, it.state.replace(/_/g, " ")));
  meta.appendChild(p);
  const nums = metrics.filter(([, v]) => v !== null).map(([k, v]) => k + " " + num(v));
  if (nums.length) { meta.appendChild(el("div", "nums", nums.join(" · "))); }
  if (it.error) { meta.appendChild(el("div", "err", it.error)); }
  if (it.cutout && o.cutoutLink !== false) {
    const c = el("a", "", "cut-out"); c.href = it.cutout; c.target = "_blank";
    meta.appendChild(c);
  }
  div.appendChild(meta);
  return div;
}

// The models ranked per ground-truth metric ({metric: [best, …, worst]}, as report.json's
// summary.ranking has it): an <ol id="ranking">, or a line saying there is nothing to rank
// by when no image had ground truth (every list empty).
export function rankingList(ranking) {
  const rows = Object.entries(ranking || {}).filter(([, names]) => names && names.length);
  if (!rows.length) {
    return el("p", "dim", "No ground truth was given: the models are not ranked "
      + "(sad, mse, grad and conn need a gt/ image).");
  }
  const ol = el("ol"); ol.id = "ranking";
  rows.forEach(([k, names]) => {
    const li = el("li"); li.appendChild(el("b", "", k));
    li.appendChild(document.createTextNode(": " + names.join(" < ")));
    ol.appendChild(li);
  });
  return ol;
}

// ---- the offline page (index.html in the result zip) ----------------------------------------
// D: gateway/results/gallery.py's gallery_data(): { models, keys, gt_keys, free_keys,
// review_key, default_sort, ranking, names, items }, an
// item being [path, state, error, sheet, cut-out, [[values per key] per model] | null] where
// sheet/cut-out is 1 for names[col] = [prefix, suffix] around the path's stem, 0 for none,
// else the name itself.
export function offlineGallery(D) {
  const P = 0, S = 1, E = 2, SHEET = 3, CUT = 4, M = 5;
  const $ = (id) => document.getElementById(id);
  const sortEl = $("sort"), modelEl = $("model"), stateEl = $("state"), qEl = $("q");
  let view = [], page = 0;
  const opt = (sel, value, text) => {
    const o = el("option", "", text); o.value = value; sel.appendChild(o);
  };
  const value = (it, mi, ki) => {
    const per = it[M]; if (!per || !per[mi]) { return null; }
    const v = per[mi][ki]; return v === undefined ? null : v;
  };
  const di = D.keys.indexOf(D.default_sort);  // the ground-truth metric sorted by first
  const hasGt = di >= 0 && D.items.some((it) => it[M] && it[M].some((v) => v && v[di] !== null));
  (D.gt_keys || []).forEach((k) => {
    opt(sortEl, k + "-desc", k + " (worst first)"); opt(sortEl, k + "-asc", k + " (best first)");
  });
  (D.free_keys || []).forEach((k) => {
    opt(sortEl, k + "-desc", k + " (high first)"); opt(sortEl, k + "-asc", k + " (low first)");
  });
  // The engine's confidence (issue 16): least confident first is the review order.
  const ri = D.review_key ? D.keys.indexOf(D.review_key) : -1;
  const hasConf = ri >= 0 && D.items.some((it) => it[M] && it[M][0] && it[M][0][ri] !== null);
  if (ri >= 0) {
    opt(sortEl, D.review_key + "-asc", "needs review first (least confident)");
    opt(sortEl, D.review_key + "-desc", "most confident first");
  }
  opt(sortEl, "name-asc", "name (A→Z)"); opt(sortEl, "name-desc", "name (Z→A)");
  sortEl.value = hasGt ? D.default_sort + "-desc"
    : hasConf ? D.review_key + "-asc" : "name-asc";
  D.models.forEach((m, i) => opt(modelEl, String(i), m));
  if (D.models.length < 2) { $("model-label").hidden = true; }
  const states = {};
  D.items.forEach((it) => { states[it[S]] = (states[it[S]] || 0) + 1; });
  Object.keys(states).sort().forEach((s) => opt(stateEl, s, s + " (" + states[s] + ")"));
  const box = $("ranking-box");
  if (box && D.ranking) { box.replaceChildren(rankingList(D.ranking)); }

  const pathOf = (i) => D.items[i][P];
  function ref(it, col) {
    const v = it[col], names = D.names[col === SHEET ? "sheet" : "cutout"];
    const name = v === 1 ? names[0] + stem(it[P]) + names[1] : v || null;
    return name ? urlPath(name) : null;
  }
  function rebuild() {
    const mi = Number(modelEl.value || 0), sort = parseSort(sortEl.value);
    const ki = D.keys.indexOf(sort.key);
    view = sortIndices(filterItems(D.items.length, pathOf, (i) => D.items[i][S], stateEl.value,
      qEl.value), sort, pathOf, (i) => value(D.items[i], mi, ki));
    page = 0; render();
  }
  function render() {
    const pg = pageOf(view.length, page), mi = Number(modelEl.value || 0);
    page = pg.page;
    const frag = document.createDocumentFragment();
    view.slice(pg.start, pg.end).forEach((i) => {
      const it = D.items[i];
      frag.appendChild(card(
        { path: it[P], state: it[S], error: it[E], sheet: ref(it, SHEET), cutout: ref(it, CUT) },
        D.keys.map((k, ki) => [k, value(it, mi, ki)])));
    });
    $("items").replaceChildren(frag);
    $("page-info").textContent = pg.text;
    $("count").textContent = view.length + " of " + D.items.length + " images";
    $("page-prev").disabled = pg.page === 0;
    $("page-next").disabled = pg.page >= pg.pages - 1;
  }
  $("page-prev").addEventListener("click", () => { page--; render(); window.scrollTo(0, 0); });
  $("page-next").addEventListener("click", () => { page++; render(); window.scrollTo(0, 0); });
  [sortEl, modelEl, stateEl].forEach((e) => e.addEventListener("change", rebuild));
  qEl.addEventListener("input", rebuild);
  rebuild();
}
