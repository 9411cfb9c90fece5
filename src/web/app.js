// vcontap live calls page: plain JS, no framework, no build step. Driven by the API's
// SSE stream (GET /v1/events: one JSON event per `data:` line, {uuid, seq, kind, at, vcon})
// and GET /v1/vcons/{uuid} for the call detail. Every value shown comes from the network,
// so text is only ever set with textContent (never innerHTML) and media URLs are only
// http(s) or this server's /media/.
"use strict";

const MAX_FINISHED = 500;
// With API tokens configured, open the page as /#access_token=TOKEN (the fragment never
// leaves the browser; the page adds it to its own requests, which EventSource and <audio>
// cannot give headers to).
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("access_token")
  || new URLSearchParams(location.search).get("access_token");
function withToken(u) {
  return TOKEN ? `${u}${u.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(TOKEN)}` : u;
}
const calls = new Map(); // uuid -> {uuid, vcon, kind, seq, at (ms, capture), got (perf ms), finished}
let openDetail = null;

const $ = (sel) => document.querySelector(sel);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function ms(t) { const v = Date.parse(t); return Number.isNaN(v) ? null : v; }
function fmtDur(s) {
  if (s === null || s === undefined || !Number.isFinite(s) || s < 0) return "—";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, x = s % 60;
  const p = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${p(m)}:${p(x)}` : `${m}:${p(x)}`;
}
function fmtTime(t) {
  const v = ms(t);
  if (v === null) return "—";
  return new Date(v).toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, "");
}

function ext(v) { return (v && v.vcontap) || {}; }
function state(v) { return ext(v).state || "unknown"; }
function party(v, i) { return (v.parties || [])[i] || {}; }
function partyNode(p) {
  const num = p.tel || p.sip || p.mailto || "—";
  return el("div", { class: "party" }, el("span", { class: "num", text: num }),
    p.name ? el("span", { class: "name", text: p.name }) : null);
}
function partyText(p) {
  return [p.tel, p.sip, p.mailto, p.name].filter(Boolean).join(" ").toLowerCase();
}

// Quality: the worst MOS and loss of the call's streams (analysis report of a recorded
// call, or the vcontap extension's rtp_quality: the report so far of a live call, and the
// final one of a call without recordings).
function streams(v) {
  for (const a of v.analysis || []) {
    if (a.schema === "vcontap-rtp-quality" && a.body && Array.isArray(a.body.streams)) return a.body.streams;
  }
  const q = ext(v).rtp_quality;
  if (q && Array.isArray(q.streams)) return q.streams;
  return [];
}
function quality(v) {
  const ss = streams(v);
  let mos = null, loss = null;
  for (const s of ss) {
    const m = s.quality_estimate && s.quality_estimate.mos_cq;
    if (typeof m === "number") mos = mos === null ? m : Math.min(mos, m);
    if (typeof s.loss_percent === "number") loss = loss === null ? s.loss_percent : Math.max(loss, s.loss_percent);
  }
  if (mos === null && loss === null) return el("span", { class: "mos", text: "—" });
  const cls = mos === null ? "" : mos >= 4 ? "good" : mos >= 3.1 ? "fair" : "poor";
  const parts = [];
  if (mos !== null) parts.push(`MOS ${mos.toFixed(1)}`);
  if (loss !== null) parts.push(`${loss.toFixed(1)}% loss`);
  return el("span", { class: `mos ${cls}`, text: parts.join(" · "), title: `${ss.length} streams` });
}

// DTMF and hold marks from the call's party history.
function history(v) {
  const h = ext(v).party_history;
  if (Array.isArray(h)) return h;
  const out = [];
  for (const d of v.dialog || []) for (const e of d.party_history || []) out.push(e);
  return out;
}
function marks(v) {
  const box = el("span", { class: "marks" });
  const h = history(v);
  const digits = h.filter((e) => e.event === "keydown" || e.event === "dtmf").map((e) => e.button || e.digit || "?");
  const holds = h.filter((e) => e.event === "hold").length;
  if (holds) box.append(el("span", { class: "mark hold", text: state(v) === "held" ? `on hold (${holds})` : `hold ×${holds}` }));
  if (digits.length) box.append(el("span", { class: "mark dtmf", text: `DTMF ${digits.join("")}` }));
  return box;
}

function base(v) {
  const x = ext(v);
  return ms(x.answered_at) ?? ms(x.invite_at) ?? ms(v.created_at);
}
function liveSeconds(c) {
  const b = base(c.vcon);
  if (b === null || c.at === null) return null;
  return (c.at - b) / 1000 + (performance.now() - c.got) / 1000;
}
function finishedSeconds(v) {
  const x = ext(v);
  const end = ms(x.ended_at) ?? ms(v.updated_at);
  const b = base(v);
  return b === null || end === null ? null : (end - b) / 1000;
}
function outcome(v) {
  const x = ext(v);
  const disp = (v.dialog || []).map((d) => d.disposition).find(Boolean);
  if (x.answered_at) return x.end_reason ? `answered · ${x.end_reason}` : "answered";
  return disp || (x.sip_final_status ? `SIP ${x.sip_final_status}` : x.end_reason || "not answered");
}

// A recording URL the page may hand to <audio>: http(s) as is, and file:// URLs of the
// local store through this server's /media/ (by file name only).
function mediaSrc(d) {
  const u = typeof d.url === "string" ? d.url : "";
  if (/^https?:\/\//i.test(u)) {
    try { return new URL(u).origin === location.origin ? withToken(u) : u; } catch (_) { return null; }
  }
  if (d.filename && /^[A-Za-z0-9._-]+$/.test(d.filename) && !d.filename.startsWith(".")) return withToken(`media/${d.filename}`);
  return null;
}
function recordings(v) {
  const box = el("span", { class: "recs" });
  for (const d of v.dialog || []) {
    if (d.type !== "recording") continue;
    const src = mediaSrc(d);
    if (src) box.append(el("audio", { controls: "", preload: "metadata", src, title: d.filename || "" }));
    else box.append(el("span", { class: "file", text: d.filename || d.url || "recording" }));
  }
  if (!box.childNodes.length) box.append(el("span", { class: "file", text: "—" }));
  return box;
}

function matches(c) {
  const q = $("#f-party").value.trim().toLowerCase();
  const st = $("#f-state").value;
  if (st && (c.finished || state(c.vcon) !== st)) return false;
  if (q) {
    const ps = (c.vcon.parties || []).map(partyText).join(" ");
    if (!ps.includes(q) && !c.uuid.includes(q)) return false;
  }
  return true;
}

function liveRow(c) {
  const v = c.vcon, s = state(v);
  return el("tr", { "data-uuid": c.uuid, "data-state": s },
    el("td", { text: fmtTime(ext(v).invite_at || v.created_at) }),
    el("td", {}, partyNode(party(v, 0))),
    el("td", {}, partyNode(party(v, 1))),
    el("td", {}, el("span", { class: `state ${s}`, text: s })),
    el("td", { class: "duration", text: fmtDur(liveSeconds(c)) }),
    el("td", { class: "quality" }, quality(v)),
    el("td", {}, marks(v)));
}
function finishedRow(c) {
  const v = c.vcon;
  return el("tr", { "data-uuid": c.uuid, "data-state": "finished" },
    el("td", { text: fmtTime(ext(v).invite_at || v.created_at) }),
    el("td", {}, partyNode(party(v, 0))),
    el("td", {}, partyNode(party(v, 1))),
    el("td", { class: "outcome", text: outcome(v) }),
    el("td", { class: "duration", text: fmtDur(finishedSeconds(v)) }),
    el("td", { class: "quality" }, quality(v)),
    el("td", { class: "recording" }, recordings(v)));
}

// Rows are rebuilt when their call changes (a finished row keeps its <audio> playing).
const rows = new Map(); // uuid -> {tr, seq, finished}
let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; renderNow(); });
}
function renderNow() {
  const live = [...calls.values()].filter((c) => !c.finished).sort((a, b) => (base(a.vcon) ?? 0) - (base(b.vcon) ?? 0));
  const done = [...calls.values()].filter((c) => c.finished).sort((a, b) => b.doneOrder - a.doneOrder);
  const showDone = $("#f-finished").checked;
  const place = (tbody, list, make, isDone) => {
    const want = [];
    for (const c of list) {
      if (!matches(c)) continue;
      let r = rows.get(c.uuid);
      if (!r || r.seq !== c.seq || r.finished !== isDone) {
        const tr = make(c);
        if (!r) tr.classList.add("fresh");
        if (r && r.tr.parentNode) r.tr.replaceWith(tr);
        r = { tr, seq: c.seq, finished: isDone };
        rows.set(c.uuid, r);
      }
      want.push(r.tr);
    }
    // Keep DOM order = list order, touching only what moved.
    let i = 0;
    for (const tr of want) {
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
      i++;
    }
    while (tbody.children.length > want.length) tbody.lastElementChild.remove();
  };
  place($("#live tbody"), live, liveRow, false);
  place($("#finished tbody"), showDone ? done : [], finishedRow, true);
  $("#finished-section").hidden = !showDone;
  $("#live-count").textContent = String(live.length);
  $("#finished-count").textContent = String(done.length);
  $("#live-empty").hidden = live.length > 0;
  $("#counts").textContent = `${live.length} in progress · ${done.length} finished`;
}

// Durations tick between events.
setInterval(() => {
  for (const tr of document.querySelectorAll("#live tbody tr")) {
    const c = calls.get(tr.dataset.uuid);
    const td = tr.querySelector(".duration");
    if (c && td) td.textContent = fmtDur(liveSeconds(c));
  }
}, 1000);

let doneOrder = 0;
function apply(ev) {
  if (!ev || typeof ev.uuid !== "string" || !ev.vcon || typeof ev.vcon !== "object") return;
  const prev = calls.get(ev.uuid);
  if (prev && typeof ev.seq === "number" && ev.seq <= prev.seq) return; // replayed or resumed
  const finished = ev.kind === "finished" || state(ev.vcon) === "finished";
  const c = {
    uuid: ev.uuid, vcon: ev.vcon, kind: ev.kind, seq: typeof ev.seq === "number" ? ev.seq : (prev ? prev.seq + 1 : 0),
    at: ms(ev.at), got: performance.now(), finished, doneOrder: prev ? prev.doneOrder : 0,
  };
  if (finished && !(prev && prev.finished)) c.doneOrder = ++doneOrder;
  calls.set(ev.uuid, c);
  // Bound the page: forget the oldest finished calls.
  const done = [...calls.values()].filter((x) => x.finished);
  if (done.length > MAX_FINISHED) {
    done.sort((a, b) => a.doneOrder - b.doneOrder);
    for (const x of done.slice(0, done.length - MAX_FINISHED)) { calls.delete(x.uuid); rows.delete(x.uuid); }
  }
  render();
  if (openDetail === ev.uuid) showDetail(ev.uuid, false);
}

// After a gap the page re-fetches the snapshots of the calls it shows as live.
async function resync() {
  for (const c of [...calls.values()].filter((x) => !x.finished)) {
    try {
      const r = await fetch(withToken(`v1/vcons/${encodeURIComponent(c.uuid)}`));
      if (r.status === 404) { calls.delete(c.uuid); rows.delete(c.uuid); continue; }
      if (!r.ok) continue;
      const v = await r.json();
      apply({ uuid: c.uuid, seq: c.seq + 0.5, kind: state(v) === "finished" ? "finished" : "updated", at: v.updated_at, vcon: v });
    } catch (_) { /* the stream will bring it */ }
  }
  render();
}

function connect() {
  const es = new EventSource(withToken("v1/events"));
  const conn = $("#conn");
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn on"; };
  es.onerror = () => { conn.textContent = "reconnecting…"; conn.className = "conn off"; };
  const onData = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    if (ev && ev.kind === "gap") { resync(); return; }
    apply(ev);
  };
  es.onmessage = onData;
  for (const k of ["created", "updated", "segment", "finished", "snapshot"]) es.addEventListener(k, onData);
  es.addEventListener("gap", () => resync());
}

// ---- call detail: parties, timeline, recordings, SIP ladder ----

function trace(v) {
  for (const a of v.attachments || []) {
    if (a.purpose === "sip-message-trace" && a.body && Array.isArray(a.body.messages)) return a.body.messages;
  }
  const t = ext(v).sip_message_trace;
  return t && Array.isArray(t.messages) ? t.messages : null;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, val] of Object.entries(attrs)) e.setAttribute(k, String(val));
  if (text !== undefined) e.textContent = text;
  return e;
}
function ladder(msgs) {
  const hosts = [];
  const col = (h) => { let i = hosts.indexOf(h); if (i < 0) { hosts.push(h); i = hosts.length - 1; } return i; };
  for (const m of msgs) { col(m.src || "?"); col(m.dst || "?"); }
  const W = 210, top = 40, rowH = 30, left = 110;
  const width = left + hosts.length * W, height = top + msgs.length * rowH + 20;
  const s = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "SIP ladder" });
  const defs = svg("defs", {});
  const mk = svg("marker", { id: "ah", markerWidth: 8, markerHeight: 8, refX: 7, refY: 4, orient: "auto" });
  mk.append(svg("path", { d: "M0,0 L8,4 L0,8 z", fill: "#555" }));
  defs.append(mk); s.append(defs);
  hosts.forEach((h, i) => {
    const x = left + i * W + W / 2;
    s.append(svg("text", { x, y: 18, "text-anchor": "middle", class: "host" }, h));
    s.append(svg("line", { x1: x, y1: 26, x2: x, y2: height - 6, class: "life" }));
  });
  const t0 = msgs.length ? ms(msgs[0].timestamp) : null;
  msgs.forEach((m, i) => {
    const y = top + i * rowH + 14;
    const a = left + col(m.src || "?") * W + W / 2, b = left + col(m.dst || "?") * W + W / 2;
    const label = m.method ? m.method : `${m.status_code ?? ""} ${m.status_text ?? ""}`.trim();
    const cls = m.method ? "arrow" : (m.status_code >= 400 ? "arrow err" : "arrow resp");
    const t = ms(m.timestamp);
    s.append(svg("text", { x: 4, y: y + 4, class: "time" }, t !== null && t0 !== null ? `+${((t - t0) / 1000).toFixed(3)}s` : ""));
    if (a === b) {
      s.append(svg("path", { d: `M${a},${y} h30 v10 h-30`, class: cls, fill: "none", "marker-end": "url(#ah)" }));
    } else {
      s.append(svg("line", { x1: a, y1: y, x2: b, y2: y, class: cls, "marker-end": "url(#ah)" }));
    }
    const g = svg("text", { x: (a + b) / 2, y: y - 4, "text-anchor": "middle", class: "msg" }, label);
    g.setAttribute("data-label", label);
    s.append(g);
  });
  return el("div", { class: "ladder" }, s);
}

async function showDetail(uuid, fetchIt = true) {
  openDetail = uuid;
  const c = calls.get(uuid);
  let v = c ? c.vcon : null;
  if (fetchIt) {
    try {
      const r = await fetch(withToken(`v1/vcons/${encodeURIComponent(uuid)}`));
      if (r.ok) v = await r.json();
    } catch (_) { /* keep the snapshot we have */ }
  }
  if (!v || openDetail !== uuid) return;
  const body = $("#detail-body");
  body.replaceChildren();
  $("#detail-title").textContent = `${party(v, 0).tel || party(v, 0).sip || "?"} → ${party(v, 1).tel || party(v, 1).sip || "?"}`;
  const x = ext(v);
  const kv = el("dl", { class: "kv" });
  const add = (k, val) => { if (val !== undefined && val !== null && val !== "") kv.append(el("dt", { text: k }), el("dd", { text: String(val) })); };
  add("uuid", v.uuid); add("state", x.state); add("started", fmtTime(x.invite_at));
  add("answered", x.answered_at ? fmtTime(x.answered_at) : null); add("ended", x.ended_at ? fmtTime(x.ended_at) : null);
  add("end reason", x.end_reason); add("SIP Call-ID", x.sip_call_id);
  (v.parties || []).forEach((p, i) => add(`party ${i} (${p.role || "?"})`, [p.name, p.tel || p.sip || p.mailto].filter(Boolean).join(" · ")));
  body.append(kv);
  const h = history(v);
  if (h.length) {
    body.append(el("h3", { text: "Timeline" }));
    const ul = el("ul", { class: "timeline" });
    for (const e of h) ul.append(el("li", { text: `${fmtTime(e.time)}  party ${e.party}  ${e.event}${e.button ? " " + e.button : ""}` }));
    body.append(ul);
  }
  if (x.state !== "finished") {
    const b = el("button", { id: "listen-btn", type: "button", text: "Listen live" });
    b.addEventListener("click", () => listen(v.uuid));
    body.append(el("p", {}, b));
  }
  body.append(el("h3", { text: "Recordings" }), recordings(v));
  body.append(el("h3", { text: "Quality" }), quality(v));
  body.append(el("h3", { text: "SIP ladder" }));
  const msgs = trace(v);
  body.append(msgs ? ladder(msgs) : el("p", { class: "empty", text: "The SIP trace is attached when the call ends." }));
  $("#detail").hidden = false;
}

// ---- live audio: GET /v1/calls/{uuid}/audio (docs/live-page.md), played with WebAudio ----

let listening = null;
function listenStatus(L, text) {
  const bar = $("#listen");
  bar.hidden = false;
  bar.dataset.frames = String(L.frames);
  bar.dataset.rate = String(L.rate);
  bar.dataset.channels = String(L.channels);
  $("#listen-status").textContent = text;
}
function stopListening() {
  if (!listening) return;
  const L = listening;
  listening = null;
  try { L.ws.close(); } catch (_) { /* already closed */ }
  L.ctx.close().catch(() => {});
  $("#listen").hidden = true;
}
function listen(uuid) {
  stopListening();
  const url = new URL(withToken(`v1/calls/${encodeURIComponent(uuid)}/audio`), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  const L = { ws, ctx: new AudioContext(), uuid, frames: 0, next: 0, rate: 0, channels: 0 };
  listening = L;
  listenStatus(L, "listening: waiting for audio…");
  ws.onmessage = (m) => {
    if (listening !== L) return;
    if (typeof m.data === "string") {
      let j;
      try { j = JSON.parse(m.data); } catch (_) { return; }
      if (j.type === "header" || j.type === "segment") { L.rate = j.rate; L.channels = j.channels; }
      if (j.type === "end") { L.ended = true; listenStatus(L, `call ended · ${L.frames} frames heard`); }
      return;
    }
    const dv = new DataView(m.data);
    if (dv.byteLength < 16 || L.rate < 3000 || L.channels < 1) return;
    const valid = Math.min(dv.getUint32(4, true), Math.floor((dv.byteLength - 16) / (2 * L.channels)));
    L.frames++;
    if (L.frames % 10 === 1) listenStatus(L, `listening · ${L.rate / 1000} kHz × ${L.channels} · ${L.frames} frames`);
    if (!valid) return;
    const buf = L.ctx.createBuffer(L.channels, valid, L.rate);
    for (let c = 0; c < L.channels; c++) {
      const ch = buf.getChannelData(c);
      for (let i = 0; i < valid; i++) ch[i] = dv.getInt16(16 + (i * L.channels + c) * 2, true) / 32768;
    }
    const src = L.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(L.ctx.destination);
    // A small jitter buffer: restart 100 ms ahead whenever playback caught up.
    const now = L.ctx.currentTime;
    if (L.next < now + 0.02) L.next = now + 0.1;
    src.start(L.next);
    L.next += valid / L.rate;
  };
  ws.onclose = () => { if (listening === L && !L.ended) listenStatus(L, `stopped · ${L.frames} frames heard`); };
}
$("#listen-stop").addEventListener("click", stopListening);

$("#detail-close").addEventListener("click", () => { openDetail = null; $("#detail").hidden = true; });
for (const tb of ["#live tbody", "#finished tbody"]) {
  $(tb).addEventListener("click", (e) => {
    if (e.target.closest("audio")) return;
    const tr = e.target.closest("tr[data-uuid]");
    if (tr) showDetail(tr.dataset.uuid);
  });
}
for (const id of ["#f-party", "#f-state", "#f-finished"]) $(id).addEventListener("input", render);

connect();
render();
