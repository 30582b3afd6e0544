// The usagemeter dashboard: reads the API with the signed-in user's token and draws what it returns.
// What a user sees is what the database's policies let their token see: the page filters nothing.

const TOKEN_KEY = "usagemeter.token";
const $ = (id) => document.getElementById(id);
let session = null; // the signed-in view ({token, claims, state}), once start() has one

function isoDate(date) {
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

function defaultRange() {
  const to = new Date();
  to.setDate(to.getDate() + 1);
  const from = new Date(to);
  from.setDate(from.getDate() - 30);
  return { from: isoDate(from), to: isoDate(to) };
}

// The view lives in the URL (scope, from, to, tz, group), so a link shares it. `tenant=ID` is read
// as `scope=ID`, as the API spells it.
function stateFromUrl() {
  const params = new URLSearchParams(location.search);
  const range = defaultRange();
  return {
    scope: params.get("scope") || params.get("tenant"),
    from: params.get("from") || range.from,
    to: params.get("to") || range.to,
    tz: params.get("tz") || Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    group: params.get("group") === "module" ? "module" : "action",
  };
}

function writeUrl(state) {
  const params = new URLSearchParams();
  for (const key of ["scope", "from", "to", "tz", "group"]) if (state[key]) params.set(key, state[key]);
  history.replaceState(null, "", `${location.pathname}?${params}`);
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

async function findToken() {
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice("#token=".length)));
    history.replaceState(null, "", location.pathname + location.search);
  }
  const stored = sessionStorage.getItem(TOKEN_KEY);
  if (stored) return stored;
  const demo = await fetch("/dashboard/demo-session");
  if (demo.ok) {
    const { token } = await demo.json();
    sessionStorage.setItem(TOKEN_KEY, token);
    return token;
  }
  return null;
}

class Unauthorized extends Error {}

async function api(token, path, query = {}) {
  const params = new URLSearchParams(Object.entries(query).filter(([, value]) => value !== undefined && value !== null));
  const answer = await fetch(`${path}?${params}`, { headers: { Authorization: `Bearer ${token}` } });
  if (answer.status === 401) throw new Unauthorized((await answer.json()).detail);
  if (!answer.ok) {
    let detail = `${answer.status} ${answer.statusText}`;
    try {
      detail = (await answer.json()).detail || detail;
    } catch {}
    throw new Error(detail);
  }
  return answer.json();
}

function showSignIn(message) {
  session = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message ? `Not signed in: ${message}` : "";
  $("sign-in-error").hidden = !message;
  document.body.dataset.loaded = "signed-out";
}

// An error hides the figures (they belong to the view before) and says what the API answered.
function showError(message) {
  $("dashboard").classList.add("failed");
  $("error").textContent = message;
  $("error").hidden = false;
  document.body.dataset.loaded = "error";
}

const integer = (n) => Number(n).toLocaleString("en-US");
const money = (amount, currency) => (currency ? `${Number(amount).toFixed(2)} ${currency}` : "—");

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  return td;
}

function fillRows(body, rows, testId, key) {
  if (!rows.length) {
    const td = cell("No usage in this range.");
    td.colSpan = 4;
    td.className = "empty";
    const tr = document.createElement("tr");
    tr.append(td);
    return body.replaceChildren(tr);
  }
  body.replaceChildren(
    ...rows.map((row) => {
      const tr = document.createElement("tr");
      tr.dataset.testid = testId;
      tr.dataset.key = row[key] ?? "";
      tr.dataset.events = row.events;
      tr.dataset.tokens = row.tokens_total;
      tr.dataset.cost = row.cost;
      tr.append(cell(row[key] ?? "(none)"), cell(integer(row.events), true), cell(integer(row.tokens_total), true),
                cell(money(row.cost, row.currency), true));
      return tr;
    }),
  );
}

function drawTotals(rows) {
  const sum = (field) => rows.reduce((total, row) => total + Number(row[field]), 0);
  const currency = rows.find((row) => row.currency)?.currency;
  // Without grouping the API answers one row (its cost an exact decimal string), or none.
  const cost = rows.length === 1 ? rows[0].cost : rows.length ? sum("cost").toFixed(6) : "0";
  const set = (id, value, text) => {
    $(id).dataset.value = value;
    $(id).textContent = text;
  };
  set("total-events", sum("events"), integer(sum("events")));
  set("total-tokens", sum("tokens_total"), integer(sum("tokens_total")));
  set("total-split", `${sum("tokens_input")}/${sum("tokens_output")}`,
      `${integer(sum("tokens_input"))} / ${integer(sum("tokens_output"))}`);
  set("total-cost", cost, money(cost, currency));
}

function drawChart(rows, group) {
  const key = group === "module" ? "module_id" : "action";
  const days = [...new Set(rows.map((row) => row.bucket.slice(0, 10)))].sort();
  const names = [...new Set(rows.map((row) => row[key]))].sort();
  const traces = names.map((name) => {
    const byDay = new Map(rows.filter((row) => row[key] === name).map((row) => [row.bucket.slice(0, 10), row.tokens_total]));
    return { type: "bar", name, x: days, y: days.map((day) => byDay.get(day) ?? 0) };
  });
  document.querySelector('[data-testid="chart-empty"]').hidden = rows.length > 0;
  $("chart").dataset.series = String(names.length);
  $("chart").dataset.days = String(days.length);
  $("chart").hidden = rows.length === 0; // no empty axes: the sentence says it
  if (!window.Plotly || !rows.length) return;
  window.Plotly.react($("chart"), traces, {
    barmode: "stack",
    margin: { t: 10, r: 10, b: 40, l: 60 },
    legend: { orientation: "h", y: -0.2 },
    yaxis: { title: { text: "tokens" } },
  }, { displayModeBar: false, responsive: true });
}

function drawBudgets(budgets) {
  const box = $("budgets");
  if (!budgets.length) {
    box.innerHTML = '<p class="empty">No budget in this scope.</p>';
    return;
  }
  box.replaceChildren(
    ...budgets.map((budget) => {
      const share = Number(budget.limit) > 0 ? Number(budget.used) / Number(budget.limit) : 0;
      const item = document.createElement("div");
      item.className = "budget";
      item.dataset.testid = "budget-row";
      item.dataset.used = budget.used;
      item.dataset.limit = budget.limit;
      const unit = budget.metric === "cost" ? ` ${budget.currency}` : ` ${budget.metric}`;
      const meta = document.createElement("div");
      meta.className = "meta";
      const label = document.createElement("span");
      label.textContent = `${budget.mode} ${budget.metric} per ${budget.window}${budget.action_pattern ? ` (${budget.action_pattern})` : ""}`;
      const amount = document.createElement("span");
      const shown = (value) => (budget.metric === "cost" ? Number(value).toFixed(2) : integer(value));
      amount.textContent = `${shown(budget.used)} of ${shown(budget.limit)}${unit} (${Math.round(share * 100)}%)`;
      meta.append(label, amount);
      const bar = document.createElement("div");
      bar.className = `bar${share >= 1 ? " over" : share >= 0.8 ? " warn" : ""}`;
      const fill = document.createElement("span");
      fill.style.width = `${Math.min(100, share * 100)}%`;
      bar.append(fill);
      item.append(meta, bar);
      return item;
    }),
  );
}

let rendering = 0; // the latest render: an answer to an earlier view arriving late is dropped

async function render(token, claims, state) {
  const mine = ++rendering;
  writeUrl(state);
  $("error").hidden = true;
  const personal = state.scope === "personal";
  if (personal && !claims.sub) return showError("This token names no user (no `sub`), so it has no Personal usage: pick a tenant.");
  const scope = personal ? { user: claims.sub } : { tenant: state.scope };
  const range = { from: state.from, to: state.to, tz: state.tz };
  const quotaScope = personal ? { user: claims.sub } : { tenant: state.scope };
  try {
    const [totals, series, actions, users, budgets] = await Promise.all([
      api(token, "/v1/usage", { ...scope, ...range }),
      api(token, "/v1/usage", { ...scope, ...range, by: state.group, bucket: "day" }),
      api(token, "/v1/usage", { ...scope, ...range, by: "action", top: 10 }),
      personal ? Promise.resolve([]) : api(token, "/v1/usage", { ...scope, ...range, by: "user", top: 50 }),
      api(token, "/v1/quotas", quotaScope),
    ]);
    if (mine !== rendering) return;
    $("dashboard").classList.remove("failed");
    drawTotals(totals);
    drawChart(series, state.group);
    fillRows($("actions"), [...actions].sort((a, b) => b.tokens_total - a.tokens_total), "action-row", "action");
    $("users-section").hidden = personal;
    fillRows($("users"), [...users].sort((a, b) => b.tokens_total - a.tokens_total), "user-row", "user_id");
    drawBudgets(budgets);
    document.body.dataset.loaded = `${state.scope}|${state.from}|${state.to}|${state.tz}|${state.group}`;
  } catch (failure) {
    if (mine !== rendering) return;
    if (failure instanceof Unauthorized) return showSignIn(failure.message);
    showError(failure.message);
  }
}

function showDashboard(claims) {
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = claims.email || claims.sub || claims.role || "";
  $("who").dataset.userId = claims.sub || "";
}

async function start() {
  const token = await findToken();
  if (!token) return showSignIn();
  const claims = claimsOf(token);
  const state = stateFromUrl();
  let tenants;
  try {
    tenants = await api(token, "/v1/tenants");
  } catch (failure) {
    if (failure instanceof Unauthorized) return showSignIn(failure.message);
    showDashboard(claims);
    return showError(`Cannot list your tenants: ${failure.message}`);
  }
  showDashboard(claims);

  const picker = $("scope");
  const options = tenants.map((tenant) => [tenant.id, tenant.name]);
  if (claims.sub) options.push(["personal", "Personal"]);
  if (!state.scope) state.scope = options.length ? options[0][0] : "personal";
  if (!options.some(([value]) => value === state.scope)) options.push([state.scope, state.scope === "personal" ? "Personal" : `${state.scope} (not a member)`]);
  picker.replaceChildren(...options.map(([value, label]) => new Option(label, value, false, value === state.scope)));

  $("from").value = state.from;
  $("to").value = state.to;
  $("tz").value = state.tz;
  $("group").value = state.group;
  session = { token, claims, state };
  await render(token, claims, state);
}

for (const field of ["scope", "from", "to", "tz", "group"]) {
  $(field).addEventListener("change", () => {
    if (!session) return;
    session.state[field] = $(field).value;
    render(session.token, session.claims, session.state);
  });
}

$("sign-in-form").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
  $("token-input").value = "";
  start();
});
$("sign-out").addEventListener("click", () => showSignIn());
window.addEventListener("hashchange", () => {
  if (location.hash.startsWith("#token=")) start();
});
start();
