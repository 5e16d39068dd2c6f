// Unit tests of the library's pure parts, and of the client's reconnect logic over a
// scripted fake socket: `node --test clients/browser/test/`.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  PresenceMap, Positions, TeamhubClient, backoffDelay, closeAdvice, decodeJwt, socketUrl,
} from "../teamhub.js";

test("backoff ceilings double up to the cap, with full jitter", () => {
  const top = () => 0.9999999;
  const ceilings = [0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, { baseMs: 100, capMs: 1000, random: top }));
  assert.deepEqual(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(backoffDelay(3, { baseMs: 100, capMs: 1000, random: () => 0 }), 0);
  assert.equal(backoffDelay(1000, { baseMs: 100, capMs: 5000, random: top }), 5000, "no overflow");
  const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(10, { baseMs: 100, capMs: 10000 })));
  assert.ok(draws.size > 1, "jittered");
  for (const d of draws) assert.ok(d >= 0 && d <= 10000);
});

test("close codes follow the contract", () => {
  assert.equal(closeAdvice(1012), "now");
  assert.equal(closeAdvice(4001), "refresh");
  assert.equal(closeAdvice(1008), "stop");
  assert.equal(closeAdvice(4008), "stop");
  assert.equal(closeAdvice(1002), "stop");
  assert.equal(closeAdvice(1007), "stop");
  assert.equal(closeAdvice(1013), "backoff");
  assert.equal(closeAdvice(1006), "backoff");
});

test("presence map applies a snapshot, then diffs, and reports each change", () => {
  const p = new PresenceMap("t");
  const changes = [];
  p.onChange((map, change) => changes.push([map.entries().map((e) => `${e.user}:${e.conns}`), change.reset]));
  p.reset([{ user: "b", name: null, conns: 1, meta: null }, { user: "a", name: "A", conns: 2, meta: null }]);
  p.apply({ joins: [{ user: "c", name: null, conns: 1, meta: { status: "busy" } }], leaves: [] });
  p.apply({ joins: [], leaves: [{ user: "a", name: "A", conns: 0, meta: null }] });
  assert.deepEqual(changes, [
    [["a:2", "b:1"], true],
    [["a:2", "b:1", "c:1"], false],
    [["b:1", "c:1"], false],
  ]);
  assert.equal(p.get("c").meta.status, "busy");
  assert.equal(p.size, 2);
  assert.ok(!p.has("a"));
});

test("positions track the join reply, missed messages, gaps and duplicates", () => {
  const pos = new Positions();
  assert.equal(pos.message({ team: "t", offset: 1 }), "unknown");
  pos.joined({ team: "t", epoch: "e1", offset: 4, missed: [] });
  assert.deepEqual(pos.since("t"), { epoch: "e1", offset: 4 });
  assert.equal(pos.message({ team: "t", offset: 4 }), "duplicate");
  assert.equal(pos.message({ team: "t", offset: 5 }), "new");
  assert.equal(pos.message({ team: "t", offset: 7 }), "gap");
  assert.deepEqual(pos.since("t"), { epoch: "e1", offset: 7 });
  pos.joined({ team: "t", epoch: "e1", offset: 7, missed: [{ offset: 9 }] });
  assert.equal(pos.since("t").offset, 9);
  pos.forget("t");
  assert.equal(pos.since("t"), undefined);
});

test("socket urls and JWT payloads", () => {
  assert.equal(socketUrl("http://127.0.0.1:8080", "a b"), "ws://127.0.0.1:8080/ws?token=a+b");
  assert.equal(socketUrl("https://hub.example/", "t"), "wss://hub.example/ws?token=t");
  assert.equal(socketUrl("ws://h:1/ws", "t"), "ws://h:1/ws?token=t");
  const payload = Buffer.from(JSON.stringify({ sub: "ann", exp: 5, teams: { t: "editor" } })).toString("base64url");
  assert.deepEqual(decodeJwt(`x.${payload}.y`), { sub: "ann", exp: 5, teams: { t: "editor" } });
  assert.equal(decodeJwt("thk_abc"), null);
  assert.equal(decodeJwt("garbage"), null);
});

// A scripted WebSocket: the test plays the server.
class FakeSocket {
  static all = [];
  constructor(url, protocol) {
    this.url = url;
    this.protocol = protocol;
    this.readyState = 0;
    this.sent = [];
    this.waiters = [];
    FakeSocket.all.push(this);
    FakeSocket.onNew?.(this);
  }
  open() { this.readyState = 1; this.onopen?.(); }
  send(text) {
    const frame = JSON.parse(text);
    this.sent.push(frame);
    for (const w of this.waiters.splice(0)) w(frame);
  }
  /** The next frame the client sends (or one already sent and not yet taken). */
  async next() {
    this.taken ??= 0;
    if (this.taken < this.sent.length) return this.sent[this.taken++];
    await new Promise((r) => this.waiters.push(r));
    return this.sent[this.taken++];
  }
  serve(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
  close(code = 1000, reason = "") { this.serverClose(code, reason); }
  serverClose(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
}

function nextSocket() {
  return new Promise((resolve) => { FakeSocket.onNew = (s) => { FakeSocket.onNew = null; resolve(s); }; });
}

/** Connects `client` through a socket that never opens (1006); returns its close events. */
async function handshakeFails(client) {
  const closes = [];
  client.on("close", (c) => closes.push(c));
  const s = nextSocket();
  const connected = client.connect();
  (await s).serverClose(1006);
  await assert.rejects(connected, (e) => e.code === "closed");
  return closes;
}

const joinReply = (id, team, epoch, offset, extra = {}) => ({
  op: "reply", id, ok: true, team, epoch, offset, presence: [{ user: "ann", name: null, conns: 1, meta: null }],
  recovered: false, missed: [], ...extra,
});

test("a 1012 close reconnects at once and rejoins with since; recovered messages arrive in order", async () => {
  const client = new TeamhubClient({ url: "http://hub.test", token: "tok", WebSocket: FakeSocket });
  const messages = [];
  const joins = [];
  client.on("message", (m) => messages.push(m.offset));
  client.on("joined", (j) => joins.push([j.rejoin, j.recovered]));
  let s = nextSocket();
  const connected = client.connect();
  let sock = await s;
  assert.equal(sock.url, "ws://hub.test/ws?token=tok");
  assert.equal(sock.protocol, "teamhub.v1");
  sock.open();
  await connected;
  const joining = client.join("t", { meta: { status: "busy" } });
  const join = await sock.next();
  assert.deepEqual({ ...join, id: 0 }, { op: "join", team: "t", meta: { status: "busy" }, id: 0 });
  sock.serve(joinReply(join.id, "t", "e1", 2));
  await joining;
  sock.serve({ op: "message", team: "t", offset: 3, type: "n", user: "bob", data: 1, ts: "x" });

  s = nextSocket();
  const closes = [];
  client.on("close", (c) => closes.push(c));
  sock.serverClose(1012, "draining");
  assert.equal(closes[0].delayMs, 0);
  sock = await s;
  sock.open();
  const rejoin = await sock.next();
  assert.deepEqual(rejoin.since, { epoch: "e1", offset: 3 });
  assert.deepEqual(rejoin.meta, { status: "busy" });
  const missed = [3, 4, 5].map((offset) => ({ op: "message", team: "t", offset, type: "n", user: "bob", data: offset, ts: "x" }));
  sock.serve(joinReply(rejoin.id, "t", "e1", 5, { recovered: true, missed }));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(messages, [3, 4, 5], "offset 3 was already seen");
  assert.deepEqual(joins, [[false, false], [true, true]]);
  assert.equal(client.presence("t").size, 1);
  client.close();
});

test("1008 and 4008 stop; 4001 refreshes the token and reconnects", async () => {
  for (const code of [1008, 4008]) {
    const client = new TeamhubClient({ url: "http://hub.test", token: "tok", WebSocket: FakeSocket });
    const s = nextSocket();
    const connected = client.connect();
    const sock = await s;
    sock.open();
    await connected;
    const before = FakeSocket.all.length;
    sock.serverClose(code, "no");
    await new Promise((r) => setTimeout(r, 0));
    assert.equal(client.state, "stopped");
    assert.equal(FakeSocket.all.length, before, "no new socket");
  }
  let refreshed = 0;
  const client = new TeamhubClient({
    url: "http://hub.test", token: "old", WebSocket: FakeSocket,
    refreshToken: async () => { refreshed += 1; return "new"; },
  });
  let s = nextSocket();
  const connected = client.connect();
  let sock = await s;
  sock.open();
  await connected;
  s = nextSocket();
  sock.serverClose(4001, "token expired");
  sock = await s;
  assert.equal(refreshed, 1);
  assert.equal(sock.url, "ws://hub.test/ws?token=new");
  client.close();
});

test("a request is answered by the reply with its id, an error rejects with its code", async () => {
  const client = new TeamhubClient({ url: "http://hub.test", token: "tok", WebSocket: FakeSocket });
  const s = nextSocket();
  const connected = client.connect();
  const sock = await s;
  sock.open();
  await connected;
  const a = client.publish("t", "n", 1);
  const b = client.publish("t", "x", 2);
  const fa = await sock.next();
  const fb = await sock.next();
  sock.serve({ op: "error", id: fb.id, code: "forbidden", message: "viewer" });
  sock.serve({ op: "reply", id: fa.id, ok: true, offset: 7 });
  assert.equal(await a, 7);
  await assert.rejects(b, (e) => e.code === "forbidden");
  client.close();
});

test("a handshake that fails is told apart from a refused token over REST", async () => {
  const asked = [];
  let status = 401;
  const fetch = async (url, init) => { asked.push([String(url), init.headers.Authorization]); return { status }; };
  const client = new TeamhubClient({ url: "http://hub.test", token: "bad", WebSocket: FakeSocket, fetch });
  const closes = await handshakeFails(client);
  assert.deepEqual(asked, [["http://hub.test/api/v1/teams/_/presence", "Bearer bad"]]);
  assert.equal(closes[0].code, 401);
  assert.equal(closes[0].delayMs, null, "no refreshToken: stop");
  assert.equal(client.state, "stopped");

  // A node that is down (or answers anything but 401) is retried with backoff.
  status = 200;
  const retrying = new TeamhubClient({ url: "http://hub.test", token: "tok", WebSocket: FakeSocket, fetch, backoff: { baseMs: 1, capMs: 1 } });
  const first = nextSocket();
  retrying.connect().catch(() => {});
  const again = new Promise((r) => retrying.on("close", r));
  (await first).serverClose(1006);
  const c = await again;
  assert.equal(c.code, 1006);
  assert.equal(c.advice, "backoff");
  assert.notEqual(c.delayMs, null);
  retrying.close();
});

test("a handshake refused for the page's origin stops with 403, asked before the token", async () => {
  const asked = [];
  let allowed = false;
  const fetch = async (url, init) => {
    asked.push(String(url));
    if (new URL(url).pathname === "/origin-check") return { status: 200, json: async () => ({ origin: "http://localhost:8080", allowed }) };
    return { status: init?.headers?.Authorization === "Bearer bad" ? 401 : 200 };
  };
  const opts = { url: "http://127.0.0.1:8080", WebSocket: FakeSocket, fetch, pageOrigin: "http://localhost:8080" };
  const client = new TeamhubClient({ ...opts, token: "tok" });
  const closes = await handshakeFails(client);
  assert.deepEqual(asked, ["http://127.0.0.1:8080/origin-check?origin=http%3A%2F%2Flocalhost%3A8080"]);
  assert.equal(closes[0].code, 403);
  assert.match(closes[0].reason, /origin http:\/\/localhost:8080 not allowed/);
  assert.equal(closes[0].delayMs, null, "retrying cannot help: stop");
  assert.equal(client.state, "stopped");

  // An allowed origin goes on to the token question.
  allowed = true;
  asked.length = 0;
  const refused = new TeamhubClient({ ...opts, token: "bad" });
  const closed = new Promise((r) => refused.on("close", r));
  const s2 = nextSocket();
  refused.connect().catch(() => {});
  (await s2).serverClose(1006);
  assert.equal((await closed).code, 401);
  assert.equal(asked.length, 2);
});

test("a meta function is asked again at every rejoin", async () => {
  const client = new TeamhubClient({ url: "http://hub.test", token: "tok", WebSocket: FakeSocket });
  let status = "busy";
  let s = nextSocket();
  const connected = client.connect();
  let sock = await s;
  sock.open();
  await connected;
  const joining = client.join("t", { meta: () => ({ status }) });
  const join = await sock.next();
  assert.deepEqual(join.meta, { status: "busy" });
  sock.serve(joinReply(join.id, "t", "e1", 0));
  await joining;

  status = "away"; // chosen while the connection is down, or in another tab
  s = nextSocket();
  sock.serverClose(1012, "draining");
  sock = await s;
  sock.open();
  assert.deepEqual((await sock.next()).meta, { status: "away" });
  client.close();
});
