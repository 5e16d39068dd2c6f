// The demo page served by the hub at `/`: presence, a message feed, the pattern library
// and (for admins) the month's usage, the activity log and the webhooks of one team, on teamhub.js. No framework: each
// panel has a render function fed by the client's events.
import { TeamhubClient, decodeJwt } from "/teamhub.js";

const $ = (id) => document.getElementById(id);
const el = (tag, { dataset, ...props } = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  if (dataset) Object.assign(node.dataset, dataset);
  for (const c of children) node.append(c);
  return node;
};

const params = new URLSearchParams(location.search);
const state = { client: null, team: null, role: null, names: new Map(), patterns: new Map(), patternVersion: 0, activityCursor: null, webhook: null };
// Marks this page load, so tests can tell a reconnect from a reload.
window.teamhubPageId = Math.random().toString(36).slice(2);

$("token").value = params.get("token") || sessionStorage.getItem("teamhub.token") || "";
// One status per user, whatever the tab: the hub shows the meta of a user's most recent
// join, so the chosen status is kept in localStorage (shared by the origin's tabs),
// keyed by user (two people may share a browser, as in the README's tour), and every
// tab sends it on every join; a second tab starts with it.
const statusKey = () => `teamhub.status.${decodeJwt($("token").value.trim())?.sub ?? "apikey"}`;
const myMeta = () => ({ status: $("mystatus").value });
$("mystatus").value = params.get("status") || "available";
if (params.get("status")) localStorage.setItem(statusKey(), $("mystatus").value);
fillTeams();
$("team").value = params.get("team") || $("teams").options[0]?.value || "";
$("token").addEventListener("input", fillTeams);

function fillTeams() {
  const teams = decodeJwt($("token").value.trim())?.teams || {};
  $("teams").replaceChildren(...Object.entries(teams).map(([t, role]) => el("option", { value: t, label: `${t} (${role})` })));
}

async function api(path, init = {}) {
  const headers = { Authorization: `Bearer ${$("token").value.trim()}`, ...(init.headers || {}) };
  return fetch(`/api/v1/teams/${encodeURIComponent(state.team)}${path}`, { ...init, headers });
}

// ---- connection -------------------------------------------------------------------

$("signin").addEventListener("submit", (e) => { e.preventDefault(); start(); });
if ($("token").value && $("team").value) start();

function start() {
  const token = $("token").value.trim();
  const team = $("team").value.trim();
  if (!token || !team) return;
  sessionStorage.setItem("teamhub.token", token);
  $("mystatus").value = localStorage.getItem(statusKey()) || $("mystatus").value;
  state.client?.close();
  const claims = decodeJwt(token);
  state.team = team;
  state.role = claims?.teams?.[team] ?? null;
  state.patterns.clear();
  state.patternVersion = 0;
  $("feed").replaceChildren();
  $("whoami").textContent = claims ? `as ${claims.name || claims.sub}${state.role ? ` · ${state.role}` : ""}` : "";
  // An API key carries no readable role: show the log if the node lets it read it.
  state.maybeAdmin = !claims;
  $("activity").hidden = !["admin", "owner"].includes(state.role);
  $("usage").hidden = $("activity").hidden;
  $("webhooks").hidden = $("activity").hidden;
  state.webhook = null;
  history.replaceState(null, "", `?team=${encodeURIComponent(team)}`);

  const client = new TeamhubClient({ url: location.origin, token, backoff: { baseMs: 200, capMs: 5000 } });
  state.client = client;
  client.on("status", ({ state: s }) => setStatus(s));
  client.on("presence", ({ team: t, presence }) => t === state.team && renderPresence(presence));
  client.on("message", onMessage);
  client.on("joined", onJoined);
  client.on("kicked", ({ team: t, reason }) => system(`You left ${t}: ${reason}.`));
  client.on("close", ({ code, delayMs }) => {
    if (delayMs === null) system(stopMessage(code));
  });
  client.on("error", (e) => console.warn("teamhub:", e));
  client.connect().then(
    () => client.join(team, { meta: myMeta }),
  ).catch((e) => { if (client.state !== "stopped") system(`Could not join ${team}: ${e.message}`); });
}

// Why the client stopped, in words a newcomer can act on.
function stopMessage(code) {
  if (code === 403) {
    return `The node does not allow pages from ${location.origin} to connect. Open this page from an origin on the node's --allowed-origins (its log lists them), or add this one.`;
  }
  if (code === 401) return "The node refused this token; paste a new one.";
  return `Disconnected (${code}); not reconnecting.`;
}

function setStatus(s) {
  const label = { open: "online", connecting: "connecting…", reconnecting: "reconnecting…", stopped: "offline" }[s];
  $("status").dataset.state = s;
  $("status").textContent = label;
  const live = s === "open";
  $("text").disabled = !live;
  $("send").disabled = !live;
}

async function onJoined({ team, reply, recovered, rejoin }) {
  if (team !== state.team) return;
  if (!rejoin) {
    await loadHistory(reply.offset);
  } else if (!recovered) {
    await loadHistory(reply.offset);
    system("Reconnected; what was missed could not be recovered, so the latest messages were reloaded.");
  } else {
    system(`Reconnected${reply.missed.length ? `, ${reply.missed.length} missed message(s) recovered` : ""}.`);
  }
  // The pattern feed is a change log, so catching up is always one incremental fetch.
  loadPatterns();
  if (!rejoin && state.maybeAdmin) {
    const probe = await api("/activity?limit=1").catch(() => null);
    $("activity").hidden = probe?.status !== 200;
    $("usage").hidden = $("activity").hidden;
    $("webhooks").hidden = $("activity").hidden;
  }
  if (!$("activity").hidden && !rejoin) loadActivity();
  if (!$("usage").hidden && !rejoin) loadUsage();
  if (!$("webhooks").hidden && !rejoin) loadWebhooks();
}

$("mystatus").addEventListener("change", () => {
  localStorage.setItem(statusKey(), $("mystatus").value);
  announceStatus();
});

// Another tab chose a status: take it, and announce it from this connection too, so
// the user's entry keeps it when that tab closes.
addEventListener("storage", (e) => {
  if (e.key !== statusKey() || !e.newValue || e.newValue === $("mystatus").value) return;
  $("mystatus").value = e.newValue;
  announceStatus();
});

async function announceStatus() {
  const c = state.client;
  // Not connected: the rejoin after the reconnect sends the status (`meta` is a function).
  if (!c || c.state !== "open") return;
  // A join is idempotent and keeps the first meta; leave and join again to change it.
  await c.leave(state.team);
  await c.join(state.team, { meta: myMeta });
}

// ---- presence ---------------------------------------------------------------------

// Diffs announce users arriving and leaving, not a user's connection count changing
// (a second window of someone already here): refresh the snapshot now and then.
setInterval(() => {
  if (state.client?.state === "open") state.client.refreshPresence(state.team).catch(() => {});
}, 20000);

function renderPresence(presence) {
  const items = presence.entries().map((p) => {
    state.names.set(p.user, p.name || p.user);
    const status = typeof p.meta?.status === "string" ? p.meta.status : "available";
    return el("li", { dataset: { user: p.user } },
      el("span", { className: "dot", title: status, dataset: { status } }),
      el("span", { className: "name", textContent: p.name || p.user, title: p.user }),
      el("span", { className: "status muted", textContent: status }),
      el("span", { className: "conns", textContent: `×${p.conns}`, title: `${p.conns} connection(s)` }));
  });
  $("presence").replaceChildren(...items);
  $("online-count").textContent = String(items.length);
}

// ---- feed -------------------------------------------------------------------------

async function loadHistory(offset) {
  const res = await api(`/history?since=${Math.max(0, offset - 50)}&limit=50`).catch(() => null);
  $("feed").replaceChildren();
  if (!res?.ok) return;
  const body = await res.json();
  for (const m of body.messages) showMessage(m);
}

function onMessage(m) {
  if (m.team !== state.team) return;
  showMessage(m);
  if ((m.type === "pattern.updated" || m.type === "pattern.deleted") && (m.data?.version ?? Infinity) > state.patternVersion) {
    loadPatterns();
  }
}

function showMessage(m) {
  const who = state.names.get(m.user) || m.user;
  const ts = el("span", { className: "ts", textContent: new Date(m.ts).toLocaleTimeString() });
  let item;
  if ((m.type === "pattern.updated" || m.type === "pattern.deleted") && typeof m.data?.name === "string") {
    const verb = m.type === "pattern.updated" ? "updated" : "deleted";
    item = el("li", { className: "system", dataset: { offset: m.offset } }, ts, `${who} ${verb} pattern ${m.data.name} (v${m.data.version})`);
  } else if (m.type === "chat.message" && typeof m.data?.text === "string") {
    item = el("li", { className: "chat", dataset: { offset: m.offset } }, ts, el("span", { className: "who", textContent: who }), m.data.text);
  } else {
    item = el("li", { className: "other", dataset: { offset: m.offset } }, ts,
      el("span", { className: "who", textContent: who }), `${m.type} ${JSON.stringify(m.data)}`);
  }
  appendFeed(item);
}

function system(text) {
  appendFeed(el("li", { className: "system", textContent: text }));
}

function appendFeed(item) {
  const feed = $("feed");
  const atBottom = feed.scrollHeight - feed.scrollTop - feed.clientHeight < 40;
  feed.append(item);
  while (feed.children.length > 500) feed.firstChild.remove();
  if (atBottom) feed.scrollTop = feed.scrollHeight;
}

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.client) return;
  try {
    // echo: our own message comes back in offset order with everyone else's.
    await state.client.publish(state.team, "chat.message", { text }, { echo: true });
    $("text").value = "";
  } catch (err) {
    system(`Not sent: ${err.message}`);
  }
});

// ---- pattern library --------------------------------------------------------------

let patternLoad = Promise.resolve();
function loadPatterns() {
  // One fetch at a time, each from the version the previous one reached.
  patternLoad = patternLoad.then(fetchPatterns, fetchPatterns);
  return patternLoad;
}

async function fetchPatterns() {
  const team = state.team;
  const res = await api(`/patterns?since_version=${state.patternVersion}`).catch(() => null);
  if (team !== state.team) return;
  if (!res?.ok) {
    $("patterns-note").textContent = res ? `Patterns unavailable (HTTP ${res.status}).` : "Patterns unavailable.";
    return;
  }
  const body = await res.json();
  const fresh = new Set();
  for (const p of body.patterns) {
    if (p.deleted) state.patterns.delete(p.name);
    else { state.patterns.set(p.name, p); fresh.add(p.name); }
  }
  state.patternVersion = Math.max(state.patternVersion, body.version);
  renderPatterns(fresh);
}

function renderPatterns(fresh) {
  const list = [...state.patterns.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("patterns").replaceChildren(...list.map((p) => el("li", { className: fresh.has(p.name) ? "fresh" : "", dataset: { name: p.name, version: p.version } },
    el("div", { className: "pname", textContent: p.name }),
    el("div", { className: "meta", textContent: `v${p.version} · ${p.updated_by} · ${new Date(p.updated_at).toLocaleString()}` }),
    el("pre", { textContent: typeof p.content === "string" ? p.content : JSON.stringify(p.content, null, 2) }))));
  $("pattern-version").textContent = `v${state.patternVersion}`;
  $("patterns-note").textContent = list.length ? "" : "No patterns yet.";
}

// ---- activity log (admins) --------------------------------------------------------

function activityQuery(format) {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("activity-filters"))) {
    if (!v) continue;
    q.set(k, k === "since" || k === "until" ? new Date(v).toISOString() : v);
  }
  q.set("format", format);
  return q;
}

async function loadActivity(more = false) {
  const q = activityQuery("json");
  q.set("limit", "50");
  if (more && state.activityCursor) q.set("cursor", state.activityCursor);
  const res = await api(`/activity?${q}`).catch(() => null);
  if (!res?.ok) {
    const detail = res ? (await res.json().catch(() => null))?.error?.message || `HTTP ${res.status}` : "network error";
    $("activity-note").textContent = `Activity log unavailable: ${detail}.`;
    return;
  }
  const body = await res.json();
  const rows = body.items.map((r) => el("tr", { dataset: { id: r.id } },
    el("td", { textContent: new Date(r.created_at).toLocaleString() }),
    el("td", { textContent: r.user }),
    el("td", { textContent: r.action }),
    el("td", { textContent: [r.resource_type, r.resource_id].filter(Boolean).join(" ") }),
    el("td", { className: "meta", textContent: r.metadata == null ? "" : JSON.stringify(r.metadata) })));
  if (more) $("activity-rows").append(...rows);
  else $("activity-rows").replaceChildren(...rows);
  state.activityCursor = body.next_cursor;
  $("activity-more").hidden = !body.next_cursor;
  $("activity-note").textContent = $("activity-rows").children.length ? "" : "No matching activity.";
}

$("activity-filters").addEventListener("submit", (e) => { e.preventDefault(); loadActivity(); });
$("activity-more").addEventListener("click", () => loadActivity(true));
$("export").addEventListener("click", async () => {
  const res = await api(`/activity?${activityQuery("csv")}`).catch(() => null);
  if (!res?.ok) { $("activity-note").textContent = `Export failed${res ? ` (HTTP ${res.status})` : ""}.`; return; }
  const url = URL.createObjectURL(await res.blob());
  const a = el("a", { href: url, download: `activity-${state.team}.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
});

// ---- usage this month (admins) ----------------------------------------------------

async function loadUsage() {
  const res = await api("/usage").catch(() => null);
  if (!res?.ok) {
    $("usage-note").textContent = `Usage unavailable${res ? ` (HTTP ${res.status})` : ""}.`;
    return;
  }
  const body = await res.json();
  const quota = body.quota.messages_per_day;
  $("usage-plan").textContent = `plan ${body.plan}${quota ? ` · ${quota} messages/day` : ""}${
    body.quota.max_connections ? ` · ${body.quota.max_connections} connections` : ""}`;
  // Every day of the current UTC month, days without use as empty bars.
  const now = new Date();
  const last = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 0)).getUTCDate();
  const byDate = new Map(body.days.map((d) => [d.date, d]));
  const month = now.toISOString().slice(0, 7);
  const days = Array.from({ length: last }, (_, i) => {
    const date = `${month}-${String(i + 1).padStart(2, "0")}`;
    return byDate.get(date) ?? { date, messages: 0, api_calls: 0, peak_connections: 0, webhook_deliveries: 0 };
  });
  const top = Math.max(1, quota ?? 0, ...days.map((d) => d.messages));
  $("usage-chart").replaceChildren(...days.map((d) => el("div", {
    className: "bar",
    title: `${d.date}: ${d.messages} messages, ${d.api_calls} API calls, peak ${d.peak_connections} connections, ${d.webhook_deliveries} webhook deliveries`,
    style: `height: ${(100 * d.messages) / top}%`,
    dataset: { date: d.date, ...(d.messages ? {} : { empty: "" }) },
  })));
  const sum = (k) => body.days.reduce((n, d) => n + d[k], 0);
  $("usage-totals").textContent = `${sum("messages")} messages, ${sum("api_calls")} API calls, peak ${
    Math.max(0, ...body.days.map((d) => d.peak_connections))} connections this month`;
  $("usage-note").textContent = body.days.length ? "" : "No use yet this month.";
}

// ---- webhooks (admins) ------------------------------------------------------------

const when = (t) => (t ? new Date(t).toLocaleString() : "");

async function loadWebhooks() {
  const res = await api("/webhooks").catch(() => null);
  if (!res?.ok) {
    $("webhooks-note").textContent = `Webhooks unavailable${res ? ` (HTTP ${res.status})` : ""}.`;
    return;
  }
  const { webhooks } = await res.json();
  $("webhook-count").textContent = webhooks.length;
  $("webhooks-note").textContent = webhooks.length ? "Select an endpoint to see its deliveries." : "No webhook endpoints.";
  $("webhook-rows").replaceChildren(...webhooks.map((w) => {
    const row = el("tr", { dataset: { id: w.id }, className: w.id === state.webhook ? "selected" : "" },
      el("td", { textContent: w.url, title: w.description || w.id }),
      el("td", { textContent: w.events.join(" ") }),
      el("td", { textContent: w.enabled ? "enabled" : "disabled" }),
      el("td", { textContent: when(w.created_at) }));
    row.addEventListener("click", () => { state.webhook = w.id; loadWebhooks(); });
    return row;
  }));
  if (!webhooks.some((w) => w.id === state.webhook)) state.webhook = webhooks[0]?.id ?? null;
  for (const row of $("webhook-rows").children) row.classList.toggle("selected", row.dataset.id === state.webhook);
  await loadDeliveries();
}

async function loadDeliveries() {
  $("deliveries-of").textContent = state.webhook || "";
  if (!state.webhook) { $("delivery-rows").replaceChildren(); return; }
  const res = await api(`/webhooks/${encodeURIComponent(state.webhook)}/deliveries?limit=20`).catch(() => null);
  if (!res?.ok) return;
  const { deliveries } = await res.json();
  $("delivery-rows").replaceChildren(...deliveries.map((d) => {
    const retry = el("button", { type: "button", textContent: "Retry", hidden: d.status !== "failed" });
    retry.addEventListener("click", async () => {
      await api(`/webhooks/${encodeURIComponent(state.webhook)}/deliveries/${encodeURIComponent(d.id)}/retry`, { method: "POST" }).catch(() => null);
      loadDeliveries();
    });
    return el("tr", { dataset: { id: d.id, status: d.status } },
      el("td", { className: "meta", textContent: d.id }),
      el("td", { textContent: d.type }),
      el("td", { textContent: d.status }),
      el("td", { textContent: d.attempts }),
      el("td", { textContent: d.last_status_code ?? "" }),
      el("td", { textContent: d.status === "pending" ? when(d.next_attempt_at) : "" }),
      el("td", {}, retry));
  }));
}

$("webhooks-refresh").addEventListener("click", () => loadWebhooks());
