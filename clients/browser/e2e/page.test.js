// The demo page in headless Chromium against a real node process.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { Hub, browser, openPage, online, screenshot, until, WAIT_MS } from "./harness.js";

let b;
const hubs = [];
before(async () => { b = await browser(); });
after(async () => {
  await b?.close();
  for (const h of hubs) h.kill();
});

async function hub(opts) {
  const h = new Hub(opts);
  hubs.push(h);
  return h.start();
}

const pageUrl = (h, token, team, extra = "") => `${h.origin}/?token=${encodeURIComponent(token)}&team=${team}${extra}`;
const presenceItem = (page, user) => page.locator(`#presence li[data-user="${user}"]`);

test("the development-mode banner's URL opens a working page", async () => {
  const h = await hub({ secret: null });
  const url = await until("the banner", () => h.stderr.match(/demo page:\s+(\S+)/)?.[1]);
  const page = await openPage(b, url);
  await online(page);
  await presenceItem(page, "dev").waitFor({ timeout: WAIT_MS });
  assert.match(await page.locator("#whoami").textContent(), /Developer · owner/);
  await screenshot(page, "dev-mode");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("two windows see each other's presence, status and messages", async () => {
  const h = await hub();
  const ann = await openPage(b, pageUrl(h, h.token("ann", { demo: "editor" }, "Ann"), "demo"));
  await online(ann);
  const bob = await openPage(b, pageUrl(h, h.token("bob", { demo: "editor" }, "Bob"), "demo", "&status=busy"));
  await online(bob);

  await presenceItem(ann, "bob").waitFor({ timeout: WAIT_MS });
  await presenceItem(bob, "ann").waitFor({ timeout: WAIT_MS });
  assert.equal(await presenceItem(ann, "bob").locator(".status").textContent(), "busy");
  assert.equal(await presenceItem(ann, "bob").locator(".conns").textContent(), "×1");
  assert.equal(await ann.locator("#online-count").textContent(), "2");

  // A second window of Bob's counts as a second connection, not a second person
  // (shown from the next snapshot: here, a third person's join reply).
  const bob2 = await openPage(b, pageUrl(h, h.token("bob", { demo: "editor" }, "Bob"), "demo"));
  await online(bob2);
  const cat = await openPage(b, pageUrl(h, h.token("cat", { demo: "viewer" }, "Cat"), "demo"));
  await online(cat);
  await cat.locator('#presence li[data-user="bob"] .conns', { hasText: "×2" }).waitFor({ timeout: WAIT_MS });
  await presenceItem(ann, "cat").waitFor({ timeout: WAIT_MS });
  assert.equal(await ann.locator("#online-count").textContent(), "3");
  await screenshot(cat, "two-windows-cat");
  await cat.context().close();
  await presenceItem(ann, "cat").waitFor({ state: "detached", timeout: WAIT_MS });
  await bob2.context().close();

  await ann.fill("#text", "hello from Ann");
  await ann.press("#text", "Enter");
  await bob.locator("#feed li.chat", { hasText: "hello from Ann" }).waitFor({ timeout: WAIT_MS });
  await ann.locator("#feed li.chat", { hasText: "hello from Ann" }).waitFor({ timeout: WAIT_MS });
  await bob.fill("#text", "hi Ann");
  await bob.click("#send");
  await ann.locator("#feed li.chat", { hasText: "hi Ann" }).waitFor({ timeout: WAIT_MS });
  assert.equal(await ann.locator("#feed li.chat .who").last().textContent(), "Bob");

  // A status chosen in the header reaches the others as presence meta.
  await ann.selectOption("#mystatus", "away");
  await bob.locator('#presence li[data-user="ann"] .status', { hasText: "away" }).waitFor({ timeout: WAIT_MS });

  await screenshot(ann, "two-windows-ann");
  await screenshot(bob, "two-windows-bob");
  await bob.context().close();
  await presenceItem(ann, "bob").waitFor({ state: "detached", timeout: WAIT_MS });
  assert.deepEqual(ann.errors, []);
  await ann.context().close();
});

test("a status chosen in one tab survives a second tab of the same user", async () => {
  const h = await hub();
  const token = h.token("bob", { demo: "editor" }, "Bob");
  const bobStatus = async () => {
    const { body } = await h.rest("GET", "/teams/demo/presence", token);
    const bob = body.presence.find((p) => p.user === "bob");
    return bob && `${bob.meta?.status} ×${bob.conns}`;
  };
  const tab1 = await openPage(b, pageUrl(h, token, "demo"));
  await online(tab1);
  await tab1.selectOption("#mystatus", "busy");
  await until("bob busy", async () => (await bobStatus()) === "busy ×1");

  // The second tab (same browser profile) starts busy and joins busy: the entry, which
  // shows the most recent join's meta, stays busy.
  const tab2 = await tab1.context().newPage();
  await tab2.goto(pageUrl(h, token, "demo"));
  await online(tab2);
  assert.equal(await tab2.locator("#mystatus").inputValue(), "busy");
  await until("bob busy on two connections", async () => (await bobStatus()) === "busy ×2");

  // A change in either tab reaches the other, so closing one keeps the choice.
  await tab2.selectOption("#mystatus", "away");
  await until("tab 1 follows", async () => (await tab1.locator("#mystatus").inputValue()) === "away");
  await until("bob away", async () => (await bobStatus()) === "away ×2");
  await tab2.close();
  await until("bob away on one connection", async () => (await bobStatus()) === "away ×1");
  assert.deepEqual(tab1.errors, []);
  await tab1.context().close();
});

test("after a node restart the page reconnects and carries on without a reload", async () => {
  const h = await hub();
  const ann = h.token("ann", { demo: "editor" }, "Ann");
  const bob = h.token("bob", { demo: "editor" }, "Bob");
  const page = await openPage(b, pageUrl(h, ann, "demo"));
  await online(page);
  const pageId = await page.evaluate(() => window.teamhubPageId);
  assert.equal((await h.rest("POST", "/teams/demo/messages", bob, { type: "chat.message", data: { text: "before" } })).status, 200);
  await page.locator("#feed li.chat", { hasText: "before" }).waitFor({ timeout: WAIT_MS });

  const exit = await h.stop();
  assert.equal(exit.code, 0);
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT_MS });
  await screenshot(page, "restart-reconnecting");
  await h.start();
  await online(page);
  await presenceItem(page, "ann").waitFor({ timeout: WAIT_MS });
  // A single node starts a new epoch: the page is told and reloads what it can.
  await page.locator("#feed li.system", { hasText: "Reconnected" }).waitFor({ timeout: WAIT_MS });
  assert.equal((await h.rest("POST", "/teams/demo/messages", bob, { type: "chat.message", data: { text: "after" } })).status, 200);
  await page.locator("#feed li.chat", { hasText: "after" }).waitFor({ timeout: WAIT_MS });
  await page.fill("#text", "still here");
  await page.press("#text", "Enter");
  await page.locator("#feed li.chat", { hasText: "still here" }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.evaluate(() => window.teamhubPageId), pageId, "the page was not reloaded");
  await screenshot(page, "restart-recovered");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a refused token stops the page instead of retrying forever", async () => {
  const h = await hub();
  const page = await openPage(b, pageUrl(h, "not-a-token", "demo"));
  await page.waitForSelector('#status[data-state="stopped"]', { timeout: WAIT_MS });
  await page.locator("#feed li.system", { hasText: "refused this token" }).waitFor({ timeout: WAIT_MS });
  await screenshot(page, "refused-token");
  await page.context().close();
});

test("a page opened from an origin the node does not allow says so and stops", async () => {
  // The node allows http://127.0.0.1:PORT; the same page at localhost is another origin.
  const h = await hub();
  const url = pageUrl(h, h.token("ann", { demo: "editor" }, "Ann"), "demo").replace("127.0.0.1", "localhost");
  const page = await openPage(b, url);
  await page.waitForSelector('#status[data-state="stopped"]', { timeout: WAIT_MS });
  const note = page.locator("#feed li.system", { hasText: "does not allow pages from" });
  await note.waitFor({ timeout: WAIT_MS });
  assert.match(await note.textContent(), new RegExp(`http://localhost:${h.port}.*--allowed-origins`));
  await screenshot(page, "refused-origin");
  await page.context().close();
});

test("the library refreshes its token before it expires and the connection lives on", async () => {
  const h = await hub({ extra: ["--jwt-leeway", "0"] });
  const short = h.token("ann", { demo: "editor" }, "Ann", "3s");
  const fresh = h.token("ann", { demo: "editor" }, "Ann", "1h");
  const page = await openPage(b, `${h.origin}/healthz`);
  const result = await page.evaluate(async ({ origin, short, fresh }) => {
    const { TeamhubClient } = await import(`${origin}/teamhub.js`);
    const client = new TeamhubClient({ url: origin, token: short, refreshMarginMs: 2500, refreshToken: async () => fresh });
    const closes = [];
    client.on("close", (c) => closes.push(c.code));
    const refreshed = Promise.race([
      new Promise((r) => client.on("token", (t) => r(t.exp))),
      new Promise((_, fail) => setTimeout(() => fail(new Error("no refresh within 10 s")), 10000)),
    ]);
    await client.connect();
    await client.join("demo");
    const exp = await refreshed;
    // Outlive the first token: unrefreshed, the node would close with 4001 at its exp.
    const firstExp = JSON.parse(atob(short.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).exp;
    await new Promise((r) => setTimeout(r, Math.max(0, firstExp * 1000 - Date.now()) + 1500));
    const offset = await client.publish("demo", "n", 1);
    client.close();
    return { exp, firstExp, offset, closes };
  }, { origin: h.origin, short, fresh });
  assert.ok(result.exp > result.firstExp + 60, JSON.stringify(result));
  assert.equal(result.offset, 1);
  assert.deepEqual(result.closes, [], "the connection was never closed");
  await page.context().close();
});

test("in cluster mode a restarted node's page recovers what was published meanwhile", async () => {
  // Two nodes on one Redis (a key prefix of this run's own): epoch and history live in
  // Redis, so they survive node a's restart, and node b takes publishes meanwhile.
  const redis = process.env.TEAMHUB_TEST_REDIS_URL || "redis://127.0.0.1:6379";
  const prefix = `e2e-${process.pid}-${Date.now()}`;
  const extra = ["--redis-url", redis, "--redis-key-prefix", prefix];
  const a = await hub({ extra });
  const other = await hub({ extra });
  const ann = a.token("ann", { demo: "editor" }, "Ann");
  const bob = a.token("bob", { demo: "editor" }, "Bob");
  const page = await openPage(b, pageUrl(a, ann, "demo"));
  await online(page);
  const pageId = await page.evaluate(() => window.teamhubPageId);
  assert.equal((await a.rest("POST", "/teams/demo/messages", bob, { type: "chat.message", data: { text: "one" } })).status, 200);
  await page.locator("#feed li.chat", { hasText: "one" }).waitFor({ timeout: WAIT_MS });

  assert.equal((await a.stop()).code, 0);
  await page.waitForSelector('#status[data-state="reconnecting"]', { timeout: WAIT_MS });
  for (const text of ["two", "three"]) {
    assert.equal((await other.rest("POST", "/teams/demo/messages", bob, { type: "chat.message", data: { text } })).status, 200);
  }
  await a.start();
  await online(page);
  await page.locator("#feed li.system", { hasText: "2 missed message(s) recovered" }).waitFor({ timeout: WAIT_MS });
  assert.deepEqual(await page.locator("#feed li.chat").evaluateAll((items) => items.map((i) => i.lastChild.textContent)), ["one", "two", "three"]);
  assert.equal(await page.evaluate(() => window.teamhubPageId), pageId, "the page was not reloaded");
  await screenshot(page, "cluster-restart-recovered");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("served over HTTPS the page connects over wss and works as over http", async () => {
  const h = await hub({ tls: true });
  assert.match(h.origin, /^https:/);
  const open = (user, name) =>
    openPage(b, pageUrl(h, h.token(user, { demo: "editor" }, name), "demo"), { trustAnyCertificate: true });
  const ann = await open("ann", "Ann");
  await online(ann);
  // The node serves TLS only: the page is open because the library chose wss://.
  assert.equal(await ann.evaluate(() => location.protocol), "https:");
  const bob = await open("bob", "Bob");
  await online(bob);
  await presenceItem(ann, "bob").waitFor({ timeout: WAIT_MS });
  await bob.fill("#text", "hello over wss");
  await bob.press("#text", "Enter");
  await ann.locator("#feed li.chat", { hasText: "hello over wss" }).waitFor({ timeout: WAIT_MS });
  await screenshot(ann, "https-ann");
  assert.deepEqual(ann.errors, []);
  await bob.context().close();
  await ann.context().close();
});
