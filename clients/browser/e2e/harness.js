// End-to-end harness: a real `teamhub serve` process on a loopback port and headless
// Chromium (Debian's /usr/bin/chromium) driven by playwright-core. Every wait has a
// deadline; nothing sleeps in place of an event.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
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

/**
 * A private CA and a certificate for localhost and 127.0.0.1 signed by it, made with
 * the openssl command line in `dir`. Returns the paths.
 */
export function makeCertificates(dir) {
  const run = (...args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] });
  run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=teamhub e2e CA",
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign");
  run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=localhost");
  writeFileSync(join(dir, "ext.cnf"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n");
  run("x509", "-req", "-in", "tls.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
    "-out", "tls.crt", "-days", "2", "-extfile", "ext.cnf");
  return { ca: join(dir, "ca.pem"), cert: join(dir, "tls.crt"), key: join(dir, "tls.key") };
}

/** One HTTP(S) request; `ca` (PEM) is what an https URL trusts. */
function fetchText(url, { method = "GET", headers = {}, body, ca } = {}) {
  const request = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((ok, fail) => {
    const req = request(url, { method, headers, ca, timeout: WAIT_MS }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { text += d; });
      res.on("end", () => ok({ status: res.statusCode, headers: res.headers, text }));
    });
    req.on("timeout", () => req.destroy(new Error(`no answer from ${url}`)));
    req.on("error", fail);
    req.end(body);
  });
}

/** A node process that can be stopped (SIGTERM) and started again on the same port. */
export class Hub {
  /** `tls: true` serves HTTPS and WSS with a certificate from a CA made for it. */
  constructor({ secret = SECRET, extra = [], tls = false } = {}) {
    this.secret = secret;
    this.extra = extra;
    this.dir = mkdtempSync(join(tmpdir(), "teamhub-e2e-"));
    this.proc = null;
    this.stderr = "";
    if (tls) {
      this.tls = makeCertificates(this.dir);
      this.ca = readFileSync(this.tls.ca, "utf8");
      this.extra = [...this.extra, "--tls-cert", this.tls.cert, "--tls-key", this.tls.key];
    }
  }

  get origin() { return `${this.tls ? "https://localhost" : "http://127.0.0.1"}:${this.port}`; }

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
      return (await fetchText(`${this.origin}/readyz`, { ca: this.ca })).status === 200;
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
    const res = await fetchText(`${this.origin}/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      ca: this.ca,
    });
    const text = res.text;
    return { status: res.status, headers: new Headers(res.headers), body: text ? JSON.parse(text) : null };
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

/**
 * A page in its own context, with console errors collected. `trustAnyCertificate`
 * accepts the private CA of a TLS node (Chromium keeps its roots in a profile NSS
 * database this test does not touch).
 */
export async function openPage(b, url, { trustAnyCertificate = false } = {}) {
  const context = await b.newContext({
    viewport: { width: 1280, height: 860 }, acceptDownloads: true, ignoreHTTPSErrors: trustAnyCertificate,
  });
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
