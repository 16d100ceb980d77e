// Stagecoach web UI: the run list and the run page, kept live by server-sent events.
// Data from the API is set as text (textContent, attribute values); only the server's
// own escaped fragments (report sections, the DAG SVG, an attempt's block) are set as
// markup. No third-party code, nothing loaded from elsewhere (the CSP forbids it).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const app = () => $("#app");
let current = null;        // {kind: "list"} or {kind: "run", id}
let runView = null;        // the last run page JSON
let selectedAttempt = null;
let attemptOffset = 0;
let fullTimeline = false;
const filters = {namespace: "", phase: "", q: ""};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function flash(text, ok) {
  const f = $("#flash");
  f.textContent = text;
  f.className = ok ? "ok" : "err";
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Stagecoach-UI": "1"}};
  const res = await fetch(path, init);
  let data = null;
  try { data = await res.json(); } catch (e) { data = {error: `HTTP ${res.status}`}; }
  if (!res.ok) throw new Error((data && data.error) || `HTTP ${res.status}`);
  return data;
}

function fmtDuration(s) {
  if (s === null || s === undefined) return "-";
  if (s < 1) return `${Math.round(s * 1000)}ms`;
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

function age(iso) {
  if (!iso) return "-";
  return fmtDuration((Date.now() - Date.parse(iso)) / 1000) + " ago";
}

function pill(phase) { return el("span", {class: `pill ${phase}`}, phase); }

// -- the list --------------------------------------------------------------------------
const onList = () => !location.hash.startsWith("#/run/");

async function showList() {
  if (!onList()) return;
  current = {kind: "list"};
  const data = await api("/api/runs");
  if (!onList()) return;  // navigated away while it loaded
  const namespaces = [...new Set(data.runs.map(r => r.namespace).filter(Boolean))].sort();
  const phases = [...new Set(data.runs.map(r => r.phase))].sort();
  const select = (name, values) => el("select", {name, onchange: e => {
      filters[name] = e.target.value; showList(); }},
    el("option", {value: ""}, `all ${name}s`),
    values.map(v => el("option", {value: v, selected: filters[name] === v}, v)));
  const rows = data.runs.filter(r => (!filters.namespace || r.namespace === filters.namespace)
    && (!filters.phase || r.phase === filters.phase)
    && (!filters.q || r.name.includes(filters.q)));
  const table = el("table", {class: "runs", id: "runs"},
    el("thead", {}, el("tr", {}, ["pipeline", "where", "phase", "progress", "duration",
      "tokens", "cost", "started"].map(h => el("th", {}, h)))),
    el("tbody", {}, rows.map(r => el("tr", {class: "row", "data-id": r.id,
        onclick: () => { location.hash = `#/run/${encodeURIComponent(r.id)}`; }},
      el("td", {}, el("b", {}, r.name), r.source === "local" ? el("div", {class: "muted"}, r.run) : null),
      el("td", {}, r.namespace || "local"),
      el("td", {}, pill(r.phase), r.reason && r.reason !== r.phase ? ` ${r.reason}` : ""),
      el("td", {}, r.progress || "-"),
      el("td", {}, fmtDuration(r.duration)),
      el("td", {class: "num"}, r.tokens.toLocaleString()),
      el("td", {class: "num"}, r.cost === null ? "-" : `$${r.cost}`),
      el("td", {}, age(r.startedAt))))));
  const errors = Object.entries(data.errors || {}).map(([k, v]) =>
    el("div", {class: "note err"}, `${k}: ${v}`));
  app().replaceChildren(
    el("h1", {}, "Pipelines"), ...errors,
    el("div", {class: "filters"}, select("namespace", namespaces), select("phase", phases),
      el("input", {type: "search", placeholder: "name", value: filters.q,
                   onchange: e => { filters.q = e.target.value; showList(); }}),
      el("span", {class: "muted"}, `${rows.length} of ${data.runs.length}`)),
    rows.length ? table : el("p", {class: "muted", id: "empty"}, "No runs yet."));
}

// -- the run page ----------------------------------------------------------------------
function approvalForm(run, a) {
  const fields = a.inputs.map(i => {
    const input = i.enum
      ? el("select", {name: i.name}, i.enum.map(v => el("option", {value: v, selected: v === i.default}, v)))
      : el("input", {name: i.name, value: i.default || "", required: !!i.required});
    return el("label", {}, `${i.name} `, input, i.description ? el("span", {class: "muted"}, ` ${i.description}`) : null);
  });
  const form = el("form", {class: "approval", "data-stage": a.stage,
                           "data-key": `${run.id}/${a.stage}/${a.iteration}`},
    el("b", {}, `${a.stage} awaits approval`),
    el("div", {class: "msg"}, a.message || ""), ...fields,
    el("label", {}, "message ", el("input", {name: "__message"})));
  const decide = decision => async ev => {
    ev.preventDefault();
    const inputs = {};
    for (const i of a.inputs) {
      const v = form.elements[i.name].value;
      if (v !== "") inputs[i.name] = v;
    }
    try {
      const res = await api("/api/act", {id: run.id, action: decision, stage: a.stage, inputs,
                                         message: form.elements.__message.value || null});
      flash(res.message, true);
    } catch (e) { flash(e.message, false); }
    refreshRun();
  };
  form.append(el("button", {type: "submit", name: "approve", onclick: decide("approve")}, "Approve"), " ",
              el("button", {type: "button", name: "reject", onclick: decide("reject")}, "Reject"));
  return form;
}

function controls(run) {
  return el("div", {class: "controls"}, run.controls.map(c => el("button", {
    type: "button", "data-control": c, onclick: async () => {
      try { flash((await api("/api/act", {id: run.id, action: c})).message, true); }
      catch (e) { flash(e.message, false); }
      refreshRun();
    }}, c)));
}

function fragment(html) {
  const div = el("div");
  div.innerHTML = html;  // the server's escaped report markup
  return div;
}

async function openAttempt(key) {
  selectedAttempt = key;
  const box = $("#attempt");
  if (!box || !current) return;
  try {
    const data = await api(`/api/attempt?id=${encodeURIComponent(current.id)}&key=${encodeURIComponent(key)}`);
    box.replaceChildren(fragment(data.html));
  } catch (e) { box.replaceChildren(el("p", {class: "note err"}, e.message)); }
  for (const li of document.querySelectorAll("ul.attempts li"))
    li.classList.toggle("sel", li.dataset.key === key);
}

function attemptList(run, page) {
  const list = el("ul", {class: "attempts", id: "attempt-list"}, page.items.map(a =>
    el("li", {"data-key": a.key, class: a.key === selectedAttempt ? "sel" : null,
              onclick: () => openAttempt(a.key)},
      el("i", {class: `dot ${a.outcome}`}), el("b", {}, a.label),
      el("span", {class: "muted"}, `${a.outcome}${a.cached ? " · cached" : ""}${a.errorClass ? " · " + a.errorClass : ""} · ${fmtDuration(a.seconds)}`))));
  const pager = page.total > page.items.length ? el("div", {class: "pager"},
    el("button", {type: "button", disabled: page.offset === 0, onclick: () => {
      attemptOffset = Math.max(0, page.offset - 200); pageAttempts(); }}, "‹ earlier"),
    el("span", {class: "muted"}, `${page.offset + 1}–${page.offset + page.items.length} of ${page.total}`),
    el("button", {type: "button", disabled: page.offset + page.items.length >= page.total,
      onclick: () => { attemptOffset = page.offset + 200; pageAttempts(); }}, "later ›")) : null;
  return el("div", {id: "attempt-index"}, pager, list);
}

async function pageAttempts() {
  const page = await api(`/api/attempts?id=${encodeURIComponent(current.id)}&offset=${attemptOffset}`);
  $("#attempt-index").replaceWith(attemptList(runView, page));
}

async function showRun(id, fresh) {
  if (fresh) { selectedAttempt = null; attemptOffset = 0; fullTimeline = false; }
  current = {kind: "run", id};
  let run;
  try {
    run = await api(`/api/run?id=${encodeURIComponent(id)}${fullTimeline ? "&timeline=full" : ""}`);
  } catch (e) {
    app().replaceChildren(el("p", {class: "note err"}, e.message), el("a", {href: "#/"}, "all runs"));
    return;
  }
  if (!current || current.id !== id) return;
  runView = run;
  const s = run.sections;
  // A live refresh must not wipe what the user is typing: keep the open forms.
  const keep = new Map([...document.querySelectorAll("form.approval")].map(f => [f.dataset.key, f]));
  const page = attemptOffset ? await api(`/api/attempts?id=${encodeURIComponent(id)}&offset=${attemptOffset}`) : run.attempts;
  app().replaceChildren(
    el("p", {}, el("a", {href: "#/"}, "← all runs")),
    el("div", {id: "header", "data-phase": run.phase}, fragment(s.header)),
    controls(run),
    el("div", {id: "approvals"}, run.approvals.map(a =>
      keep.get(`${run.id}/${a.stage}/${a.iteration}`) || approvalForm(run, a))),
    el("section", {id: "graph"}, el("h2", {}, "Graph"), el("div", {class: "dagwrap"}, fragment(run.graph))),
    el("div", {id: "timeline-wrap"}, fragment(s.timeline)),
    el("section", {id: "attempts-view"}, el("h2", {}, "Attempts"),
      el("div", {class: "twocol"}, attemptList(run, page), el("div", {id: "attempt"},
        el("p", {class: "muted"}, "Choose an attempt to see its prompt, answer and output.")))),
    fragment(s.decisions), fragment(s.control), fragment(s.errors), fragment(s.stages),
    fragment(s.output),
    run.warnings.length ? el("div", {class: "note"}, run.warnings.join("\n")) : "");
  const full = $('[data-action="full-timeline"]');
  if (full) full.addEventListener("click", () => { fullTimeline = true; refreshRun(); });
  for (const node of document.querySelectorAll("svg.dag .node")) {
    node.addEventListener("click", () => {
      const item = [...document.querySelectorAll("ul.attempts li")].reverse()
        .find(li => li.dataset.key.startsWith(`attempt-${node.dataset.stage}-`));
      if (item) openAttempt(item.dataset.key);
    });
  }
  if (selectedAttempt) openAttempt(selectedAttempt);
}

function refreshRun() { if (current && current.kind === "run") showRun(current.id, false); }

function route() {
  const m = location.hash.match(/^#\/run\/(.+)$/);
  if (m) showRun(decodeURIComponent(m[1]), true);
  else showList();
}

function live() {
  const dot = $("#live");
  const source = new EventSource("/api/events");
  let pending = null;
  const later = fn => { clearTimeout(pending); pending = setTimeout(fn, 150); };
  source.addEventListener("hello", () => dot.classList.add("on"));
  source.addEventListener("runs", () => { if (onList()) later(showList); });
  source.addEventListener("run", ev => {
    const data = JSON.parse(ev.data);
    if (current && current.kind === "run" && current.id === data.id)
      later(() => { if (current && current.id === data.id) refreshRun(); });
  });
  source.onerror = () => dot.classList.remove("on");
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => { route(); live(); });
