// teamhub browser client: a plain ES module, no build step. Types: teamhub.d.ts.
//
// It speaks the teamhub wire contract (docs/protocol.md): one WebSocket to /ws with the
// token in `?token=` (browsers cannot set headers) and subprotocol `teamhub.v1`,
// requests matched to replies by `id`, a live presence map per team, and reconnects
// that rejoin every team with `since` so nothing still in history is lost.
//
// The pure parts (backoff, close-code advice, presence map, positions) are exported on
// their own so they can be tested without a browser (clients/browser/test/).

export const SUBPROTOCOL = "teamhub.v1";

/** What the contract says to do after each close code. */
export function closeAdvice(code) {
  switch (code) {
    case 1012: return "now"; // node draining: reconnect at once, recover with since
    case 4001: return "refresh"; // token expired: get a new one, then reconnect
    case 1002: // a frame of ours broke RFC 6455
    case 1007: // a text frame of ours was not valid UTF-8
    case 1008: // not a team member (seed endpoint)
    case 1009: // a frame of ours was too large: sending it again fails again
    case 4008: // sustained rate-limit violations
      return "stop";
    default: return "backoff"; // 1013 (too slow), 1006 (network), 1011, 1000, 1001...
  }
}

/**
 * Exponential backoff with full jitter: a wait drawn uniformly from
 * [0, min(capMs, baseMs * 2^attempt)]. The jitter keeps the clients of a restarted node
 * from all coming back in the same instant.
 */
export function backoffDelay(attempt, { baseMs = 250, capMs = 30000, random = Math.random } = {}) {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * (ceiling + 1));
}

/** The payload of a JWT, or null (API keys and malformed tokens). Not verified. */
export function decodeJwt(token) {
  if (typeof token !== "string" || token.startsWith("thk_")) return null;
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

/**
 * Who is in one team: the join reply's `presence`, then every `presence_diff`.
 * Entries are `{user, name, conns, meta}` as on the wire.
 */
export class PresenceMap {
  constructor(team) {
    this.team = team;
    this._entries = new Map();
    this._listeners = new Set();
  }

  /** Replaces everything with a snapshot (a join or presence reply). */
  reset(entries) {
    const before = this._entries;
    this._entries = new Map(entries.map((e) => [e.user, e]));
    const joins = entries.filter((e) => !before.has(e.user));
    const leaves = [...before.values()].filter((e) => !this._entries.has(e.user));
    this._emit({ joins, leaves, reset: true });
  }

  /** Applies a `presence_diff`: leaves first, then joins (a join replaces the entry). */
  apply(diff) {
    for (const e of diff.leaves || []) this._entries.delete(e.user);
    for (const e of diff.joins || []) this._entries.set(e.user, e);
    this._emit({ joins: diff.joins || [], leaves: diff.leaves || [], reset: false });
  }

  get(user) { return this._entries.get(user); }
  has(user) { return this._entries.has(user); }
  get size() { return this._entries.size; }
  /** Entries sorted by user id. */
  entries() { return [...this._entries.values()].sort((a, b) => (a.user < b.user ? -1 : a.user > b.user ? 1 : 0)); }

  /** Calls `fn(map, change)` after every change; returns the unsubscribe function. */
  onChange(fn) {
    this._listeners.add(fn);
    return () => this._listeners.delete(fn);
  }

  _emit(change) {
    for (const fn of this._listeners) fn(this, change);
  }
}

/**
 * The last position seen per team, for `since` on the next join: set from each join
 * reply (its offset, or the last missed message), advanced by every message.
 */
export class Positions {
  constructor() { this._since = new Map(); }

  /** Records a join reply (its offset, or its last missed message). */
  joined(reply) {
    let offset = reply.offset;
    for (const m of reply.missed || []) offset = Math.max(offset, m.offset);
    this._since.set(reply.team, { epoch: reply.epoch, offset });
  }

  /**
   * Records a message. Returns "new", "duplicate" (offset already seen: drop it) or
   * "gap" (offsets were skipped; it is recorded all the same), or "unknown" for a team
   * that is not tracked.
   */
  message(m) {
    const since = this._since.get(m.team);
    if (!since) return "unknown";
    if (m.offset <= since.offset) return "duplicate";
    const verdict = m.offset === since.offset + 1 ? "new" : "gap";
    since.offset = m.offset;
    return verdict;
  }

  since(team) {
    const s = this._since.get(team);
    return s ? { epoch: s.epoch, offset: s.offset } : undefined;
  }

  forget(team) { this._since.delete(team); }
}

/** An `error` frame answering a request, or a request that could not be sent. */
export class TeamhubError extends Error {
  constructor(code, message, id = null) {
    super(`${code}: ${message}`);
    this.name = "TeamhubError";
    this.code = code;
    this.id = id;
  }
}

/** Turns a page or node URL into the socket URL (`ws(s)://host/ws?token=...`). */
export function socketUrl(base, token) {
  const u = new URL(base);
  if (u.protocol === "http:") u.protocol = "ws:";
  if (u.protocol === "https:") u.protocol = "wss:";
  const path = u.pathname.replace(/\/+$/, "");
  u.pathname = path.endsWith("/ws") ? path : `${path}/ws`;
  u.search = "";
  u.searchParams.set("token", token);
  return u.toString();
}

/**
 * A connection to a teamhub node that stays connected.
 *
 * Events (`client.on(name, fn)`, returns an unsubscribe function):
 * - `status`   `{state}`: "connecting" | "open" | "reconnecting" | "stopped"
 * - `joined`   `{team, reply, recovered, rejoin}`: a join reply; after a reconnect
 *               (`rejoin: true`) with `recovered: false` the app must reload its
 *               state for that team (messages may have been lost)
 * - `message`  a `message` frame (missed ones after a recovered rejoin too, in order)
 * - `presence` `{team, presence, joins, leaves, reset}`
 * - `kicked`   `{team, reason}`
 * - `error`    a `TeamhubError` that answers no request, or a refresh failure
 * - `close`    `{code, reason, advice, delayMs}` (`delayMs` null when stopping; when
 *               the socket never opened, code 403 if the node refuses this page's
 *               origin and 401 if it refuses the token, both found out over HTTP)
 * - `token`    `{exp}` after a successful refresh
 */
export class TeamhubClient {
  constructor(options = {}) {
    this.url = options.url ?? (typeof location !== "undefined" ? location.origin : undefined);
    if (!this.url) throw new Error("teamhub: options.url is required outside a page");
    this.token = options.token;
    this.refreshToken = options.refreshToken ?? null;
    this.refreshMarginMs = options.refreshMarginMs ?? 60000;
    this.backoff = { baseMs: 250, capMs: 30000, ...(options.backoff || {}) };
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10000;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    // The Origin a browser's handshake carries (null outside a page: no Origin is sent).
    this._pageOrigin = options.pageOrigin ?? (typeof location !== "undefined" ? location.origin : null);
    this._listeners = new Map();
    this._pending = new Map();
    this._nextId = 1;
    this._teams = new Map(); // team -> {meta, presence: PresenceMap}
    this.positions = new Positions();
    this._ws = null;
    this._attempt = 0;
    this._timer = null;
    this._refreshTimer = null;
    this._stopped = true;
    this.state = "stopped";
  }

  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event)?.delete(fn);
  }

  _emit(event, value) {
    for (const fn of this._listeners.get(event) || []) {
      try { fn(value); } catch (e) { console.error("teamhub listener failed", e); }
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("status", { state });
  }

  /** Opens the socket (and keeps it open until `close()`). Resolves once it is open. */
  connect() {
    this._stopped = false;
    const opened = new Promise((resolve, reject) => {
      const offOpen = this.on("status", ({ state }) => {
        if (state === "open") { offOpen(); offStop(); resolve(); }
      });
      const offStop = this.on("close", ({ delayMs, code, reason }) => {
        if (delayMs === null) { offOpen(); offStop(); reject(new TeamhubError("closed", `${code} ${reason}`)); }
      });
    });
    this._open();
    return opened;
  }

  /** Closes for good: no reconnect. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    clearTimeout(this._refreshTimer);
    if (this._ws) this._ws.close(1000, "client closed");
    this._failPending(new TeamhubError("closed", "client closed"));
    this._setState("stopped");
  }

  /** The live presence map of a team (empty until joined). */
  presence(team) {
    if (!this._teams.has(team)) this._teams.set(team, { meta: undefined, presence: new PresenceMap(team), joined: false });
    return this._teams.get(team).presence;
  }

  /**
   * Joins `team` (again after every reconnect, with `since`). `meta` is shown in
   * presence: an object, or a function returning one, called at every join and rejoin
   * (so a status changed while disconnected is the one sent on reconnect).
   */
  async join(team, { meta } = {}) {
    const t = this._teams.get(team) || { presence: new PresenceMap(team) };
    t.meta = meta;
    t.joined = true;
    this._teams.set(team, t);
    return this._join(team, false);
  }

  async _join(team, rejoin) {
    const t = this._teams.get(team);
    const frame = { op: "join", team };
    const since = this.positions.since(team);
    if (since) frame.since = since;
    const meta = typeof t.meta === "function" ? t.meta() : t.meta;
    if (meta !== undefined && meta !== null) frame.meta = meta;
    const reply = await this.request(frame);
    this._onJoinReply(reply, rejoin);
    return reply;
  }

  _onJoinReply(reply, rejoin) {
    const t = this._teams.get(reply.team);
    if (!t) return;
    // Recovered: start from where we were, so each missed message is delivered once
    // (and none we already had); otherwise from the team's current offset.
    const prev = this.positions.since(reply.team);
    const from = reply.recovered && prev && prev.epoch === reply.epoch ? prev.offset : reply.offset;
    this.positions.joined({ team: reply.team, epoch: reply.epoch, offset: from });
    t.presence.reset(reply.presence);
    this._emit("presence", { team: reply.team, presence: t.presence, joins: reply.presence, leaves: [], reset: true });
    this._emit("joined", { team: reply.team, reply, recovered: reply.recovered, rejoin });
    for (const m of reply.missed || []) this._onMessage(m);
    const now = this.positions.since(reply.team);
    if (now) this.positions.joined({ team: reply.team, epoch: reply.epoch, offset: Math.max(now.offset, reply.offset) });
  }

  /**
   * Asks for a fresh presence snapshot (`presence` op) and resets the map with it.
   * Diffs only announce users joining and leaving; a change in a present user's
   * connection count shows up here (or in the next join reply).
   */
  async refreshPresence(team) {
    const reply = await this.request({ op: "presence", team });
    const t = this._teams.get(team);
    if (t) {
      t.presence.reset(reply.presence);
      this._emit("presence", { team, presence: t.presence, joins: [], leaves: [], reset: true });
    }
    return t ? t.presence : new PresenceMap(team);
  }

  async leave(team) {
    const t = this._teams.get(team);
    if (t) t.joined = false;
    this.positions.forget(team);
    await this.request({ op: "leave", team });
  }

  /** Publishes a message; resolves with its offset. */
  async publish(team, type, data, { echo = false } = {}) {
    const reply = await this.request({ op: "publish", team, type, data, echo });
    return reply.offset;
  }

  /** Replaces the connection's token (`refresh` op); resolves with the new `exp`. */
  async refresh(token) {
    const reply = await this.request({ op: "refresh", token });
    this.token = token;
    this._scheduleRefresh();
    this._emit("token", { exp: reply.exp });
    return reply.exp;
  }

  /** Sends a frame with a fresh `id`; resolves with its reply, rejects with its error. */
  request(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(new TeamhubError("unavailable", "not connected"));
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new TeamhubError("timeout", `no answer to ${frame.op} within ${this.requestTimeoutMs} ms`, id));
      }, this.requestTimeoutMs);
      this._pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  _failPending(error) {
    for (const [id, p] of this._pending) {
      clearTimeout(p.timer);
      p.reject(error);
      this._pending.delete(id);
    }
  }

  _currentToken() {
    return typeof this.token === "function" ? this.token() : this.token;
  }

  async _open() {
    if (this._stopped) return;
    this._setState(this._attempt === 0 && this.state !== "reconnecting" ? "connecting" : "reconnecting");
    // A token that expires before we could use it is refreshed first.
    const claims = decodeJwt(this._currentToken());
    if (claims?.exp && claims.exp * 1000 <= Date.now() + 1000 && this.refreshToken) {
      try { this.token = await this.refreshToken(this._currentToken()); } catch (e) { this._emit("error", e); }
    }
    let ws;
    try {
      ws = new this._WebSocket(socketUrl(this.url, this._currentToken()), SUBPROTOCOL);
    } catch (e) {
      this._emit("error", e);
      this._scheduleReconnect(1006, String(e), "backoff");
      return;
    }
    this._ws = ws;
    ws.onopen = () => { ws.teamhubOpened = true; this._onOpen(ws); };
    ws.onmessage = (e) => this._onFrame(e.data);
    ws.onclose = (e) => this._onClose(ws, e.code, e.reason);
  }

  async _onOpen(ws) {
    if (ws !== this._ws) return;
    this._setState("open");
    this._scheduleRefresh();
    const teams = [...this._teams.entries()].filter(([, t]) => t.joined).map(([team]) => team);
    const results = await Promise.allSettled(teams.map((team) => this._join(team, true)));
    for (const r of results) if (r.status === "rejected") this._emit("error", r.reason);
    // The connection works: the next failure starts from the base delay again.
    if (ws === this._ws) this._attempt = 0;
  }

  _onFrame(text) {
    let f;
    try { f = JSON.parse(text); } catch { return; }
    switch (f.op) {
      case "reply":
      case "pong": {
        const p = this._pending.get(f.id);
        if (p) { this._pending.delete(f.id); clearTimeout(p.timer); p.resolve(f); }
        break;
      }
      case "error": {
        const err = new TeamhubError(f.code, f.message, f.id);
        const p = f.id != null ? this._pending.get(f.id) : undefined;
        if (p) { this._pending.delete(f.id); clearTimeout(p.timer); p.reject(err); }
        else this._emit("error", err);
        break;
      }
      case "message": this._onMessage(f); break;
      case "presence_diff": {
        const t = this._teams.get(f.team);
        if (!t) break;
        t.presence.apply(f);
        this._emit("presence", { team: f.team, presence: t.presence, joins: f.joins, leaves: f.leaves, reset: false });
        break;
      }
      case "kicked": {
        const t = this._teams.get(f.team);
        if (t) {
          t.joined = false;
          t.presence.reset([]);
        }
        this.positions.forget(f.team);
        this._emit("kicked", { team: f.team, reason: f.reason });
        break;
      }
      default: break;
    }
  }

  _onMessage(m) {
    if (this.positions.message(m) === "duplicate") return;
    this._emit("message", m);
  }

  async _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearTimeout(this._refreshTimer);
    this._failPending(new TeamhubError("closed", `connection closed (${code})`));
    if (this._stopped) return;
    let advice = closeAdvice(code);
    // A browser cannot see why a handshake failed: a refused origin (403) or token (401)
    // looks like a node that is down. Ask the node over HTTP to tell them apart, in the
    // handshake's order: origin first, then the token.
    if (!ws.teamhubOpened && (await this._originRefused())) {
      code = 403;
      reason = `origin ${this._pageOrigin} not allowed`;
      advice = "stop";
    } else if (!ws.teamhubOpened && (await this._tokenRefused())) {
      code = 401;
      reason = "token refused";
      advice = "refresh";
    }
    if (advice === "refresh") {
      if (!this.refreshToken) {
        advice = "stop";
      } else {
        try {
          this.token = await this.refreshToken(this._currentToken());
          advice = "now";
        } catch (e) {
          this._emit("error", e);
          advice = "backoff";
        }
      }
    }
    this._scheduleReconnect(code, reason, advice);
  }

  /** The node's HTTP base URL. */
  _httpBase() {
    const base = new URL(this.url);
    if (base.protocol === "ws:") base.protocol = "http:";
    if (base.protocol === "wss:") base.protocol = "https:";
    return base;
  }

  /** True when the node says its handshake refuses this page's origin (false when unreachable). */
  async _originRefused() {
    if (!this._fetch || !this._pageOrigin || this._pageOrigin === "null") return false;
    try {
      const url = new URL("/origin-check", this._httpBase());
      url.searchParams.set("origin", this._pageOrigin);
      const res = await this._fetch(url);
      return res.status === 200 && (await res.json()).allowed === false;
    } catch {
      return false;
    }
  }

  /** True when the node answers 401 to this token over REST (false when unreachable). */
  async _tokenRefused() {
    if (!this._fetch) return false;
    const base = this._httpBase();
    const team = [...this._teams.keys()][0] ?? "_";
    try {
      const res = await this._fetch(new URL(`/api/v1/teams/${encodeURIComponent(team)}/presence`, base), {
        headers: { Authorization: `Bearer ${this._currentToken()}` },
      });
      return res.status === 401;
    } catch {
      return false;
    }
  }

  _scheduleReconnect(code, reason, advice) {
    if (advice === "stop") {
      this._stopped = true;
      this._emit("close", { code, reason, advice, delayMs: null });
      this._setState("stopped");
      return;
    }
    const delayMs = advice === "now" ? 0 : backoffDelay(this._attempt, this.backoff);
    this._attempt += 1;
    this._emit("close", { code, reason, advice, delayMs });
    this._setState("reconnecting");
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delayMs);
  }

  _scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    if (!this.refreshToken) return;
    const claims = decodeJwt(this._currentToken());
    if (!claims?.exp) return;
    const inMs = Math.max(1000, claims.exp * 1000 - Date.now() - this.refreshMarginMs);
    this._refreshTimer = setTimeout(async () => {
      try {
        const next = await this.refreshToken(this._currentToken());
        await this.refresh(next);
      } catch (e) {
        this._emit("error", e);
      }
    }, inMs);
  }
}
