// A buyer's waitlist journey: a size is sold out, the buyer joins its waitlist from
// the drop page, another buyer cancels elsewhere, and the unit is handed over: the
// offer appears in the buyer's notifications and orders, and is paid.
import { api, at, check, journey, logIn, openDrop, person, product, run, textOf, until, BASE } from "./lib.mjs";

const creator = await person("creator", "creator");
const item = await product(creator, "Waitlist boot");
const drop = await api("POST", "/drops", {
  token: creator.token,
  body: {
    product_id: item.id,
    ends_at: at(3_600_000),
    per_user_limit: 2,
    variants: [
      { sku: "s", label: "Small", total_stock: 1 },
      { sku: "m", label: "Medium", total_stock: 1 },
    ],
  },
});
const rival = await person("customer", "rival");
const rivalOrder = await api("POST", "/orders", {
  token: rival.token,
  key: `rival-s-${run}`,
  body: { drop_id: drop.id, quantity: 1, sku: "s" },
});
const buyer = await person("customer", "buyer");

await journey("waitlist", async (page, state) => {
  state.step = "the buyer logs in and finds Small sold out";
  await logIn(page, buyer);
  await openDrop(page, drop.id);
  const small = page.locator('[data-testid=variant][data-sku="s"]');
  check((await small.getByTestId("variant-available").textContent()) === "sold out", "Small is sold out");

  state.step = "the buyer joins Small's waitlist";
  await small.getByTestId("size").check();
  check(await page.getByTestId("buy").isDisabled(), "a sold-out size cannot be bought");
  await page.getByTestId("join-waitlist").click();
  await until("the place in line", async () => (await textOf(page, "waitlist-position")).startsWith("You are #1 in line"));

  state.step = "a cancel elsewhere hands the unit over while the page watches";
  await api("POST", `/orders/${rivalOrder.id}/cancel`, { token: rival.token });
  await until("the place is served", async () => (await textOf(page, "waitlist-position")) === "");
  check(
    (await small.getByTestId("variant-available").textContent()) === "sold out",
    "the unit went to the waitlist, not back on sale",
  );

  state.step = "the offer is in the notifications and opens the order";
  await page.getByRole("link", { name: "Notifications" }).click();
  const offer = page.locator('[data-testid=notification][data-kind="waitlist_offer"]');
  await until("the waitlist offer", async () => {
    if ((await offer.count()) === 1) return true;
    await page.reload();
    await page.getByTestId("notifications").waitFor({ timeout: 2000 }).catch(() => {});
    return (await offer.count()) === 1;
  });
  await offer.getByTestId("notification-order").click();
  await page.getByTestId("order").waitFor();
  check((await textOf(page, "order-status")) === "reserved", "the offer is a reserved order");
  check((await textOf(page, "order-sku")) === "s", "for Small");

  state.step = "the buyer's orders list it and it is paid";
  const orderId = page.url().split("/").pop();
  await page.getByRole("link", { name: "My orders" }).click();
  await page.getByTestId("orders").waitFor();
  check((await page.locator(`[data-testid=order-row][data-order="${orderId}"]`).count()) === 1, "the order is in My orders");
  await page.goto(`${BASE}/#/orders/${orderId}`);
  await page.getByTestId("pay").click();
  await until("confirmed", async () => (await textOf(page, "order-status")) === "confirmed");
  const paid = await api("GET", `/orders/${orderId}`, { token: buyer.token });
  check(paid.status === "confirmed" && paid.sku === "s", `the server holds it confirmed (${paid.status})`);
});
