// mattepipe web page: resumable upload (tus, 8 MiB chunks), live job list, per-job gallery.
// Plain browser JavaScript (an ES module), no build step. Several files or a folder are packed
// here into an uncompressed zip (the Blob only references the files, so packing reads each file
// once for its CRC and holds nothing in memory); an archive or one image is sent as it is.
// The gallery's sorting, paging and cards are gallery.js, shared with the result zip's
// index.html; which job states are final and the metric names come from GET /api-info, and
// each image's URLs from the gallery rows: the page repeats no server rule.
import { PAGE, card, num, pageOf, parseSort, sortIndices } from "./gallery.js";

(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const CHUNK = 8 * 1024 * 1024;
  const POLL_MS = 2000;
  const SORT_CAP = 20000;
  const KEY_STORE = "mattepipe.apiKey";
  const TUS_STORE = "mattepipe.tus:";
  // From GET /api-info before the first poll (loadInfo).
  const info = { final_job_states: [], final_task_states: [],
                 metrics: { ground_truth: [], free: [] } };

  // ---- API access ---------------------------------------------------------------------------
  const apiKey = () => localStorage.getItem(KEY_STORE) || "";
  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (apiKey()) { h.Authorization = "Bearer " + apiKey(); }
    return h;
  }
  async function failure(res) {
    let detail = res.statusText;
    try { const j = await res.json(); detail = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); } catch (e) { /* not JSON */ }
    const err = new Error(detail + " (HTTP " + res.status + ")");
    err.status = res.status;
    return err;
  }
  async function api(path, opts) {
    const o = Object.assign({}, opts || {});
    o.headers = headers(o.headers);
    const res = await fetch(path, o);
    if (!res.ok) { throw await failure(res); }
    return res.status === 204 ? null : res.json();
  }
  function say(text, info) {
    const m = $("message");
    m.hidden = !text; m.textContent = text || ""; m.className = info ? "info" : "";
  }
  function sayError(err) {
    if (err && err.status === 401) {
      say("This gateway needs an API key: enter it at the top right and press save.");
    } else { say(String(err && err.message ? err.message : err)); }
  }

  // ---- formatting -----------------------------------------------------------------------------
  function size(n) {
    const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + u[i];
  }
  function duration(s) {
    if (s === null || s === undefined) { return "–"; }
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return (h ? h + "h " : "") + (h || m ? m + "m " : "") + r + "s";
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }

  // ---- STORE-only zip writer (ZIP64 where sizes, offsets or counts need it) -------------------
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) { c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; }
      t[n] = c >>> 0;
    }
    return t;
  })();
  async function crc32(blob, onBytes) {
    let c = 0xffffffff;
    for (let pos = 0; pos < blob.size; pos += CHUNK) {
      const buf = new Uint8Array(await blob.slice(pos, pos + CHUNK).arrayBuffer());
      for (let i = 0; i < buf.length; i++) { c = CRC_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8); }
      onBytes(buf.length);
    }
    return (c ^ 0xffffffff) >>> 0;
  }
  function dosTime(ms) {
    const d = new Date(ms || Date.now());
    const year = Math.max(1980, d.getFullYear());
    return { time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
             date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate() };
  }
  const MAX32 = 0xffffffff;
  function writer(n) {
    const b = new Uint8Array(n), v = new DataView(b.buffer); let o = 0;
    return {
      bytes: b,
      u16(x) { v.setUint16(o, x, true); o += 2; return this; },
      u32(x) { v.setUint32(o, x >>> 0, true); o += 4; return this; },
      u64(x) { v.setUint32(o, x % 0x100000000, true); v.setUint32(o + 4, Math.floor(x / 0x100000000), true); o += 8; return this; },
      raw(a) { b.set(a, o); o += a.length; return this; },
    };
  }
  // entries: [{name, file}] → Blob of a zip whose members are the files themselves.
  // force64 writes the ZIP64 forms even where sizes are small (tests of that path).
  async function packZip(entries, onProgress, force64) {
    const enc = new TextEncoder(), parts = [], central = [];
    const total = entries.reduce((s, e) => s + e.file.size, 0);
    let offset = 0, done = 0;
    for (const e of entries) {
      const name = enc.encode(e.name), sz = e.file.size, t = dosTime(e.file.lastModified);
      const crc = await crc32(e.file, (k) => { done += k; onProgress(done, total); });
      const big = force64 || sz >= MAX32;
      const local = writer(30 + name.length + (big ? 20 : 0));
      local.u32(0x04034b50).u16(big ? 45 : 20).u16(0x0800).u16(0).u16(t.time).u16(t.date)
        .u32(crc).u32(big ? MAX32 : sz).u32(big ? MAX32 : sz).u16(name.length).u16(big ? 20 : 0)
        .raw(name);
      if (big) { local.u16(1).u16(16).u64(sz).u64(sz); }
      parts.push(local.bytes, e.file);
      central.push({ name, sz, crc, t, offset, big, far: force64 || offset >= MAX32 });
      offset += local.bytes.length + sz;
    }
    const cdStart = offset;
    for (const c of central) {
      const z = [];
      if (c.big) { z.push(c.sz, c.sz); }
      if (c.far) { z.push(c.offset); }
      const w = writer(46 + c.name.length + (z.length ? 4 + 8 * z.length : 0));
      w.u32(0x02014b50).u16(z.length ? 45 : 20).u16(z.length ? 45 : 20).u16(0x0800).u16(0)
        .u16(c.t.time).u16(c.t.date).u32(c.crc)
        .u32(c.big ? MAX32 : c.sz).u32(c.big ? MAX32 : c.sz)
        .u16(c.name.length).u16(z.length ? 4 + 8 * z.length : 0).u16(0).u16(0).u16(0).u32(0)
        .u32(c.far ? MAX32 : c.offset).raw(c.name);
      if (z.length) { w.u16(1).u16(8 * z.length); z.forEach((x) => w.u64(x)); }
      parts.push(w.bytes); offset += w.bytes.length;
    }
    const cdSize = offset - cdStart, count = central.length;
    const zip64 = force64 || count >= 0xffff || cdStart >= MAX32 || cdSize >= MAX32;
    if (zip64) {
      const r = writer(56 + 20);
      r.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0).u64(count).u64(count)
        .u64(cdSize).u64(cdStart);
      r.u32(0x07064b50).u32(0).u64(offset).u32(1);
      parts.push(r.bytes);
    }
    const end = writer(22);
    const n16 = zip64 ? 0xffff : count;
    end.u32(0x06054b50).u16(0).u16(0).u16(n16).u16(n16)
      .u32(zip64 ? MAX32 : cdSize).u32(zip64 ? MAX32 : cdStart).u16(0);
    parts.push(end.bytes);
    return new Blob(parts, { type: "application/zip" });
  }

  // ---- tus 1.0 resumable upload ---------------------------------------------------------------
  const TUS = { "Tus-Resumable": "1.0.0" };
  const b64 = (s) => btoa(Array.from(new TextEncoder().encode(s), (c) => String.fromCharCode(c)).join(""));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const up = { xhr: null, paused: false, busy: false };

  async function tusOffset(url) {
    const res = await fetch(url, { method: "HEAD", headers: headers(TUS), cache: "no-store" });
    if (res.status === 404 || res.status === 410 || res.status === 403) { return null; }
    if (!res.ok) { throw await failure(res); }
    return Number(res.headers.get("Upload-Offset"));
  }
  async function tusCreate(blob, filename) {
    const res = await fetch("/files/", { method: "POST", headers: headers(Object.assign({
      "Upload-Length": String(blob.size),
      "Upload-Metadata": "filename " + b64(filename) + ",filetype " + b64(blob.type || "application/octet-stream"),
    }, TUS)) });
    if (res.status !== 201) { throw await failure(res); }
    return new URL(res.headers.get("Location"), location.href).href;
  }
  function send(method, url, hdrs, body, onSent) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest(); up.xhr = xhr;
      xhr.open(method, url);
      Object.entries(headers(hdrs)).forEach(([k, v]) => xhr.setRequestHeader(k, v));
      xhr.upload.onprogress = (e) => onSent(e.loaded);
      xhr.onload = () => resolve(xhr);
      xhr.onerror = () => reject(Object.assign(new Error("network error"), { retry: true }));
      xhr.onabort = () => reject(Object.assign(new Error("paused"), { paused: true }));
      xhr.send(body);
    });
  }
  async function tusUpload(blob, filename, fingerprint, onProgress) {
    const store = TUS_STORE + fingerprint;
    let url = localStorage.getItem(store), offset = url ? await tusOffset(url) : null;
    if (offset === null) {
      try { url = await tusCreate(blob, filename); } catch (err) {
        err.noTus = err.status === 404 || err.status === 405; throw err;
      }
      offset = 0;
      localStorage.setItem(store, url);
    }
    let failures = 0;
    onProgress(offset);
    while (offset < blob.size) {
      if (up.paused) { throw Object.assign(new Error("paused"), { paused: true }); }
      try {
        const xhr = await send("PATCH", url, Object.assign({ "Upload-Offset": String(offset),
          "Content-Type": "application/offset+octet-stream" }, TUS),
          blob.slice(offset, offset + CHUNK), (k) => onProgress(offset + k));
        if (xhr.status === 204 || xhr.status === 200) {
          offset = Number(xhr.getResponseHeader("Upload-Offset")); failures = 0;
          onProgress(offset); continue;
        }
        if (xhr.status === 404 || xhr.status === 410) { localStorage.removeItem(store); }
        if (xhr.status !== 409 && xhr.status < 500) {
          let detail = xhr.responseText;
          try { detail = JSON.parse(detail).detail; } catch (e) { /* not JSON */ }
          throw Object.assign(new Error(detail + " (HTTP " + xhr.status + ")"), { status: xhr.status });
        }
      } catch (err) {
        if (!err.retry) { throw err; }
      }
      // Network error, a 5xx or an offset conflict: wait, ask the server where it stands, go on.
      if (++failures > 8) { throw new Error("upload keeps failing; press the button to resume"); }
      $("upload-status").textContent = "connection trouble, retrying (" + failures + ") …";
      await sleep(Math.min(30000, 500 * 2 ** failures));
      const at = await tusOffset(url);
      if (at === null) { localStorage.removeItem(store); throw new Error("the server forgot this upload; start again"); }
      offset = at;
    }
    return { uploadId: url.replace(/\/+$/, "").split("/").pop(), store };
  }
  // The output options that are set (README, "Output options"); empty fields are the defaults
  // and are not sent, so the server's checks see only what the user chose.
  function outputOptions() {
    const opts = {};
    const fields = { format: "format", max_size: "max-size", background: "background", crop: "crop" };
    for (const [key, id] of Object.entries(fields)) {
      const el = $(id);
      const v = el ? el.value.trim() : "";
      if (v !== "") { opts[key] = v; }
    }
    return opts;
  }
  // Without the tus router (404/405 on /files/): one plain request, not resumable.
  async function plainUpload(blob, filename, onProgress) {
    const q = new URLSearchParams({ filename, model: $("model").value, output: $("output").value,
      ...outputOptions() });
    const xhr = await send("POST", "/upload?" + q, { "Content-Type": "application/octet-stream" },
      blob, onProgress);
    if (xhr.status !== 202) { throw Object.assign(new Error(xhr.responseText + " (HTTP " + xhr.status + ")"), { status: xhr.status }); }
    return JSON.parse(xhr.responseText);
  }

  // ---- upload panel -----------------------------------------------------------------------------
  let chosen = [];  // [{name, file}]
  const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|gz)$/i;
  function choose(files, relative) {
    chosen = Array.from(files)
      .map((f) => ({ name: (relative && f.webkitRelativePath) || f.name, file: f }))
      .filter((e) => !e.name.split("/").some((s) => s.startsWith(".")));  // .DS_Store and co.
    const bytes = chosen.reduce((s, e) => s + e.file.size, 0);
    $("selection").textContent = chosen.length === 0 ? "nothing chosen yet"
      : chosen.length === 1 ? chosen[0].name + " (" + size(bytes) + ")"
      : chosen.length + " files, " + size(bytes) + " — sent as one zip";
    $("start").disabled = chosen.length === 0 || up.busy;
    $("start").textContent = "Upload and start";
    setBar($("upload-bar"), 0); $("upload-status").textContent = "";
  }
  function setBar(bar, pct, cls) {
    bar.style.width = Math.max(0, Math.min(100, pct)).toFixed(1) + "%";
    bar.className = "bar" + (cls ? " " + cls : "");
  }
  function fingerprint(entries) {
    let h = 0x811c9dc5;  // FNV-1a over names, sizes and times: the same pick resumes
    for (const e of entries) {
      const s = e.name + "|" + e.file.size + "|" + e.file.lastModified + "\n";
      for (let i = 0; i < s.length; i++) { h = Math.imul(h ^ s.charCodeAt(i), 16777619) >>> 0; }
    }
    return h.toString(16);
  }
  async function startUpload() {
    if (!chosen.length || up.busy) { return; }
    up.busy = true; up.paused = false; say("");
    $("start").disabled = true; $("pause").hidden = false; $("pause").textContent = "Pause";
    const status = $("upload-status"), bar = $("upload-bar");
    try {
      let blob, filename;
      if (chosen.length === 1) {
        blob = chosen[0].file; filename = chosen[0].file.name;
      } else {
        const top = chosen[0].name.includes("/") ? chosen[0].name.split("/")[0] : "images";
        filename = top + ".zip";
        blob = await packZip(chosen, (d, t) => {
          setBar(bar, t ? (100 * d) / t : 100);
          status.textContent = "packing " + chosen.length + " files: " + size(d) + " of " + size(t);
        });
      }
      const fp = filename + ":" + blob.size + ":" + fingerprint(chosen);
      const t0 = performance.now();
      const progress = (sent) => {
        setBar(bar, blob.size ? (100 * sent) / blob.size : 100);
        const rate = sent / Math.max(0.001, (performance.now() - t0) / 1000);
        status.textContent = "uploading " + filename + ": " + size(sent) + " of " + size(blob.size)
          + " (" + size(rate) + "/s)";
      };
      let job;
      try {
        const done = await tusUpload(blob, filename, fp, progress);
        status.textContent = "upload complete, creating the job …";
        job = await api("/jobs", { method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ upload_id: done.uploadId, model: $("model").value, output: $("output").value,
            ...outputOptions() }) });
        localStorage.removeItem(done.store);
      } catch (err) {
        if (!err.noTus) { throw err; }
        job = await plainUpload(blob, filename, progress);
      }
      setBar(bar, 100, "done");
      status.textContent = "job " + job.job_id + " started";
      chosen = []; $("selection").textContent = "nothing chosen yet";
      ["file-input", "files-input", "folder-input"].forEach((id) => { $(id).value = ""; });
      poll();
    } catch (err) {
      if (err.paused) { status.textContent = "paused — press Resume to go on"; }
      else { setBar(bar, 100, "bad"); status.textContent = "upload failed"; sayError(err); }
      $("start").textContent = "Resume";
    } finally {
      up.busy = false; up.xhr = null; $("pause").hidden = true;
      $("start").disabled = chosen.length === 0;
    }
  }

  // ---- jobs table ---------------------------------------------------------------------------------
  const rows = new Map();
  let jobs = new Map(), pollTimer = null;
  async function download(job, partial) {
    const url = "/download/" + encodeURIComponent(job) + (partial ? "?partial=1" : "");
    try {  // with an API key the link cannot carry the header: fetch, then save the blob
      const res = await fetch(url, { headers: headers() });
      if (!res.ok) { throw await failure(res); }
      const a = el("a"); a.href = URL.createObjectURL(await res.blob());
      a.download = "mattepipe-" + job + ".zip"; document.body.appendChild(a); a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 60000);
    } catch (err) { sayError(err); }
  }
  function makeRow(id) {
    const tr = el("tr"); tr.dataset.job = id;
    const name = el("td"); name.append(el("div", "name"), el("div", "sub"));
    const state = el("td"); state.append(el("span", "state"));
    const prog = el("td"); const box = el("div", "progress"); box.append(el("div", "bar"));
    prog.append(box, el("div", "sub"));
    const counts = el("td", "num"); counts.append(el("div"), el("div", "sub"));
    const speed = el("td", "num"); speed.append(el("div"), el("div", "sub"));
    const actions = el("td", "actions");
    const open = el("button", "open", "Gallery"); open.type = "button";
    const dl = el("a", "btn download", "Download");
    const cancel = el("button", "cancel danger", "Cancel"); cancel.type = "button";
    actions.append(open, dl, cancel);
    tr.append(name, state, prog, counts, speed, actions);
    tr.addEventListener("click", (e) => { if (e.target === tr || !e.target.closest("a,button")) { openGallery(id); } });
    open.addEventListener("click", () => openGallery(id));
    dl.addEventListener("click", (e) => {
      if (apiKey()) { e.preventDefault(); download(id, dl.dataset.partial === "1"); }
    });
    cancel.addEventListener("click", async () => {
      if (!confirm("Cancel job " + id + " and remove its files?")) { return; }
      try { await api("/jobs/" + encodeURIComponent(id), { method: "DELETE" }); poll(); } catch (err) { sayError(err); }
    });
    return tr;
  }
  function updateRow(tr, j) {
    const [name, state, prog, counts, speed, actions] = tr.children;
    const final = info.final_job_states.includes(j.state), bad = j.failed + j.rejected;
    name.children[0].textContent = j.filename || j.job_id;
    name.children[1].textContent = j.job_id + " · " + j.model + " · " + j.output;
    const badge = state.children[0]; badge.textContent = j.state.replace(/_/g, " ");
    badge.className = "state " + j.state; badge.title = j.error || "";
    setBar(prog.querySelector(".bar"), j.progress,
      j.state === "completed" ? "done" : (j.state === "failed" || bad) && final ? "bad" : "");
    prog.children[1].textContent = num(j.progress) + " %";
    counts.children[0].textContent = j.completed + " / " + j.total;
    counts.children[1].textContent = [bad ? j.failed + " failed, " + j.rejected + " rejected" : "",
      j.retrying ? j.retrying + " retrying" : ""].filter(Boolean).join(" · ");
    speed.children[0].textContent = j.throughput_per_s ? num(j.throughput_per_s) + " img/s" : "–";
    speed.children[1].textContent = final ? (j.finished_at && j.started_at ? "took " + duration(j.finished_at - j.started_at) : "")
      : "ETA " + duration(j.eta_s);
    const dl = actions.querySelector(".download"), cancel = actions.querySelector(".cancel");
    const partial = !final;
    dl.href = "/download/" + encodeURIComponent(j.job_id) + (partial ? "?partial=1" : "");
    dl.dataset.partial = partial ? "1" : "0";
    dl.textContent = partial ? "Download so far" : "Download";
    dl.hidden = j.state === "cancelled" || j.total === 0 && !final;
    cancel.textContent = final ? "Delete" : "Cancel";
    cancel.hidden = j.state === "cancelled";
    tr.classList.toggle("selected", gal.job === j.job_id);
  }
  async function poll() {
    clearTimeout(pollTimer);
    try {
      const data = await api("/jobs?limit=50");
      const body = document.querySelector("#jobs tbody"), seen = new Set();
      jobs = new Map(data.jobs.map((j) => [j.job_id, j]));
      data.jobs.forEach((j, i) => {
        let tr = rows.get(j.job_id);
        if (!tr) { tr = makeRow(j.job_id); rows.set(j.job_id, tr); }
        if (body.children[i] !== tr) { body.insertBefore(tr, body.children[i] || null); }
        updateRow(tr, j); seen.add(j.job_id);
      });
      rows.forEach((tr, id) => { if (!seen.has(id)) { tr.remove(); rows.delete(id); } });
      $("jobs-empty").hidden = data.jobs.length > 0;
      $("jobs-updated").textContent = (data.total > data.jobs.length ? data.jobs.length + " of " + data.total + " · " : "")
        + "updated " + new Date().toLocaleTimeString();
      if ($("message").textContent.includes("API key")) { say(""); }
      galleryTick();
      follow(data.jobs);
    } catch (err) { sayError(err); }
    pollTimer = setTimeout(poll, streamed() ? STREAMED_POLL_MS : POLL_MS);
  }

  // ---- live progress: GET /jobs/{id}/events (Server-Sent Events) --------------------------------
  // Read with fetch, not EventSource, which cannot send the API key header. A few running jobs
  // are followed live (a browser holds ~6 connections per origin: the rest stay free); the
  // list keeps polling, slowly while every running job has a stream. A stream that fails
  // (an older gateway, 429 at MAX_EVENT_STREAMS, a network break) pauses streams for a while
  // and the page polls as it always did.
  const STREAMS = 3, STREAMED_POLL_MS = 15000, STREAM_PAUSE_MS = 30000;
  const streams = new Map();  // job id → AbortController
  let streamsPausedUntil = 0;
  const running = (list) => list.filter((j) => !info.final_job_states.includes(j.state));
  function streamed() {
    const r = running(Array.from(jobs.values()));
    return r.length > 0 && r.every((j) => streams.has(j.job_id));
  }
  function follow(list) {
    const live = new Set(running(list).map((j) => j.job_id));
    streams.forEach((ctl, id) => { if (!live.has(id)) { ctl.abort(); streams.delete(id); } });
    if (!window.TextDecoderStream || performance.now() < streamsPausedUntil) { return; }
    live.forEach((id) => { if (streams.size < STREAMS && !streams.has(id)) { stream(id); } });
  }
  function applyStatus(j) {
    window.mattepipe.liveEvents++;
    jobs.set(j.job_id, Object.assign(jobs.get(j.job_id) || {}, j));
    const tr = rows.get(j.job_id);
    if (tr) { updateRow(tr, jobs.get(j.job_id)); }
    galleryTick();
  }
  function sseEvent(block) {  // one event's lines → {event, data}; comments (heartbeats) skipped
    const ev = { event: "message", data: [] };
    block.split(/\r\n|\r|\n/).forEach((line) => {
      if (!line || line[0] === ":") { return; }
      const at = line.indexOf(":"), field = at < 0 ? line : line.slice(0, at);
      const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
      if (field === "event") { ev.event = value; } else if (field === "data") { ev.data.push(value); }
    });
    return { event: ev.event, data: ev.data.join("\n") };
  }
  async function stream(id) {
    const ctl = new AbortController(); streams.set(id, ctl);
    let ended = false;
    try {
      const res = await fetch("/jobs/" + encodeURIComponent(id) + "/events", {
        headers: headers({ Accept: "text/event-stream" }), signal: ctl.signal, cache: "no-store" });
      if (!res.ok || !res.body) { throw await failure(res); }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const gap = /\r\n\r\n|\n\n|\r\r/;
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) { break; }
        buf += value;
        let m;
        while ((m = gap.exec(buf))) {
          const ev = sseEvent(buf.slice(0, m.index)); buf = buf.slice(m.index + m[0].length);
          if (ev.event === "status" || ev.event === "end") { applyStatus(JSON.parse(ev.data)); }
          if (ev.event === "end") { ended = true; }
        }
      }
    } catch (err) { /* the polling below takes over */ }
    if (streams.get(id) === ctl) { streams.delete(id); }
    if (ctl.signal.aborted) { return; }
    if (!ended) { streamsPausedUntil = performance.now() + STREAM_PAUSE_MS; }
    poll();
  }

  // ---- gallery --------------------------------------------------------------------------------
  const gal = { job: null, page: 0, all: null, done: -1, loading: false, urls: [], loadedAt: 0 };
  function flatMetrics(m, model) {
    if (!m) { return {}; }
    const nested = Object.values(m).filter((v) => v && typeof v === "object");
    if (!nested.length) { return m; }
    return m[(model || "").split(",")[0]] || nested[0];
  }
  function openGallery(id) {
    gal.job = id; gal.page = 0; gal.all = null; gal.done = -1;
    $("gallery").hidden = false; $("g-title").textContent = (jobs.get(id) || {}).filename || id;
    $("g-sort").value = "id"; $("g-state").value = "";
    rows.forEach((tr, jid) => tr.classList.toggle("selected", jid === id));
    loadGallery().then(() => $("gallery").scrollIntoView({ behavior: "smooth", block: "start" }));
  }
  function galleryTick() {  // while the job runs, follow it
    const j = gal.job && jobs.get(gal.job);
    if (!j || $("gallery").hidden || gal.loading) { return; }
    const done = j.completed + j.failed + j.rejected;
    const throttle = gal.all ? 10000 : 0;  // a full reload for sorting is heavier
    if (done !== gal.done && performance.now() - gal.loadedAt > throttle) { gal.all = null; loadGallery(); }
  }
  function fillStates(j) {
    const sel = $("g-state"), keep = sel.value;
    sel.replaceChildren(new Option("all", ""));
    Object.entries(j.counts || {}).filter(([, n]) => n > 0)
      .forEach(([s, n]) => sel.append(new Option(s.replace(/_/g, " ") + " (" + n + ")", s)));
    sel.value = Array.from(sel.options).some((o) => o.value === keep) ? keep : "";
  }
  async function fetchTasks(offset, limit) {
    const q = new URLSearchParams({ limit, offset });
    if ($("g-state").value) { q.set("state", $("g-state").value); }
    return api("/jobs/" + encodeURIComponent(gal.job) + "/gallery?" + q);
  }
  async function loadGallery() {
    const job = gal.job, j = jobs.get(job) || { counts: {} }, sort = $("g-sort").value;
    gal.loading = true;
    try {
      fillStates(j);
      let tasks, total, note = "";
      if (sort === "id") {
        const r = await fetchTasks(gal.page * PAGE, PAGE); tasks = r.tasks; total = r.total;
      } else {
        if (!gal.all) {
          const all = [];
          for (let off = 0; off < SORT_CAP; off += 1000) {
            const r = await fetchTasks(off, 1000); all.push(...r.tasks);
            if (r.tasks.length < 1000) { break; }
          }
          gal.all = all;
        }
        if (gal.all.length >= SORT_CAP) { note = " (sorted: the first " + SORT_CAP + "; the zip's index.html sorts all)"; }
        const all = gal.all, key = parseSort(sort).key;  // rows come in task id order
        const idx = sortIndices(all.map((_, i) => i), parseSort(sort), (i) => all[i].path,
          (i) => (key === "confidence" ? all[i].confidence
            : flatMetrics(all[i].metrics, j.model)[key]));
        const pg = pageOf(idx.length, gal.page);
        total = idx.length; tasks = idx.slice(pg.start, pg.end).map((i) => all[i]);
      }
      if (job !== gal.job) { return; }
      const pg = pageOf(total, gal.page), pages = pg.pages;
      if (gal.page >= pages) { gal.page = pages - 1; return loadGallery(); }
      renderSummary(j, gal.all || tasks, gal.all ? "all loaded" : "this page");
      renderItems(tasks, j);
      $("g-page").textContent = pg.text;
      $("g-count").textContent = total + " images" + note;
      $("g-prev").disabled = gal.page === 0; $("g-next").disabled = gal.page >= pages - 1;
      gal.done = j.completed + j.failed + j.rejected; gal.loadedAt = performance.now();
    } catch (err) { sayError(err); } finally { gal.loading = false; }
  }
  function renderSummary(j, tasks, scope) {
    const box = $("g-summary"), cells = [["images", j.total], ["completed", j.completed],
      ["failed", j.failed], ["rejected", j.rejected], ["img/s", num(j.throughput_per_s)]];
    info.metrics.ground_truth.forEach((k) => {
      const v = tasks.map((t) => flatMetrics(t.metrics, j.model)[k]).filter((x) => typeof x === "number");
      if (v.length) { cells.push(["mean " + k + " (" + v.length + ", " + scope + ")", num(v.reduce((a, b) => a + b, 0) / v.length)]); }
    });
    box.replaceChildren(...cells.map(([k, v]) => {
      const d = el("div"); d.append(el("dt", "", k), el("dd", "", String(v))); return d;
    }));
  }
  async function setSrc(img, url) {  // with an API key an <img> cannot send it: fetch a blob
    if (!apiKey()) { img.src = url; return; }
    try {
      const res = await fetch(url, { headers: headers() });
      if (!res.ok) { throw await failure(res); }
      const u = URL.createObjectURL(await res.blob()); gal.urls.push(u); img.src = u;
    } catch (err) { img.alt = "could not load: " + err.message; }
  }
  function renderItems(tasks, j) {
    gal.urls.forEach((u) => URL.revokeObjectURL(u)); gal.urls = [];
    const keys = info.metrics.ground_truth.concat(info.metrics.free);
    const frag = document.createDocumentFragment();
    for (const t of tasks) {
      const m = flatMetrics(t.metrics, j.model);
      const vals = keys.map((k) => [k, typeof m[k] === "number" ? m[k] : null]);
      vals.push(["confidence", typeof t.confidence === "number" ? t.confidence : null]);
      frag.append(card(t, vals, {
        setSrc, cutoutLink: false,
        onOpen: (img) => view(img.src, t.path, t.cutout),
        noSheet: () => (info.final_task_states.includes(t.state) ? "no comparison sheet" : "not done yet"),
      }));
    }
    $("g-items").replaceChildren(frag);
  }
  function view(src, path, cut) {
    const v = $("viewer"), p = v.querySelector("p");
    v.querySelector("img").src = src;
    p.replaceChildren(document.createTextNode(path + (cut ? " · " : "")));
    if (cut) {
      const a = el("a", "", "open the cut-out"); a.href = cut; a.target = "_blank";
      a.addEventListener("click", (e) => {
        e.stopPropagation();
        if (apiKey()) { e.preventDefault(); const w = window.open(); setSrc({ set src(u) { w.location = u; } }, a.href); }
      });
      p.append(a);
    }
    v.hidden = false;
  }

  // ---- wiring ---------------------------------------------------------------------------------
  async function loadInfo() {  // open, like the page: constants, no data
    try {
      const res = await fetch("/api-info");
      if (!res.ok) { throw await failure(res); }
      Object.assign(info, await res.json());
    } catch (err) { sayError(err); }
  }
  async function loadModels() {
    try {
      const data = await api("/models"), sel = $("model");
      sel.replaceChildren(...data.models.map((m) => new Option(m.name + (m.kind && m.kind !== "builtin" ? " (" + m.kind + (m.present === false ? ", not downloaded yet" : "") + ")" : ""), m.name)));
      sel.value = data.default;
    } catch (err) { sayError(err); }
  }
  document.addEventListener("DOMContentLoaded", () => {
    $("api-key").value = apiKey();
    $("key-form").addEventListener("submit", (e) => {
      e.preventDefault(); localStorage.setItem(KEY_STORE, $("api-key").value.trim());
      say("API key saved in this browser.", true); loadModels(); poll();
    });
    $("file-input").addEventListener("change", (e) => choose(e.target.files, false));
    $("files-input").addEventListener("change", (e) => choose(e.target.files, false));
    $("folder-input").addEventListener("change", (e) => choose(e.target.files, true));
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); choose(e.dataTransfer.files, false); });
    $("start").addEventListener("click", startUpload);
    $("pause").addEventListener("click", () => { up.paused = true; if (up.xhr) { up.xhr.abort(); } });
    $("g-close").addEventListener("click", () => { $("gallery").hidden = true; gal.job = null; rows.forEach((tr) => tr.classList.remove("selected")); });
    $("g-prev").addEventListener("click", () => { gal.page--; loadGallery(); });
    $("g-next").addEventListener("click", () => { gal.page++; loadGallery(); });
    $("g-sort").addEventListener("change", () => { gal.page = 0; loadGallery(); });
    $("g-state").addEventListener("change", () => { gal.page = 0; gal.all = null; loadGallery(); });
    $("viewer").addEventListener("click", () => { $("viewer").hidden = true; });
    document.addEventListener("keydown", (e) => { if (e.key === "Escape") { $("viewer").hidden = true; } });
    window.addEventListener("beforeunload", (e) => { if (up.busy) { e.preventDefault(); e.returnValue = ""; } });
    loadModels(); loadInfo().then(poll);
  });
  // For tests and the curious: the zip writer on its own, and how many live events arrived.
  window.mattepipe = { packZip, crc32, liveEvents: 0 };
})();
