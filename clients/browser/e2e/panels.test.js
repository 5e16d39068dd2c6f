// The demo page's REST-fed panels (pattern library, activity log, usage) in headless Chromium
// against a real node process.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

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

test("a pattern written over REST appears in the page, and so do its update and deletion", async () => {
  const h = await hub();
  const admin = h.token("ada", { demo: "admin" }, "Ada");
  const page = await openPage(b, pageUrl(h, admin, "demo"));
  await online(page);
  const created = await h.rest("PUT", "/teams/demo/patterns/login-form", admin,
    { content: { fields: ["user", "password"] } }, { "If-None-Match": "*" });
  assert.ok(created.status === 200 || created.status === 201, JSON.stringify(created));
  const item = page.locator('#patterns li[data-name="login-form"]');
  await item.waitFor({ timeout: WAIT_MS });
  assert.match(await item.locator("pre").textContent(), /password/);

  const version = created.body.version;
  const updated = await h.rest("PUT", "/teams/demo/patterns/login-form", admin,
    { content: { fields: ["email", "password", "otp"] } }, { "If-Match": `"${version}"` });
  assert.equal(updated.status, 200, JSON.stringify(updated));
  await page.locator('#patterns li[data-name="login-form"] pre', { hasText: "otp" }).waitFor({ timeout: WAIT_MS });
  await screenshot(page, "patterns");

  const deleted = await h.rest("DELETE", "/teams/demo/patterns/login-form", admin, undefined,
    { "If-Match": `"${updated.body.version}"` });
  assert.equal(deleted.status, 204);
  await item.waitFor({ state: "detached", timeout: WAIT_MS });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("admins filter the activity log and export it as CSV", async () => {
  const h = await hub();
  const owner = h.token("olga", { demo: "owner" }, "Olga");
  const editor = h.token("ed", { demo: "editor" });
  for (const text of ["one", "two"]) {
    assert.equal((await h.rest("POST", "/teams/demo/messages", editor, { type: "chat.message", data: { text } })).status, 200);
  }
  assert.equal((await h.rest("POST", "/teams/demo/messages", editor, { type: "deploy.done", data: { v: 3 } })).status, 200);
  const page = await openPage(b, pageUrl(h, owner, "demo"));
  await online(page);
  assert.equal(await page.locator("#activity").isVisible(), true);
  // The log is written asynchronously: filter until the rows are there.
  await page.fill('#activity-filters input[name="action"]', "chat.message");
  await until("two chat.message rows", async () => {
    await page.click('#activity-filters button[type="submit"]');
    return (await page.locator("#activity-rows tr").count()) === 2;
  });
  assert.deepEqual(await page.locator("#activity-rows tr td:nth-child(3)").allTextContents(), ["chat.message", "chat.message"]);
  await screenshot(page, "activity");

  const [download] = await Promise.all([page.waitForEvent("download", { timeout: WAIT_MS }), page.click("#export")]);
  const csv = readFileSync(await download.path(), "utf8").trim().split(/\r?\n/);
  assert.match(csv[0], /^id,team,user,action,/);
  assert.equal(csv.length, 3, csv.join("\n"));
  assert.ok(csv.slice(1).every((line) => line.includes("chat.message")));

  // An editor has no activity panel.
  const ed = await openPage(b, pageUrl(h, editor, "demo"));
  await online(ed);
  assert.equal(await ed.locator("#activity").isVisible(), false);
  await ed.context().close();
  await page.context().close();
});

test("admins see the month's usage as a chart, editors do not", async () => {
  const h = await hub();
  const owner = h.token("olga", { demo: "owner" }, "Olga");
  const editor = h.token("ed", { demo: "editor" });
  for (const text of ["one", "two", "three"]) {
    assert.equal((await h.rest("POST", "/teams/demo/messages", editor, { type: "chat.message", data: { text } })).status, 200);
  }
  const page = await openPage(b, pageUrl(h, owner, "demo"));
  await online(page);
  // The node answering the usage request writes its counts first: today's bar has all three.
  const today = new Date().toISOString().slice(0, 10);
  const bar = page.locator(`#usage-chart .bar[data-date="${today}"]`);
  await bar.waitFor({ timeout: WAIT_MS });
  assert.match(await bar.getAttribute("title"), /: 3 messages, /);
  const days = new Date(Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth() + 1, 0)).getUTCDate();
  assert.equal(await page.locator("#usage-chart .bar").count(), days, "one bar per day of the month");
  assert.match(await page.locator("#usage-plan").textContent(), /plan free/);
  await screenshot(page, "usage");

  const ed = await openPage(b, pageUrl(h, editor, "demo"));
  await online(ed);
  assert.equal(await ed.locator("#usage").isVisible(), false);
  assert.deepEqual(page.errors, []);
  await ed.context().close();
  await page.context().close();
});

test("an admin API key pasted into the page gets the activity panel", async () => {
  const h = await hub();
  const owner = h.token("olga", { demo: "owner" }, "Olga");
  const created = await h.rest("POST", "/teams/demo/api-keys", owner, { name: "console", role: "admin" });
  assert.equal(created.status, 201, JSON.stringify(created));
  const page = await openPage(b, pageUrl(h, created.body.key, "demo"));
  await online(page);
  await page.locator("#activity").waitFor({ state: "visible", timeout: WAIT_MS });
  await page.locator(`#presence li[data-user="apikey:${created.body.id}"]`).waitFor({ timeout: WAIT_MS });
  const viewer = await h.rest("POST", "/teams/demo/api-keys", owner, { name: "wall", role: "viewer" });
  const wall = await openPage(b, pageUrl(h, viewer.body.key, "demo"));
  await online(wall);
  await wall.locator(`#presence li[data-user="apikey:${viewer.body.id}"]`).waitFor({ timeout: WAIT_MS });
  assert.equal(await wall.locator("#activity").isVisible(), false);
  await wall.context().close();
  await page.context().close();
});

test("admins see the team's webhook endpoints and their recent deliveries", async () => {
  const h = await hub({ extra: ["--webhook-allow-private", "--webhook-retry-schedule", "50ms"] });
  const owner = h.token("olga", { demo: "owner" }, "Olga");
  // The node's own 404 answers every attempt: the delivery fails after two.
  const created = await h.rest("POST", "/teams/demo/webhooks", owner,
    { url: `${h.origin}/no-such-receiver`, events: ["deploy."], description: "ci" });
  assert.equal(created.status, 201, JSON.stringify(created));
  assert.match(created.body.secret, /^whsec_/);
  assert.equal((await h.rest("POST", "/teams/demo/messages", owner, { type: "deploy.done", data: { v: 1 } })).status, 200);

  const page = await openPage(b, pageUrl(h, owner, "demo"));
  await online(page);
  assert.equal(await page.locator("#webhooks").isVisible(), true);
  await page.locator(`#webhook-rows tr[data-id="${created.body.id}"]`).waitFor({ timeout: WAIT_MS });
  assert.match(await page.locator("#webhook-rows tr td:first-child").textContent(), /no-such-receiver/);
  await until("a failed delivery in the panel", async () => {
    await page.click("#webhooks-refresh");
    return (await page.locator('#delivery-rows tr[data-status="failed"]').count()) === 1;
  });
  const row = page.locator('#delivery-rows tr[data-status="failed"]');
  assert.deepEqual(await row.locator("td").allTextContents(), [
    await row.getAttribute("data-id"), "deploy.done", "failed", "2", "404", "", "Retry",
  ]);
  await screenshot(page, "webhooks");
  assert.deepEqual(page.errors, []);

  // An editor sees no webhooks panel.
  const ed = await openPage(b, pageUrl(h, h.token("ed", { demo: "editor" }), "demo"));
  await online(ed);
  assert.equal(await ed.locator("#webhooks").isVisible(), false);
  await ed.context().close();
  await page.context().close();
});
