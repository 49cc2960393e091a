// What the storefront's journeys share: the API as a creator or a rival uses it,
// waiting for the page to update itself, the browser, and a failure's artifacts
// (a screenshot and the page's HTML in ARTIFACTS).
//
// Each journey runs with BASE (the server), CHROMIUM (the browser binary) and
// ARTIFACTS (where a failure's screenshot and HTML go), and prints "<name>: done".
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const BASE = process.env.BASE;
const ARTIFACTS = process.env.ARTIFACTS || tmpdir();
export const TIMEOUT = 10_000;
export const run = Math.random().toString(36).slice(2, 8);

export function check(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}

export async function api(method, path, { token, body, key, headers: extra } = {}) {
  const headers = { "content-type": "application/json", ...extra };
  if (token) headers.authorization = `Bearer ${token}`;
  if (key) headers["idempotency-key"] = key;
  const response = await fetch(BASE + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${JSON.stringify(data)}`);
  return data;
}

/// The status and error code of a request expected to fail.
export async function refusal(method, path, options = {}) {
  try {
    await api(method, path, options);
  } catch (e) {
    const m = /: (\d+) (.*)$/.exec(e.message);
    if (m) return { status: Number(m[1]), code: JSON.parse(m[2])?.code };
    throw e;
  }
  throw new Error(`${method} ${path} succeeded`);
}

export async function person(role, name) {
  const email = `${name}-${run}@example.test`;
  const password = "journey-password";
  await api("POST", "/users", { body: { email, password, display_name: name, role } });
  const session = await api("POST", "/sessions", { body: { email, password } });
  return { email, password, name, token: session.token };
}

export async function product(creator, title) {
  return api("POST", "/products", {
    token: creator.token,
    body: { title: `${title} ${run}`, description: "Made for the journey", price_cents: 4000, currency: "EUR" },
  });
}

export const at = (ms) => new Date(Date.now() + ms).toISOString();

export async function textOf(page, testid) {
  return ((await page.getByTestId(testid).first().textContent()) || "").trim();
}

/// Polls `probe` until it returns true (the page updates itself, no reloads).
export async function until(what, probe, timeout = TIMEOUT) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/// Logs `who` in through the storefront's form and waits for the header to name them.
export async function logIn(page, who) {
  await page.goto(`${BASE}/#/login`);
  await page.getByTestId("email").fill(who.email);
  await page.getByTestId("password").fill(who.password);
  await page.getByTestId("submit").click();
  await until("signed in", async () => (await page.getByTestId("who").count()) === 1 && (await textOf(page, "who")) === who.name);
}

/// Opens a drop's page and waits for its event stream.
export async function openDrop(page, dropId) {
  await page.goto(`${BASE}/#/drops/${dropId}`);
  await page.getByTestId("title").waitFor();
  await until("the drop's event stream is open", async () => (await page.locator("#view[data-live]").count()) === 1);
}

/// Runs `body(page, state)` in a fresh headless Chromium; on failure keeps a
/// screenshot and the HTML, says at which step it failed and exits non-zero.
export async function journey(name, body) {
  const profile = mkdtempSync(join(tmpdir(), "livedrop-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  const consoleErrors = [];
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const state = { step: "start" };
  try {
    await body(page, state);
    check(consoleErrors.length === 0, `no script errors (${consoleErrors.join("; ")})`);
    console.log(`${name}: done`);
  } catch (error) {
    const file = `${name}-${run}`;
    await page.screenshot({ path: join(ARTIFACTS, `${file}.png`), fullPage: true }).catch(() => {});
    writeFileSync(join(ARTIFACTS, `${file}.html`), await page.content().catch(() => ""));
    console.error(`${name} failed at "${state.step}": ${error.stack || error}`);
    console.error(`page: ${page.url()}; screenshot and HTML in ${ARTIFACTS}/${file}.*`);
    if (consoleErrors.length) console.error(`script errors: ${consoleErrors.join("; ")}`);
    process.exitCode = 1;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
