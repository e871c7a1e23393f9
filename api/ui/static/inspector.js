// The memos inspector's one script. Every read and edit is a call to the public /v1 API
// with the key typed into the header (Authorization: Bearer), so the page can do exactly
// what a client holding that key can. Text from the server is always set as textContent,
// never as HTML.
"use strict";

const KEY_STORE = "memos.apiKey";
const PAGE_SIZE = 25;
const body = document.body;
const CUBE = body.dataset.cube;

// ---------------------------------------------------------------- API and DOM helpers

class ApiError extends Error {
  constructor(status, error) {
    super(error && error.message ? error.message : `HTTP ${status}`);
    this.status = status;
    this.type = error && error.type;
  }
}

function key() { return sessionStorage.getItem(KEY_STORE); }

async function api(method, path, payload) {
  const headers = { Accept: "application/json" };
  if (key()) headers.Authorization = `Bearer ${key()}`;
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = new ApiError(response.status, data && data.error);
    if (response.status === 401) notice("This server needs an API key: type it in the header.");
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;
const cubePath = (suffix = "") => `/v1/cubes/${enc(CUBE)}${suffix}`;
const memoryHref = (id) => `/ui/cubes/${enc(CUBE)}/memories/${enc(id)}`;
const sessionHref = (id) => `/ui/cubes/${enc(CUBE)}/sessions/${enc(id)}`;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const $ = (selector) => document.querySelector(selector);
const clip = (text, n = 160) => (!text ? "" : text.length > n ? `${text.slice(0, n)}…` : text);
const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("+00:00", "Z") : "");

function notice(message, kind = "error") {
  const box = $("#notice");
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
}

function fail(where) {
  return (err) => {
    notice(`${where}: ${err.message}`);
    throw err;
  };
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function pager(container, page, onPage) {
  const end = Math.min(page.offset + page.items.length, page.total);
  container.replaceChildren(
    el("button", { disabled: page.offset === 0,
      onclick: () => onPage(Math.max(0, page.offset - page.limit)) }, "‹ previous"),
    el("span", { class: "range" }, page.total ? `${page.offset + 1}–${end} of ${page.total}` : "none"),
    el("button", { disabled: end >= page.total, onclick: () => onPage(page.offset + page.limit) },
      "next ›"));
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === "" || value === null || value === undefined) continue;
    search.append(name, value);
  }
  return search.toString();
}

function memoryLink(id, label) { return el("a", { href: memoryHref(id) }, label || id); }

// a stale KV cache or adapter says why (its sources changed, another model, …)
const statusWithReason = (u) => (u.status_reason ? `${u.status} (${u.status_reason})` : u.status);

function chart(canvas, config) {
  const old = Chart.getChart(canvas);
  if (old) old.destroy();
  return new Chart(canvas, { ...config, options: { animation: false, responsive: true,
    maintainAspectRatio: false, ...(config.options || {}) } });
}

// ---------------------------------------------------------------- the key form

function setupKey() {
  const form = $("#key-form");
  if (!form) return;
  const state = $("#key-state");
  const show = () => { state.textContent = key() ? "key set" : "no key"; };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#key-input").value.trim();
    if (value) sessionStorage.setItem(KEY_STORE, value);
    location.reload();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });
  show();
  if (!key()) notice("This server needs an API key: type it in the header.", "info");
}

// ---------------------------------------------------------------- pages

async function cubesPage() {
  const cubes = await api("GET", "/v1/cubes").catch(fail("cubes"));
  fill($("#cubes tbody"), cubes.map((c) => el("tr", {},
    el("td", {}, el("a", { href: `/ui/cubes/${enc(c.id)}`, class: "cube-link" }, c.id)),
    el("td", {}, c.name || ""), el("td", { class: "num" }, c.units),
    el("td", { class: "num" }, c.pending_jobs), el("td", {}, c.embedding_model),
    el("td", {}, when(c.created_at)))));
  $("#cubes-empty").hidden = cubes.length > 0;
}

async function cubePage() {
  const cube = await api("GET", cubePath()).catch(fail("cube"));
  $("#cube-name").textContent = [cube.name, `${cube.units} active units`,
    `${cube.pending_jobs} pending jobs`].filter(Boolean).join(" · ");
  const grans = JSON.parse(body.dataset.granularities || "[]");
  const stats = await api("GET", cubePath("/stats")).catch(fail("counts"));
  const byGran = grans.map((g) => stats.granularity[g] || 0);
  const byStatus = STATUSES.map((s) => stats.status[s] || 0);
  const byKind = KINDS.map((k) => stats.kind[k] || 0);
  chart($("#chart-granularity"), { type: "bar",
    data: { labels: grans, datasets: [{ label: "active units", data: byGran }] },
    options: { plugins: { legend: { display: false } } } });
  const countRows = (names, values) => names.map((n, i) => el("tr", {},
    el("th", {}, n), el("td", { class: "num", "data-name": n }, values[i])));
  fill($("#counts-status tbody"), countRows(STATUSES, byStatus));
  fill($("#counts-kind tbody"), countRows(KINDS, byKind));

  const sessions = async (offset) => {
    const page = await api("GET", cubePath(`/memories?${query(
      { granularity: "session", offset, limit: PAGE_SIZE })}`)).catch(fail("sessions"));
    fill($("#sessions tbody"), page.items.map((u) => el("tr", {},
      el("td", {}, el("a", { href: sessionHref(u.session_id), class: "session-link" },
        u.session_id)),
      el("td", {}, when(u.valid_from)), el("td", {}, clip(u.text, 160)))));
    const timed = page.items.filter((u) => u.valid_from);
    chart($("#chart-timeline"), { type: "scatter",
      data: { datasets: [{ label: "session", pointRadius: 5,
        data: timed.map((u) => ({ x: Date.parse(u.valid_from), y: 0, id: u.session_id })) }] },
      options: { plugins: { legend: { display: false }, tooltip: { callbacks: {
        label: (ctx) => `${ctx.raw.id} · ${new Date(ctx.raw.x).toISOString().slice(0, 16)}` } } },
      scales: { y: { display: false }, x: { type: "linear", ticks: {
        callback: (v) => new Date(v).toISOString().slice(0, 10) } } },
      onClick: (_e, items) => { if (items.length) location.href = sessionHref(
        timed[items[0].index].session_id); } } });
    pager($("#sessions-pager"), page, sessions);
  };

  const form = $("#filters");
  const memories = async (offset) => {
    const f = Object.fromEntries(new FormData(form));
    const page = await api("GET", cubePath(`/memories?${query({ ...f, offset, limit: PAGE_SIZE })}`))
      .catch(fail("memories"));
    fill($("#memories tbody"), page.items.map((u) => el("tr", {},
      el("td", {}, memoryLink(u.id)), el("td", {}, u.granularity), el("td", {}, u.kind),
      el("td", {}, u.status), el("td", { class: "num" }, u.version),
      el("td", {}, clip(u.text, 140)))));
    pager($("#memories-pager"), page, memories);
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); memories(0); });
  await Promise.all([sessions(0), memories(0)]);
}

async function sessionPage() {
  const sid = body.dataset.session;
  const units = await api("GET", cubePath(`/memories?${query(
    { granularity: "session", session_id: sid, limit: 1 })}`)).catch(fail("session"));
  if (!units.items.length) { notice(`no session unit for ${sid}`); return; }
  const unit = units.items[0];
  $("#session-unit").replaceChildren("session unit ", memoryLink(unit.id),
    unit.valid_from ? ` · event time ${when(unit.valid_from)}` : "");
  const prov = await api("GET", cubePath(`/memories/${enc(unit.id)}/provenance`))
    .catch(fail("messages"));
  fill($("#messages"), prov.sources.map((s) => el("li", { class: "message", id: s.message.id },
    el("div", { class: "meta" }, el("b", {}, s.message.speaker || s.message.role), " · ",
      when(s.message.timestamp) || "no timestamp", " · ", el("code", {}, s.message.id)),
    el("div", { class: "content" }, s.message.content))));
  await sessionGraph(sid);
  const select = $("#derived-granularity");
  const derived = async () => {
    const rows = await api("GET", cubePath(`/sessions/${enc(sid)}/memories?${query(
      { granularity: select.value })}`)).catch(fail("derived memories"));
    fill($("#derived tbody"), rows.map((u) => el("tr", { class: `status-${u.status}` },
      el("td", {}, memoryLink(u.id)), el("td", {}, u.status), el("td", {}, u.status_reason || ""),
      el("td", {}, clip(u.text, 160)))));
  };
  select.addEventListener("change", derived);
  await derived();
}

const GRAPH_TURNS = 40;  // a longer session draws its first 40 turns (one call each)

// The association graph: the session's turns, and every unit their links reach, laid out by
// Cytoscape's force-directed layout; edges are the stored links (type and weight).
async function sessionGraph(sid) {
  const turns = await api("GET", cubePath(`/memories?${query(
    { granularity: "turn", session_id: sid, limit: GRAPH_TURNS })}`)).catch(fail("turns"));
  const provs = await Promise.all(turns.items.map((t) => api("GET",
    cubePath(`/memories/${enc(t.id)}/provenance`)))).catch(fail("links"));
  const nodes = new Map(turns.items.map((t) => [t.id, { data: { id: t.id, inside: "yes",
    label: `${t.speaker || ""}: ${clip(t.text, 40)}` } }]));
  const edges = new Map();
  for (const prov of provs) {
    for (const l of prov.links) {
      for (const end of [l.source_id, l.target_id]) {
        if (!nodes.has(end)) nodes.set(end, { data: { id: end, inside: "no", label: end.slice(0, 8) } });
      }
      const id = `${l.source_id}|${l.target_id}|${l.type}`;
      edges.set(id, { data: { id, source: l.source_id, target: l.target_id, type: l.type,
        weight: l.weight } });
    }
  }
  const graph = cytoscape({
    container: $("#graph"),
    maxZoom: 1.2,  // a few nodes are not blown up to fill the box
    elements: [...nodes.values(), ...edges.values()],
    layout: { name: "cose", animate: false, randomize: false },
    style: [
      { selector: "node", style: { label: "data(label)", "font-size": 9, width: 14, height: 14,
        "background-color": "#2f5bd3", "text-wrap": "ellipsis", "text-max-width": 160 } },
      { selector: "node[inside = 'no']", style: { "background-color": "#aab2c0" } },
      { selector: "edge", style: { width: "mapData(weight, 0, 1, 0.5, 4)", "line-color": "#e39b2d",
        "curve-style": "bezier", "target-arrow-shape": "triangle", "target-arrow-color": "#e39b2d",
        "arrow-scale": 0.6 } },
      { selector: "edge[type != 'associated']", style: { "line-color": "#9aa5b5",
        "target-arrow-color": "#9aa5b5", "line-style": "dashed" } },
    ],
  });
  graph.on("tap", "node", (event) => { location.href = memoryHref(event.target.id()); });
  window.memosGraph = graph;  // for the browser tests
  $("#graph-meta").textContent = `${turns.items.length} of ${turns.total} turns, `
    + `${nodes.size - turns.items.length} linked units outside them, ${edges.size} links`;
}

// Word-level diff (longest common subsequence), enough for a memory's few sentences.
function diffWords(before, after) {
  const a = (before || "").split(/(\s+)/);
  const b = (after || "").split(/(\s+)/);
  const n = a.length, m = b.length;
  const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) { out.push(a[i]); i++; j++; }
    else if (j < m && (i >= n || dp[i][j + 1] >= dp[i + 1][j])) out.push(el("ins", {}, b[j++]));
    else out.push(el("del", {}, a[i++]));
  }
  return out;
}

function highlighted(content, start, end) {
  return [content.slice(0, start), el("mark", {}, content.slice(start, end)), content.slice(end)];
}

async function memoryPage() {
  const id = body.dataset.memory;
  let unit;
  try {
    unit = await api("GET", cubePath(`/memories/${enc(id)}`));
  } catch (err) {
    notice(err.status === 404 ? `memory ${id} not found (deleted, or not this key's)` : err.message);
    $("#edit").hidden = true;
    return;
  }
  const field = (name, value) => [el("dt", {}, name), el("dd", { "data-field": name }, value)];
  $("#fields").replaceChildren(...[
    field("kind", unit.kind), field("granularity", unit.granularity),
    field("status", unit.status), field("status reason", unit.status_reason || "—"),
    field("version", unit.version), field("tags", unit.tags.join(", ") || "—"),
    field("confidence", unit.confidence), field("session",
      unit.session_id ? el("a", { href: sessionHref(unit.session_id) }, unit.session_id) : "—"),
    field("speaker", unit.speaker || "—"), field("extractor", unit.extractor),
    field("event time", [when(unit.valid_from), unit.valid_to ? ` → ${when(unit.valid_to)}` : ""]),
    field("created", when(unit.created_at)), field("lineage", unit.lineage_id),
  ].flat());
  $("#memory-text").textContent = unit.text || "(no text: a model-memory payload)";
  const form = $("#edit-form");
  form.text.value = unit.text || "";
  form.tags.value = unit.tags.join(", ");
  form.confidence.value = unit.confidence;
  const current = unit.status === "active" || unit.status === "archived"
    || unit.status === "quarantined";
  $("#edit").hidden = !current;
  $("#restore").hidden = unit.status === "active";
  $("#archive").hidden = unit.status !== "active";

  const [history, prov] = await Promise.all([
    api("GET", cubePath(`/memories/${enc(id)}/history`)),
    api("GET", cubePath(`/memories/${enc(id)}/provenance`)),
  ]).catch(fail("history"));
  fill($("#history"), history.map((v, i) => el("li", { class: v.id === id ? "this" : "",
    "data-version": v.version },
    el("div", { class: "meta" }, el("b", {}, `version ${v.version}`), " · ", v.status, " · ",
      when(v.created_at), v.status_reason ? ` · ${v.status_reason}` : "", " · ",
      v.id === id ? "(this page)" : memoryLink(v.id)),
    el("div", { class: "diff" }, i === 0 ? (v.text || "") : diffWords(history[i - 1].text, v.text)))));

  $("#extractor").textContent = `extractor: ${prov.extractor}`;
  $("#sources").replaceChildren(...(prov.sources.length ? prov.sources.map((s) => el("div",
    { class: "source", "data-quote": s.quote, "data-message": s.message.id },
    el("div", { class: "meta" }, el("b", {}, s.message.speaker || s.message.role), " · ",
      when(s.message.timestamp) || "no timestamp", " · ",
      el("a", { href: `${sessionHref(s.message.session_id)}#${enc(s.message.id)}` },
        `${s.message.session_id} / ${s.message.id}`), ` · chars ${s.start}–${s.end}`),
    el("div", { class: "content" }, highlighted(s.message.content, s.start, s.end))))
    : [el("p", { class: "muted" }, "No source messages cited.")]));
  fill($("#derived-from"), prov.derived_from.map((u) => el("li", {},
    memoryLink(u.id), ` ${u.granularity} · ${clip(u.text, 100)}`)));
  fill($("#links"), prov.links.map((l) => {
    const other = l.source_id === unit.id ? l.target_id : l.source_id;
    const dir = l.source_id === unit.id ? "→" : "←";
    return el("li", {}, `${l.type} ${dir} `, memoryLink(other), ` (weight ${l.weight.toFixed(3)})`);
  }));

  const result = $("#edit-result");
  const reason = () => form.reason.value.trim() || undefined;
  const patch = async (changes, verb) => {
    try {
      const next = await api("PATCH", cubePath(`/memories/${enc(id)}`), changes);
      location.href = `${memoryHref(next.id)}?done=${enc(verb)}`;
    } catch (err) { result.textContent = `${verb} failed: ${err.message}`; }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const changes = {};
    if (form.text.value.trim() && form.text.value !== unit.text) changes.text = form.text.value;
    const tags = form.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    if (tags.join(",") !== unit.tags.join(",")) changes.tags = tags;
    const confidence = Number(form.confidence.value);
    if (form.confidence.value !== "" && confidence !== unit.confidence) changes.confidence = confidence;
    if (!Object.keys(changes).length) { result.textContent = "nothing changed"; return; }
    patch({ ...changes, reason: reason() }, "saved");
  });
  $("#archive").addEventListener("click", () => patch({ status: "archived", reason: reason() }, "archived"));
  $("#restore").addEventListener("click", () => patch({ status: "active", reason: reason() }, "restored"));
  const del = $("#delete");
  del.addEventListener("click", async () => {
    if (del.dataset.armed !== "yes") {  // a second click confirms: no blocking dialog
      del.dataset.armed = "yes";
      del.textContent = "click again to delete";
      return;
    }
    try {
      const report = await api("DELETE", cubePath(`/memories/${enc(id)}`));
      $("#edit").hidden = true;
      notice(`deleted ${report.memory_id}: ${report.versions} version(s) tombstoned`
        + (report.retired.length ? `, ${report.retired.length} derived memories retired` : ""),
      "info");
      $("#fields [data-field=status]").textContent = "deleted";
    } catch (err) { result.textContent = `delete failed: ${err.message}`; }
  });
  const done = new URLSearchParams(location.search).get("done");
  if (done) notice(`${done}: version ${unit.version}`, "info");
  if (unit.kind === "plaintext") await associationChart(id);
}

function shareBar(explain) {
  if (explain.lexical_share === undefined) return null;
  const lex = Math.round(explain.lexical_share * 100);
  return el("div", { class: "share", title: `lexical ${lex}% · dense ${100 - lex}%` },
    el("span", { class: "bar" }, el("span", { class: "lex", style: `width:${lex}%` }),
      el("span", { class: "dense" })),
    el("small", {}, ` lexical ${lex}% / dense ${100 - lex}%`));
}

function hitItem(hit) {
  const u = hit.unit, x = hit.explain || {};
  const facts = [];
  if (x.time_closeness !== undefined && x.time_closeness !== null)
    facts.push(`time match ${x.time_closeness.toFixed(2)}`);
  if (x.speaker_match) facts.push("speaker match");
  if (x.ppr !== undefined && x.ppr !== null) facts.push(`graph ${x.ppr.toFixed(3)}`);
  const path = (x.association_path || []).length ? el("div", { class: "path" }, "association path: ",
    x.association_path.flatMap((p, i) => (i ? [" → ", memoryLink(p)] : [memoryLink(p)]))) : null;
  const best = x.best_turn ? el("div", { class: "path" }, "best turn: ", memoryLink(x.best_turn)) : null;
  return el("li", { class: "hit", "data-id": u.id, "data-granularity": u.granularity },
    el("div", { class: "meta" }, el("b", {}, hit.score.toFixed(3)), ` · ${u.granularity} · `,
      memoryLink(u.id), u.session_id ? [" · ", el("a", { href: sessionHref(u.session_id) },
        u.session_id)] : ""),
    el("div", { class: "content" }, clip(u.text, 300)),
    shareBar(x), facts.length ? el("div", { class: "facts" }, facts.join(" · ")) : null, path, best);
}

async function searchPage() {
  const form = $("#search-form");
  const params = new URLSearchParams(location.search);
  if (params.get("q")) form.query.value = params.get("q");
  const run = async () => {
    const f = Object.fromEntries(new FormData(form));
    const filters = f.granularity ? { granularity: [f.granularity] } : {};
    const request = { query: f.query, top_k: Number(f.top_k) || 10, explain: true, filters };
    $("#search-meta").textContent = "searching…";
    const [main, dense] = await Promise.all([
      api("POST", cubePath("/search"), { ...request, mode: f.mode }),
      api("POST", cubePath("/search"), { ...request, mode: "dense" }),
    ]).catch((err) => { $("#search-meta").textContent = ""; return fail("search")(err); });
    $("#search-meta").textContent = `${main.hits.length} hits in ${main.took_ms.toFixed(1)} ms `
      + `(${main.score_kind} scores) · dense: ${dense.took_ms.toFixed(1)} ms`;
    $("#mode-used").textContent = `mode used: ${main.mode}`;
    fill($("#hits"), main.hits.map(hitItem));
    fill($("#session-hits"), main.sessions.map(hitItem));
    $("#sessions-title").hidden = !main.sessions.length;
    fill($("#dense-hits"), dense.hits.map(hitItem));
    const box = $("#router-box");
    box.hidden = !main.router;
    if (main.router) {
      const names = Object.keys(main.router.weights);
      chart($("#chart-router"), { type: "bar",
        data: { labels: names, datasets: [
          { label: "weight", data: names.map((g) => main.router.weights[g]) },
          { label: "normalised entropy", data: names.map((g) => (main.router.entropies || {})[g]) }] },
        options: { scales: { y: { min: 0, max: 1 } } } });
    }
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    history.replaceState(null, "", `?${query({ q: form.query.value })}`);
    run();
  });
  if (form.query.value) await run();
}

async function modelPage() {
  const cube = await api("GET", cubePath()).catch(fail("cube"));
  $("#jobs-pending").textContent = `${cube.pending_jobs} background jobs queued or running `
    + "(derived units, extraction, model memory).";
  const section = async (name, load) => { try { await load(); } catch (err) {
    notice(`${name}: ${err.message}`); } };
  const filter = $("#jobs-filter");
  const jobs = async (offset) => {
    const f = Object.fromEntries(new FormData(filter));
    const page = await api("GET", cubePath(`/jobs?${query({ ...f, offset, limit: PAGE_SIZE })}`));
    fill($("#jobs tbody"), page.items.map((j) => el("tr", { class: `job-${j.status}`,
      "data-job": j.id },
      el("td", { class: "num" }, j.id), el("td", {}, j.kind), el("td", {}, j.status),
      el("td", { class: "num" }, j.attempts), el("td", { class: "num" },
        `${Math.round(j.progress * 100)}%`), el("td", {}, when(j.created_at)),
      el("td", {}, el("code", { class: "error" }, clip(j.error || "", 300))),
      el("td", {}, j.status === "failed" ? el("button", { class: "retry", onclick: async () => {
        try {
          await api("POST", cubePath(`/jobs/${j.id}/retry`));
          await jobs(page.offset);
        } catch (err) { notice(`retry ${j.id}: ${err.message}`); }
      } }, "retry") : ""))));
    pager($("#jobs-pager"), page, jobs);
  };
  filter.addEventListener("submit", (event) => { event.preventDefault(); jobs(0); });
  await Promise.all([
    section("jobs", () => jobs(0)),
    section("scheduler", async () => {
      const s = await api("GET", cubePath("/scheduler"));
      const field = (n, v) => [el("dt", {}, n), el("dd", {}, v)];
      $("#scheduler").replaceChildren(...[
        field("last tick", when(s.last_tick) || "never"),
        field("hot units", s.hot_units.length), field("stable facts", s.stable_facts.length),
        field("activations", s.activations.length), field("adapters", s.adapters.length),
        field("policy", Object.entries(s.policy).map(([k, v]) => `${k}=${v}`).join(", ")),
      ].flat());
      fill($("#decisions tbody"), s.history.slice().reverse().map((d) => el("tr", {},
        el("td", {}, when(d.at)), el("td", {}, d.action), el("td", {}, d.reason),
        el("td", {}, d.unit_ids.slice(0, 5).flatMap((i) => [memoryLink(i), " "])))));
    }),
    section("activations", async () => {
      const units = await api("GET", cubePath("/activations?include_inactive=true"));
      fill($("#activations tbody"), units.map((a) => el("tr", {},
        el("td", {}, memoryLink(a.unit.id)), el("td", {}, statusWithReason(a.unit)),
        el("td", { class: "num" }, a.n_tokens),
        el("td", {}, el("code", {}, clip(JSON.stringify(a.payload_meta.fingerprint || {}), 80))),
        el("td", {}, a.source_ids.flatMap((i) => [memoryLink(i), " "])))));
    }),
    section("adapters", async () => {
      const units = await api("GET", cubePath("/adapters?include_inactive=true"));
      const HIDDEN = ["fingerprint", "lora", "loss_curve", "nll_before", "nll_after"];
      const nll = (m) => (m.nll_before === undefined ? "—"
        : `${m.nll_before.toFixed(3)} → ${m.nll_after.toFixed(3)}`);
      fill($("#adapters tbody"), units.map((a) => el("tr", { "data-id": a.unit.id },
        el("td", {}, memoryLink(a.unit.id)), el("td", {}, statusWithReason(a.unit)),
        el("td", { class: "num" }, a.source_ids.length),
        el("td", { class: "num", "data-field": "nll" }, nll(a.payload_meta)),
        el("td", {}, el("code", {}, clip(JSON.stringify(Object.fromEntries(Object.entries(
          a.payload_meta).filter(([k]) => !HIDDEN.includes(k)))), 200))))));
      const curves = units.filter((a) => Array.isArray(a.payload_meta.loss_curve));
      $("#adapter-curves").hidden = !curves.length;
      if (curves.length) {
        chart($("#chart-adapter-loss"), { type: "line", data: { datasets: curves.map((a) => ({
          label: a.unit.id.slice(0, 8), pointRadius: 0,
          data: a.payload_meta.loss_curve.map((y, i) => ({ x: i + 1, y })) })) },
        options: { scales: { x: { type: "linear", title: { display: true, text: "step" } },
          y: { title: { display: true, text: "training loss (nats/token)" } } } } });
      }
    }),
  ]);
}

// ---------------------------------------------------------------- structure

const MIX_BINS = 10;

async function structurePage() {
  const form = $("#structure-form");
  const draw = async () => {
    const f = Object.fromEntries(new FormData(form));
    const map = await api("GET", cubePath(`/structure/clusters?${query(f)}`))
      .catch(fail("cluster map"));
    $("#cluster-summary").textContent = map.clusters
      ? `${map.units} ${map.granularity} units in ${map.clusters} clusters (BIC chose among `
        + `${Object.keys(map.bic).join(", ")})`
      : `${map.units} ${map.granularity} units: too few to cluster`;
    const byCluster = new Map();
    for (const p of map.points) {
      if (!byCluster.has(p.cluster)) byCluster.set(p.cluster, []);
      byCluster.get(p.cluster).push(p);
    }
    const clusters = [...byCluster.keys()].sort((a, b) => a - b);
    chart($("#chart-clusters"), { type: "scatter",
      data: { datasets: clusters.map((c) => ({ label: `cluster ${c}`, pointRadius: 4,
        data: byCluster.get(c) })) },
      options: { parsing: { xAxisKey: "x", yAxisKey: "y" },
        plugins: { tooltip: { callbacks: { label: (ctx) => clip(ctx.raw.text, 80) } } },
        scales: { x: { title: { display: true, text: "principal axis 1" } },
          y: { title: { display: true, text: "principal axis 2" } } },
        onClick: (_e, items) => { if (items.length) {
          const { datasetIndex, index } = items[0];
          location.href = memoryHref(byCluster.get(clusters[datasetIndex])[index].id);
        } } } });
    fill($("#clusters tbody"), clusters.map((c) => el("tr", {},
      el("th", {}, `cluster ${c}`), el("td", { class: "num" }, byCluster.get(c).length),
      el("td", {}, clip(byCluster.get(c)[0].text, 120)))));
  };
  form.addEventListener("submit", (event) => { event.preventDefault(); draw(); });
  await draw();
}

async function associationChart(id) {
  const mix = await api("GET", cubePath(`/structure/association/${enc(id)}`))
    .catch(() => null);
  const box = $("#association");
  if (!mix || !mix.scores.length) {
    box.querySelector(".muted").textContent = mix ? "no earlier unit of this granularity to "
      + "associate with" : "no association view for this memory";
    return;
  }
  const accepted = mix.scores.filter((s) => s.accepted).length;
  box.querySelector(".muted").textContent = `top ${mix.scores.length} similarities to earlier `
    + `${mix.granularity} units (${mix.scan} scan); rule: ${mix.rule}; threshold `
    + `${mix.threshold === null ? "none" : mix.threshold.toFixed(3)}; ${accepted} linked`;
  const values = mix.scores.map((s) => s.score);
  const xs = mix.curve.length ? mix.curve.map((p) => p[0]) : values;
  const lo = Math.min(...xs, ...values);
  const hi = Math.max(...xs, ...values);
  const width = (hi - lo) / MIX_BINS || 1;
  const counts = new Array(MIX_BINS).fill(0);
  for (const v of values) counts[Math.min(MIX_BINS - 1, Math.floor((v - lo) / width))] += 1;
  const datasets = [{ type: "bar", label: "scores (density)", barPercentage: 1,
    categoryPercentage: 1, data: counts.map((n, i) => ({ x: lo + (i + 0.5) * width,
      y: n / (values.length * width) })) }];
  mix.components.forEach((c, k) => datasets.push({ type: "line", pointRadius: 0,
    label: `${k ? "higher" : "lower"} Gaussian (w ${c.weight.toFixed(2)}, μ ${c.mean.toFixed(3)})`,
    data: mix.curve.map((p) => ({ x: p[0], y: p[k + 1] })) }));
  if (mix.threshold !== null) {
    const top = Math.max(...datasets.flatMap((d) => d.data.map((p) => p.y)), 1);
    datasets.push({ type: "line", label: "threshold", borderDash: [6, 4], pointRadius: 0,
      data: [{ x: mix.threshold, y: 0 }, { x: mix.threshold, y: top }] });
  }
  chart($("#chart-association"), { type: "bar", data: { datasets },
    options: { scales: { x: { type: "linear", min: lo, max: hi,
      title: { display: true, text: "cosine similarity" } },
    y: { title: { display: true, text: "density" } } } } });
  fill($("#association-scores tbody"), mix.scores.map((s) => el("tr", {},
    el("td", { class: "num" }, s.score.toFixed(3)), el("td", {}, s.accepted ? "linked" : ""),
    el("td", {}, memoryLink(s.id, clip(s.text, 100))))));
}

// ---------------------------------------------------------------- start

const STATUSES = JSON.parse(body.dataset.statuses || "[]");
const KINDS = JSON.parse(body.dataset.kinds || "[]");
const PAGES = { cubes: cubesPage, cube: cubePage, session: sessionPage, memory: memoryPage,
  search: searchPage, model: modelPage, structure: structurePage };

document.addEventListener("DOMContentLoaded", async () => {
  setupKey();
  if (body.dataset.auth === "on" && !key()) return;
  try {
    await PAGES[body.dataset.page]();
    body.dataset.ready = "yes";  // the browser tests wait for this
  } catch (err) {
    body.dataset.ready = "error";
    console.error(err);
  }
});
