// A buyer's first-come journey through the storefront in headless Chromium:
// the drop list, a drop's live stock over its event stream, register and log in,
// a purchase whose answer is lost and that is retried with the same Idempotency-Key
// (one order, not two), extending and paying the hold, the buyer's orders, the
// drop selling out while the page watches, and a drop in sizes: the picker's
// per-size stock, a waitlist place on the sold-out size, an order of the chosen one.
//
// Run by livedrop-http/tests/storefront.rs with BASE (the server), CHROMIUM (the
// browser binary) and ARTIFACTS (where a failure's screenshot and HTML go).
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const BASE = process.env.BASE;
const ARTIFACTS = process.env.ARTIFACTS || tmpdir();
const TIMEOUT = 10_000;
const run = Math.random().toString(36).slice(2, 8);

function check(condition, what) {
  if (!condition) throw new Error(`expected: ${what}`);
}

async function api(method, path, { token, body, key } = {}) {
  const headers = { "content-type": "application/json" };
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

async function person(role, name) {
  const email = `${name}-${run}@example.test`;
  const password = "journey-password";
  await api("POST", "/users", { body: { email, password, display_name: name, role } });
  const session = await api("POST", "/sessions", { body: { email, password } });
  return { email, password, token: session.token };
}

async function textOf(page, testid) {
  return (await page.getByTestId(testid).first().textContent()).trim();
}

/// Polls `probe` until it returns true (the page updates itself, no reloads).
async function until(what, probe) {
  const end = Date.now() + TIMEOUT;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// --- The catalogue, set up through the API as a creator would.
const creator = await person("creator", "creator");
const product = await api("POST", "/products", {
  token: creator.token,
  body: { title: `Journey tee ${run}`, description: "Heavy cotton", price_cents: 2500, currency: "EUR" },
});
const now = Date.now();
const live = await api("POST", "/drops", {
  token: creator.token,
  body: {
    product_id: product.id,
    ends_at: new Date(now + 3_600_000).toISOString(),
    total_stock: 3,
    per_user_limit: 2,
  },
});
const upcoming = await api("POST", "/drops", {
  token: creator.token,
  body: {
    product_id: product.id,
    starts_at: new Date(now + 3_600_000).toISOString(),
    ends_at: new Date(now + 7_200_000).toISOString(),
    total_stock: 5,
  },
});
const rival = await person("customer", "rival");

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

let step = "start";
try {
  step = "the drop list shows the live and the upcoming drop";
  await page.goto(`${BASE}/`);
  await page.locator(`[data-testid=drop-card][data-drop="${live.id}"]`).waitFor();
  const liveCard = page.locator(`[data-testid=drop-card][data-drop="${live.id}"]`);
  const upcomingCard = page.locator(`[data-testid=drop-card][data-drop="${upcoming.id}"]`);
  check((await liveCard.getByTestId("status").textContent()) === "live", "the live drop's badge says live");
  check((await upcomingCard.getByTestId("status").textContent()) === "upcoming", "the upcoming drop's badge");
  check((await liveCard.textContent()).includes(`Journey tee ${run}`), "the card names the product");
  check((await liveCard.textContent()).includes("3 of 3 left"), "the card shows the stock");

  step = "the upcoming drop counts down to its start";
  await upcomingCard.click();
  await page.getByTestId("drop").waitFor();
  await until("a countdown to the start", async () => /^Starts in 0?0:5\d:\d\d$/.test(await textOf(page, "countdown")));
  check(await page.getByTestId("buy").isDisabled() === false, "a visitor's button invites to log in");
  check((await textOf(page, "buy")) === "Log in to buy", "the visitor is asked to log in");

  step = "a visitor who tries to buy registers and comes back to the drop";
  await page.goto(`${BASE}/#/drops/${live.id}`);
  await page.getByTestId("title").waitFor();
  check((await textOf(page, "title")) === `Journey tee ${run}`, "the drop page names the product");
  check((await textOf(page, "available")) === "3", "3 available at first");
  await page.getByTestId("buy").click();
  await page.waitForURL(/#\/login$/);
  await page.getByRole("link", { name: "Register" }).last().click();
  await page.getByTestId("display-name").fill("Buyer");
  await page.getByTestId("email").fill(`buyer-${run}@example.test`);
  await page.getByTestId("password").fill("journey-password");
  await page.getByTestId("submit").click();
  await page.waitForURL(new RegExp(`#/drops/${live.id}$`));
  await page.getByTestId("title").waitFor();
  check((await textOf(page, "who")) === "Buyer", "the header names the signed-in buyer");
  await until("the drop's event stream is open", async () => (await page.locator("#view[data-live]").count()) === 1);
  await until("a countdown to the end", async () => /^Ends in 0?0:5\d:\d\d$/.test(await textOf(page, "countdown")));

  step = "another buyer's order shows in the live stock without a reload";
  await api("POST", "/orders", { token: rival.token, key: `rival-1-${run}`, body: { drop_id: live.id, quantity: 1 } });
  await until("available 2 from the stream", async () => (await textOf(page, "available")) === "2");

  step = "an order whose answer is lost is retried with the same key and placed once";
  const keys = [];
  await page.route("**/orders", async (route) => {
    const request = route.request();
    if (request.method() !== "POST") return route.continue();
    keys.push(request.headers()["idempotency-key"]);
    if (keys.length === 1) {
      await route.fetch(); // the server decides ...
      return route.abort("connectionreset"); // ... and the answer never arrives
    }
    return route.continue();
  });
  await page.getByTestId("quantity").fill("1");
  await page.getByTestId("buy").click();
  await until("the retry offer", async () => (await textOf(page, "buy")) === "Retry order");
  check(await page.getByTestId("quantity").isDisabled(), "the quantity is kept for the retry");
  check((await page.locator("#alert").textContent()).includes("did not arrive"), "the lost answer is explained");
  await page.getByTestId("buy").click();
  await page.waitForURL(/#\/orders\/[0-9a-f-]+$/);
  await page.unroute("**/orders");
  check(keys.length === 2, `two requests were sent (${keys.length})`);
  check(keys[0] && keys[0] === keys[1], `the retry reused the key (${keys.join(", ")})`);
  const token = await page.evaluate(() => JSON.parse(localStorage.getItem("livedrop.session")).token);
  const mine = (await api("GET", "/orders?limit=100", { token })).items.filter((o) => o.drop_id === live.id);
  check(mine.length === 1, `one order for the drop, not ${mine.length}`);
  const orderId = page.url().split("/").pop();
  check(mine[0].id === orderId, "the page shows the order that was placed");
  check((await api("GET", `/drops/${live.id}`)).stock.available === 1, "the retry took one unit, not two");

  step = "the hold is extended once and paid";
  await page.getByTestId("order").waitFor();
  check((await textOf(page, "order-status")) === "reserved", "the order is reserved");
  check((await textOf(page, "order-title")) === `Journey tee ${run}`, "the order names the product");
  await until("the hold countdown", async () => /^Held for 0?0:0[45]:\d\d$/.test(await textOf(page, "hold")));
  await page.getByTestId("extend").click();
  await until("the extend button gone", async () => (await page.getByTestId("extend").count()) === 0);
  await until("the extended hold", async () => /^Held for 0?0:(09|10):\d\d$/.test(await textOf(page, "hold")));
  await page.getByTestId("pay").click();
  await until("confirmed", async () => (await textOf(page, "order-status")) === "confirmed");
  check((await page.getByTestId("pay").count()) === 0, "nothing left to pay");
  const paid = await api("GET", `/orders/${orderId}`, { token });
  check(paid.status === "confirmed" && paid.extended_at, "the server holds the order confirmed and extended");

  step = "the buyer's orders list it";
  await page.getByRole("link", { name: "My orders" }).click();
  await page.getByTestId("orders").waitFor();
  const rows = page.getByTestId("order-row");
  check((await rows.count()) === 1, "one order row");
  check((await rows.first().textContent()).includes("confirmed"), "the row says confirmed");
  check((await rows.first().textContent()).includes(`Journey tee ${run}`), "the row names the product");

  step = "the drop sells out while the page watches";
  await page.goto(`${BASE}/#/drops/${live.id}`);
  await page.getByTestId("title").waitFor();
  await until("the event stream is open", async () => (await page.locator("#view[data-live]").count()) === 1);
  check((await textOf(page, "available")) === "1", "1 left");
  await api("POST", "/orders", { token: rival.token, key: `rival-2-${run}`, body: { drop_id: live.id, quantity: 1 } });
  await until("sold out on the page", async () => (await textOf(page, "available")) === "0");
  await until("the sold-out badge", async () => (await textOf(page, "status")) === "sold out");
  check(await page.getByTestId("buy").isDisabled(), "nothing left to buy");

  step = "a drop in sizes shows each size's stock, waits for a sold-out one and orders the chosen one";
  const sized = await api("POST", "/drops", {
    token: creator.token,
    body: {
      product_id: product.id,
      ends_at: new Date(now + 3_600_000).toISOString(),
      per_user_limit: 2,
      variants: [
        { sku: "s", label: "Small", total_stock: 1 },
        { sku: "m", label: "Medium", total_stock: 2 },
      ],
    },
  });
  await api("POST", "/orders", {
    token: rival.token,
    key: `rival-s-${run}`,
    body: { drop_id: sized.id, quantity: 1, sku: "s" },
  });
  await page.goto(`${BASE}/#/drops/${sized.id}`);
  await page.getByTestId("sizes").waitFor();
  await until("the event stream is open", async () => (await page.locator("#view[data-live]").count()) === 1);
  const small = page.locator('[data-testid=variant][data-sku="s"]');
  const medium = page.locator('[data-testid=variant][data-sku="m"]');
  check((await small.textContent()).includes("Small"), "the picker names the size by its label");
  check((await small.getByTestId("variant-available").textContent()) === "sold out", "Small is sold out");
  check((await medium.getByTestId("variant-available").textContent()) === "2 of 2 left", "Medium has 2 left");
  check((await textOf(page, "available")) === "2", "the drop's stock is the sum of its sizes");
  check(await medium.getByTestId("size").isChecked(), "a size with stock is chosen first");
  check(await page.getByTestId("join-waitlist").isHidden(), "no waitlist for a size in stock");
  await small.getByTestId("size").check();
  check(await page.getByTestId("buy").isDisabled(), "a sold-out size cannot be bought");
  await page.getByTestId("join-waitlist").click();
  await until("the place in line", async () => (await textOf(page, "waitlist-position")).startsWith("You are #1 in line"));
  const place = await api("GET", `/drops/${sized.id}/waitlist/me`, { token });
  check(place.sku === "s" && place.position === 1 && place.quantity === 1, `waiting for Small (${JSON.stringify(place)})`);
  await medium.getByTestId("size").check();
  check(!(await page.getByTestId("buy").isDisabled()), "Medium can be bought");
  await page.getByTestId("buy").click();
  await page.waitForURL(/#\/orders\/[0-9a-f-]+$/);
  const sizedOrder = await api("GET", `/orders/${page.url().split("/").pop()}`, { token });
  check(sizedOrder.sku === "m" && sizedOrder.drop_id === sized.id, `the order is for Medium (${sizedOrder.sku})`);
  check(
    (await api("GET", `/drops/${sized.id}`)).variants.find((v) => v.sku === "m").stock.available === 1,
    "one Medium left",
  );

  check(consoleErrors.length === 0, `no script errors (${consoleErrors.join("; ")})`);
  console.log("journey: done");
} catch (error) {
  const name = `journey-${run}`;
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true }).catch(() => {});
  writeFileSync(join(ARTIFACTS, `${name}.html`), await page.content().catch(() => ""));
  console.error(`journey failed at "${step}": ${error.stack || error}`);
  console.error(`page: ${page.url()}; screenshot and HTML in ${ARTIFACTS}/${name}.*`);
  if (consoleErrors.length) console.error(`script errors: ${consoleErrors.join("; ")}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
