// Runs index.html's module script (gateway/web/gallery.js inlined, then offlineGallery(data))
// under Node with the few DOM calls it uses, then drives the controls given as JSON steps and
// prints each step's page as JSON. A stand-in for the headless-browser tests: it checks the
// real sorting, filtering and paging code, not the rendering.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { pathToFileURL } = require("url");
const html = fs.readFileSync(process.argv[2], "utf8");
const steps = JSON.parse(process.argv[3]);
const data = html.match(/<script type="application\/json" id="data">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script type="module">\n([\s\S]*?)<\/script>/)[1];
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.dataset = {}; this.on = {};
    this._value = undefined; this.textContent = ""; this.hidden = false; this.disabled = false; }
  appendChild(c) { if (c.tag === "#frag") { this.children.push(...c.children); } else { this.children.push(c); } return c; }
  get text() { return this.tag === "#text" ? this.textContent : this.textContent + this.children.map((c) => c.text).join(""); }
  replaceChildren(f) { this.children = f ? (f.tag === "#frag" ? f.children : [f]) : []; }
  addEventListener(t, f) { (this.on[t] = this.on[t] || []).push(f); }
  get value() {
    if (this._value !== undefined) { return this._value; }
    return this.tag === "select" && this.children.length ? this.children[0].value : "";
  }
  set value(v) { this._value = v; }
}
const ids = {};
for (const m of html.matchAll(/<(\w+)[^>]*\bid="([\w-]+)"/g)) { ids[m[2]] = new El(m[1]); }
ids.state.appendChild(Object.assign(new El("option"), { value: "" }));
ids.data.textContent = data;
global.document = { getElementById: (id) => ids[id], createElement: (t) => new El(t),
                    createDocumentFragment: () => new El("#frag"),
                    createTextNode: (t) => Object.assign(new El("#text"), { textContent: t }) };
global.window = { scrollTo() {} };
(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "gallery-dom-"));
  const file = path.join(dir, "page.mjs");
  fs.writeFileSync(file, code);
  try { await import(pathToFileURL(file).href); } finally { fs.rmSync(dir, { recursive: true }); }
  const out = [];
  for (const [id, value, event] of steps) {
    if (value !== null) { ids[id].value = value; }
    (ids[id].on[event] || []).forEach((f) => f());
    out.push({ info: ids["page-info"].textContent, count: ids.count.textContent,
               ranking: ids["ranking-box"] ? ids["ranking-box"].text : null,
               items: ids.items.children.map((c) => ({ path: c.dataset.path, mse: c.dataset.mse })) });
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
