// The broker's dashboard: reads the same JSON endpoints as any client, with the visitor's key.
// Plain browser JavaScript, no library and nothing fetched from anywhere but this broker.
"use strict";

const KEY_STORE = "broker.dashboard.key";
const COLORS = ["#2f6fdb", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d4ac0d"];

// One colour per provider on every view and for every key: the provider's place among all the
// broker's providers (GET /v1/providers answers every key alike), not among those a report shows.
const palette = new Map();

function setPalette(names) {
  palette.clear();
  [...names].sort().forEach((name, i) => palette.set(name, COLORS[i % COLORS.length]));
}

function colorOf(provider) {
  if (palette.has(provider)) return palette.get(provider);
  let hash = 0; // a name outside the list ("(none)"): still one colour, always the same
  for (const c of provider) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return COLORS[hash % COLORS.length];
}

function swatched(provider, label = provider) {
  const item = el("span", { class: "swatch", dataset: { provider } }, label);
  item.style.setProperty("--swatch", colorOf(provider));
  return item;
}

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// Money arrives as six-decimal strings; sums are kept in integer micro-USD, as the broker does.
function micros(usd) {
  if (usd === null || usd === undefined) return 0;
  const negative = usd.startsWith("-");
  const [whole, frac = ""] = usd.replace("-", "").split(".");
  const value = Number(whole) * 1e6 + Number((frac + "000000").slice(0, 6));
  return negative ? -value : value;
}

function usd(value) {
  const sign = value < 0 ? "-" : "";
  const abs = Math.abs(value);
  return `${sign}${Math.floor(abs / 1e6)}.${String(abs % 1e6).padStart(6, "0")}`;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function key() {
  return sessionStorage.getItem(KEY_STORE);
}

async function api(path, options = {}) {
  const headers = { Authorization: `Bearer ${key()}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers });
  const body = response.headers.get("Content-Type")?.startsWith("application/json") ? await response.json() : null;
  if (!response.ok) {
    const error = body?.error || {};
    throw new ApiError(response.status, error.code || "http_error", error.message || response.statusText);
  }
  return body;
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function windowQuery() {
  const params = new URLSearchParams();
  if ($("from").value) params.set("from", $("from").value);
  if ($("to").value) params.set("to", $("to").value);
  return params;
}

function report(groupBy) {
  const params = windowQuery();
  params.set("group_by", groupBy);
  return api(`/v1/reports/costs?${params}`);
}

function table(target, header, rows, { numeric = [], total = null } = {}) {
  const node = $(target);
  node.replaceChildren();
  const head = el("tr");
  header.forEach((name, i) => head.append(el("th", numeric.includes(i) ? { class: "num" } : {}, name)));
  node.append(el("thead", {}, head));
  const body = el("tbody");
  const all = total ? [...rows, total] : rows;
  all.forEach((row, index) => {
    const tr = el("tr", total && index === rows.length ? { class: "total" } : {});
    row.forEach((cell, i) => {
      const td = el("td", numeric.includes(i) ? { class: "num" } : {});
      td.append(cell instanceof Node ? cell : String(cell ?? "—"));
      tr.append(td);
    });
    body.append(tr);
  });
  if (!all.length) body.append(el("tr", {}, el("td", { colspan: String(header.length) }, "nothing in this window")));
  node.append(body);
}

function renderTotals(totals) {
  const cards = [
    ["Spend", `$${totals.spend_usd}`],
    ["Savings vs priciest route", `$${totals.savings_usd}`],
    ["Jobs", totals.jobs],
    ["Succeeded", totals.succeeded],
    ["Failed", totals.failed],
    ["Avg cost per clip", totals.avg_cost_per_success_usd === null ? "—" : `$${totals.avg_cost_per_success_usd}`],
  ];
  $("totals").replaceChildren(
    ...cards.map(([label, value]) =>
      el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, String(value))),
    ),
  );
}

function renderByProvider(data) {
  const rows = data.groups.map((g) => [
    swatched(g.provider), g.jobs, g.attempts, g.spend_usd, g.refunds_usd, g.savings_usd,
  ]);
  const t = data.totals;
  table("by-provider", ["provider", "jobs", "attempts", "spend_usd", "refunds_usd", "savings_usd"], rows, {
    numeric: [1, 2, 3, 4, 5],
    total: ["total", t.jobs, t.attempts, t.spend_usd, t.refunds_usd, t.savings_usd],
  });
  $("by-provider").dataset.totalSpend = t.spend_usd;
}

function renderByTeam(data) {
  const rows = data.groups.map((g) => [g.team, g.jobs, g.succeeded, g.failed, g.spend_usd, g.savings_usd]);
  table("by-team", ["team", "jobs", "succeeded", "failed", "spend_usd", "savings_usd"], rows, {
    numeric: [1, 2, 3, 4, 5],
  });
}

function renderByModel(data) {
  const rows = data.groups.map((g) => [
    swatched(g.provider), g.model, g.jobs, g.attempts, g.spend_usd, g.avg_cost_per_success_usd, g.savings_usd,
  ]);
  table("by-model", ["provider", "model", "jobs", "attempts", "spend_usd", "avg_per_clip_usd", "savings_usd"], rows, {
    numeric: [2, 3, 4, 5, 6],
  });
}

function daysOf(data) {
  const days = [];
  const start = new Date(data.from);
  const end = new Date(data.to);
  for (let day = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate())); day < end;
    day.setUTCDate(day.getUTCDate() + 1)) {
    days.push(day.toISOString().slice(0, 10));
  }
  return days;
}

function renderDaily(data) {
  const days = daysOf(data);
  const providers = [...new Set(data.groups.map((g) => g.provider))].sort();
  const spend = new Map();
  for (const g of data.groups) spend.set(`${g.day}|${g.provider}`, micros(g.spend_usd));
  const dayTotal = days.map((d) => providers.reduce((sum, p) => sum + (spend.get(`${d}|${p}`) || 0), 0));
  const peak = Math.max(1, ...dayTotal);
  const width = 1000, height = 240, left = 70, bottom = 22, top = 10;
  const plot = height - bottom - top;
  const step = (width - left - 10) / Math.max(1, days.length);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
  const title = svg("title", {});
  title.textContent = "Spend per day, stacked by provider";
  chart.append(title);
  for (let i = 0; i <= 4; i++) {
    const y = top + plot - (plot * i) / 4;
    chart.append(svg("line", { x1: left, x2: width - 10, y1: y, y2: y, stroke: "#e4e4df" }));
    const label = svg("text", { x: left - 6, y: y + 3, "text-anchor": "end" });
    label.textContent = `$${usd(Math.round((peak * i) / 4)).slice(0, -2)}`;
    chart.append(label);
  }
  days.forEach((day, i) => {
    let y = top + plot;
    providers.forEach((provider) => {
      const value = spend.get(`${day}|${provider}`) || 0;
      if (!value) return;
      const h = (plot * value) / peak;
      y -= h;
      const bar = svg("rect", {
        x: left + i * step + step * 0.1, y, width: step * 0.8, height: h, fill: colorOf(provider),
      });
      bar.append(svg("title", {}));
      bar.lastChild.textContent = `${day} ${provider}: $${usd(value)}`;
      chart.append(bar);
    });
    if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) {
      const label = svg("text", { x: left + i * step + step / 2, y: height - 6, "text-anchor": "middle" });
      label.textContent = day.slice(5);
      chart.append(label);
    }
  });
  $("daily-chart").replaceChildren(chart);
  $("daily-legend").replaceChildren(
    ...providers.map((provider) => swatched(provider)),
  );
}

function renderBudgets(policies) {
  const rows = [];
  for (const policy of policies) {
    for (const budget of policy.budgets) {
      const limit = micros(budget.limit_usd);
      const used = micros(budget.spent_usd) + micros(budget.reserved_usd);
      const share = limit ? used / limit : 0;
      const meter = el("div", { class: `meter${share >= 1 ? " over" : share >= 0.9 ? " warn" : ""}` }, el("div"));
      meter.firstChild.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
      rows.push([policy.team, budget.window.split(":")[1] || budget.window, budget.spent_usd, budget.reserved_usd,
        budget.limit_usd, `${(share * 100).toFixed(1)} %`, meter]);
    }
  }
  const holder = el("table", { id: "budget-table" });
  $("budgets").replaceChildren(holder);
  table("budget-table", ["team", "window", "spent_usd", "reserved_usd", "limit_usd", "used", ""], rows, {
    numeric: [2, 3, 4, 5],
  });
  if (!rows.length) $("budgets").replaceChildren(el("p", { class: "muted" }, "no team has a budget set"));
}

function renderProviders(data) {
  const rows = data.providers.map((p) => [
    swatched(p.provider),
    el("span", { class: `state-${p.circuit}`, title: p.circuit_reason || "" }, p.circuit.replace("_", "-")),
    p.routable ? "yes" : "no key",
    p.max_concurrency === null ? `${p.in_flight} (no cap)` : `${p.in_flight} / ${p.max_concurrency}`,
    p.requests,
    p.error_rate === null ? "—" : `${(p.error_rate * 100).toFixed(1)} %`,
    p.mean_latency_s === null ? "—" : p.mean_latency_s.toFixed(3),
  ]);
  table("providers", ["provider", "circuit", "routable", "in use / max", "requests", "error rate", "mean latency_s"],
    rows, { numeric: [3, 4, 5, 6] });
}

// Each provider with a queue or a concurrency cap: a row per team (a team key gets its own only) and one
// for all teams, with the cap; a team's share is of the slots in use, every team's.
function renderQueues(data) {
  const rows = [];
  for (const p of data.providers) {
    if (p.max_concurrency === null && !p.waiting) continue;
    for (const t of p.teams) {
      rows.push([swatched(p.provider), t.team, t.waiting, t.in_use, t.share === null ? "—" : `${(t.share * 100).toFixed(1)} %`]);
    }
    const cap = p.max_concurrency === null ? "no cap" : `of ${p.max_concurrency}`;
    rows.push([swatched(p.provider), el("span", { class: "muted" }, "all teams"), p.waiting, `${p.in_flight} ${cap}`, "—"]);
  }
  const holder = el("table", { id: "queue-table" });
  $("queues").replaceChildren(holder);
  table("queue-table", ["provider", "team", "waiting", "slots in use", "share of slots in use"], rows, {
    numeric: [2, 3, 4],
  });
  if (!rows.length) $("queues").replaceChildren(el("p", { class: "muted" }, "no provider has a cap or a queue"));
}

const state = { jobs: [] };

function seconds(job) {
  if (!job.completed_at) return "—";
  return ((new Date(job.completed_at) - new Date(job.created_at)) / 1000).toFixed(1);
}

function outputLink(job) {
  if (job.status !== "succeeded" || !job.output) return "—";
  const link = el("a", { href: `/v1/jobs/${encodeURIComponent(job.id)}/output`, class: "output" }, "MP4");
  link.addEventListener("click", async (event) => {
    // The output needs the key, which a plain link cannot send: fetch it, then open what came back.
    event.preventDefault();
    try {
      const response = await fetch(link.href, { headers: { Authorization: `Bearer ${key()}` } });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const url = URL.createObjectURL(await response.blob());
      const save = el("a", { href: url, download: `${job.id}.mp4` });
      save.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (error) {
      say(`could not fetch the output of ${job.id}: ${error.message}`, true);
    }
  });
  return link;
}

function fillSelect(id, values) {
  const select = $(id);
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "any"), ...values.map((v) => el("option", {}, v)));
  select.value = values.includes(chosen) ? chosen : "";
}

function renderJobs() {
  const provider = $("job-provider").value;
  const team = $("job-team").value;
  const shown = state.jobs.filter((j) => (!provider || j.route?.provider === provider) && (!team || j.team === team));
  const rows = shown.map((j) => [
    j.id, j.team, el("span", { class: `status-${j.status}` }, j.status),
    j.route ? swatched(j.route.provider, `${j.route.provider}/${j.route.model}`) : "—",
    j.attempts.length, j.cost_usd, seconds(j),
    j.created_at.slice(0, 19).replace("T", " "), outputLink(j),
  ]);
  table("jobs", ["id", "team", "status", "route", "attempts", "cost_usd", "took_s", "created (UTC)", "output"],
    rows, { numeric: [4, 5, 6] });
  $("jobs-count").textContent = `${shown.length} of the ${state.jobs.length} newest`;
}

async function loadJobs() {
  const params = new URLSearchParams({ limit: "200" });
  if ($("job-status").value) params.set("status", $("job-status").value);
  const page = await api(`/v1/jobs?${params}`);
  state.jobs = page.jobs;
  fillSelect("job-provider", [...new Set(state.jobs.map((j) => j.route?.provider).filter(Boolean))].sort());
  fillSelect("job-team", [...new Set(state.jobs.map((j) => j.team))].sort());
  renderJobs();
}

// The same report as CSV, one row per day, provider, team and model, for a spreadsheet.
async function csvText() {
  const params = windowQuery();
  params.set("group_by", "day,provider,team,model");
  params.set("format", "csv");
  const response = await fetch(`/v1/reports/costs?${params}`, { headers: { Authorization: `Bearer ${key()}` } });
  if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
  return response.text();
}

async function downloadCsv() {
  try {
    const url = URL.createObjectURL(new Blob([await csvText()], { type: "text/csv" }));
    el("a", { href: url, download: "broker-costs.csv" }).click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    say(`could not export the report: ${error.message}`, true);
  }
}

const editor = { policies: [] };

function showPolicy() {
  const chosen = editor.policies.find((p) => p.team === $("policy-team").value);
  if (!chosen) return;
  $("policy-text").value = JSON.stringify(chosen.policy, null, 2);
  $("policy-version").textContent = `version ${chosen.version} (${chosen.source})`;
  $("policy-text").dataset.version = String(chosen.version);
}

async function savePolicy() {
  const team = $("policy-team").value;
  let body;
  try {
    body = JSON.parse($("policy-text").value);
  } catch (error) {
    $("policy-result").textContent = `not valid JSON: ${error.message}`;
    return;
  }
  try {
    const saved = await api(`/v1/policies/${encodeURIComponent(team)}`, {
      method: "PUT",
      headers: { "Content-Type": "application/json", "If-Match": `"${$("policy-text").dataset.version}"` },
      body: JSON.stringify(body),
    });
    $("policy-result").textContent = `saved as version ${saved.version}`;
    await load();
  } catch (error) {
    const hint = error.status === 409 ? " — someone changed it since; reload and edit again" : "";
    $("policy-result").textContent = `${error.message} (${error.status} ${error.code})${hint}`;
  }
}

function renderEditor(policies, admin) {
  $("policy-editor").hidden = !admin;
  if (!admin) return;
  editor.policies = policies;
  const select = $("policy-team");
  const chosen = select.value;
  select.replaceChildren(...policies.map((p) => el("option", {}, p.team)));
  if (policies.some((p) => p.team === chosen)) select.value = chosen;
  showPolicy();
}

async function load() {
  if (!key()) {
    say("Enter a team key (your team's figures) or the admin key (every team's).");
    return;
  }
  say("Loading…");
  try {
    const [byProvider, byTeam, byModel, daily, policies, providers] = await Promise.all([
      report("provider"), report("team"), report("provider,model"), report("day,provider"),
      api("/v1/policies"), api("/v1/providers"),
    ]);
    const admin = byProvider.team === null;
    setPalette(providers.providers.map((p) => p.provider));
    $("scope").textContent = admin ? "admin: every team" : `team ${byProvider.team}`;
    $("window-text").textContent = `${byProvider.from.slice(0, 16)} → ${byProvider.to.slice(0, 16)} UTC`;
    renderTotals(byProvider.totals);
    renderByProvider(byProvider);
    renderByTeam(byTeam);
    renderByModel(byModel);
    renderDaily(daily);
    renderBudgets(policies.policies);
    renderProviders(providers);
    renderQueues(providers);
    renderEditor(policies.policies, admin);
    await loadJobs();
    document.body.dataset.loaded = new Date().toISOString();
    say("");
  } catch (error) {
    const hint = error.status === 401 ? " — check the key" : "";
    say(`${error.message}${hint}`, true);
    document.body.dataset.failed = error.code || "error";
  }
}

function takeKeyFromFragment() {
  // A key may arrive as #key=… (bookmarklets, the browser test); it is moved out of the address bar.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has("key")) {
    sessionStorage.setItem(KEY_STORE, fragment.get("key"));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeKeyFromFragment();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("key").value.trim()) sessionStorage.setItem(KEY_STORE, $("key").value.trim());
    $("key").value = "";
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    location.reload();
  });
  $("reload").addEventListener("click", load);
  $("csv").addEventListener("click", downloadCsv);
  $("from").addEventListener("change", load);
  $("to").addEventListener("change", load);
  $("job-status").addEventListener("change", () => loadJobs().catch((e) => say(e.message, true)));
  $("job-provider").addEventListener("change", renderJobs);
  $("job-team").addEventListener("change", renderJobs);
  $("policy-team").addEventListener("change", showPolicy);
  $("policy-save").addEventListener("click", savePolicy);
  load();
});
