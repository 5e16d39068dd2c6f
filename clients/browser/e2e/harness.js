// End-to-end harness: a real `teamhub serve` process on a loopback port and headless
// Chromium (Debian's /usr/bin/chromium) driven by playwright-core. Every wait has a
// deadline; nothing sleeps in place of an event.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "../../..");
export const BIN = process.env.TEAMHUB_BIN || join(ROOT, "target/debug/teamhub");
export const ARTIFACTS = process.env.TEAMHUB_E2E_ARTIFACTS || join(ROOT, "target/e2e-artifacts");
export const SECRET = "e2e-secret-0123456789abcdef0123456789";
export const WAIT_MS = 15000;

mkdirSync(ARTIFACTS, { recursive: true });

export async function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

/** Polls `check` (async, truthy = done) until it succeeds or the deadline passes. */
export async function until(what, check, ms = WAIT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50)); // polling interval, bounded by the deadline
  }
}

/** A node process that can be stopped (SIGTERM) and started again on the same port. */
export class Hub {
  constructor({ secret = SECRET, extra = [] } = {}) {
    this.secret = secret;
    this.extra = extra;
    this.dir = mkdtempSync(join(tmpdir(), "teamhub-e2e-"));
    this.proc = null;
    this.stderr = "";
  }

  get origin() { return `http://127.0.0.1:${this.port}`; }

  async start() {
    this.port ??= await freePort();
    const args = [
      "serve", "--listen", `127.0.0.1:${this.port}`,
      "--database-url", `sqlite://${join(this.dir, "hub.db")}`,
      "--activity-spill-path", join(this.dir, "activity.spill"),
      "--drain-timeout", "5",
      ...this.extra,
    ];
    const env = { ...process.env, RUST_LOG: "warn" };
    delete env.TEAMHUB_JWT_SECRET;
    if (this.secret) args.push("--jwt-secret", this.secret, "--allowed-origins", this.origin);
    this.stderr = "";
    const proc = spawn(BIN, args, { env, stdio: ["ignore", "ignore", "pipe"] });
    proc.stderr.on("data", (d) => { this.stderr += d; });
    this.exited = new Promise((r) => proc.once("exit", (code, signal) => r({ code, signal })));
    this.proc = proc;
    await until(`the node on ${this.port} to be ready`, async () => {
      if (proc.exitCode !== null) throw new Error(`teamhub exited: ${this.stderr}`);
      return (await fetch(`${this.origin}/readyz`)).status === 200;
    }).catch((e) => { throw new Error(`${e.message}\n${this.stderr}`); });
    return this;
  }

  /** SIGTERM (a drain: clients get 1012) and wait for the exit. */
  async stop() {
    if (!this.proc) return;
    this.proc.kill("SIGTERM");
    const result = await Promise.race([
      this.exited,
      new Promise((_, fail) => setTimeout(() => fail(new Error("node did not exit after SIGTERM")), WAIT_MS)),
    ]);
    this.proc = null;
    return result;
  }

  kill() { this.proc?.kill("SIGKILL"); this.proc = null; }

  token(user, teams, name = user, ttl = "1h") {
    const args = ["token", "--user", user, "--name", name, "--ttl", ttl];
    for (const [team, role] of Object.entries(teams)) args.push("--team", `${team}=${role}`);
    return execFileSync(BIN, args, { env: { ...process.env, TEAMHUB_JWT_SECRET: this.secret } }).toString().trim();
  }

  async rest(method, path, token, body, headers = {}) {
    const res = await fetch(`${this.origin}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
  }
}

/** Headless Chromium. Playwright gives every launch a fresh temporary profile. */
export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** A page in its own context, with console errors collected. */
export async function openPage(b, url) {
  const context = await b.newContext({ viewport: { width: 1280, height: 860 }, acceptDownloads: true });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  await page.goto(url);
  return page;
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}

export const online = (page) =>
  page.waitForSelector('#status[data-state="open"]', { timeout: WAIT_MS });
