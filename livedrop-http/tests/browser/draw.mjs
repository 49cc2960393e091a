// A buyer's draw journey: the commitment is shown before any entry; the buyer
// enters, replaces the entry with another size, withdraws and enters again; entries
// close a few seconds later and the draw runs; the page shows the win, the revealed
// seed (whose SHA-256 is the commitment) and the public results, which the page
// checks itself; the won order is paid.
import { createHash } from "node:crypto";
import { api, at, check, journey, logIn, openDrop, person, product, refusal, run, textOf, until } from "./lib.mjs";

const DRAW_WAIT = 40_000;
const creator = await person("creator", "creator");
const item = await product(creator, "Raffle jacket");
const drop = await api("POST", "/drops", {
  token: creator.token,
  body: {
    product_id: item.id,
    allocation: "draw",
    entries_close_at: at(15_000),
    ends_at: at(3_600_000),
    per_user_limit: 1,
    variants: [
      { sku: "s", label: "Small", total_stock: 1 },
      { sku: "m", label: "Medium", total_stock: 1 },
    ],
  },
});
check(drop.draw && /^[0-9a-f]{64}$/.test(drop.draw.commitment) && drop.draw.seed === null, "a committed, unrevealed draw");
// Two rivals want the single Small: one of them loses. Only the buyer wants Medium.
const rivals = [await person("customer", "rival-a"), await person("customer", "rival-b")];
const buyer = await person("customer", "buyer");

await journey("draw", async (page, state) => {
  state.step = "a draw drop cannot be bought first come";
  const refused = await refusal("POST", "/orders", {
    token: buyer.token,
    key: `draw-${run}`,
    body: { drop_id: drop.id, quantity: 1, sku: "m" },
  });
  check(refused.status === 409 && refused.code === "drop_is_draw", `409 drop_is_draw (${JSON.stringify(refused)})`);

  state.step = "the drop page shows the commitment and the countdown to entries close";
  await logIn(page, buyer);
  await openDrop(page, drop.id);
  check((await textOf(page, "commitment")) === drop.draw.commitment, "the published commitment");
  await until("the entries countdown", async () => /^Entries close in 00:00:\d\d$/.test(await textOf(page, "entries-countdown")));
  check(await page.getByTestId("buy").isHidden(), "no buy button on a draw");

  state.step = "the buyer enters for Small, replaces it with Medium, withdraws and enters again";
  await page.locator('[data-testid=variant][data-sku="s"]').getByTestId("size").check();
  await page.getByTestId("enter").click();
  await until("the entry", async () => (await textOf(page, "entry")).startsWith("Your entry: 1 × Small"));
  check((await textOf(page, "enter")) === "Replace entry", "the entry can be replaced");
  await page.locator('[data-testid=variant][data-sku="m"]').getByTestId("size").check();
  await page.getByTestId("enter").click();
  await until("the replaced entry", async () => (await textOf(page, "entry")).startsWith("Your entry: 1 × Medium"));
  await page.getByTestId("withdraw").click();
  await until("the withdrawn entry", async () => (await textOf(page, "entry")).startsWith("You have not entered"));
  await page.getByTestId("enter").click();
  await until("the entry again", async () => (await textOf(page, "entry")).startsWith("Your entry: 1 × Medium"));
  const mine = await api("GET", `/drops/${drop.id}/entries/me`, { token: buyer.token });
  check(mine.sku === "m" && mine.quantity === 1 && mine.result === "pending", `one pending entry (${JSON.stringify(mine)})`);
  check((await textOf(page, "entry")).includes(mine.token), "the page shows the entry token");
  for (const rival of rivals) {
    await api("PUT", `/drops/${drop.id}/entries/me`, { token: rival.token, body: { sku: "s", quantity: 1 } });
  }

  state.step = "entries close, the draw runs and the page shows the win and the seed";
  await until("the win", async () => (await textOf(page, "draw-result")).startsWith("You won"), DRAW_WAIT);
  const seed = await textOf(page, "seed");
  check(/^[0-9a-f]{64}$/.test(seed), `a revealed seed (${seed})`);
  check(createHash("sha256").update(seed).digest("hex") === drop.draw.commitment, "the seed's hash is the commitment");
  check(await page.getByTestId("enter").isHidden(), "entries are closed");

  state.step = "the public results list every entry in rank order, checked in the page";
  await page.getByTestId("results-link").click();
  await until("the verdict", async () => (await textOf(page, "verdict")).startsWith("Verified"));
  const rows = page.getByTestId("result-row");
  check((await rows.count()) === 3, "three entries");
  const results = await rows.evaluateAll((trs) => trs.map((tr) => tr.lastElementChild.textContent));
  check(results.filter((r) => r === "won").length === 2 && results.includes("lost"), `two won, one lost (${results})`);
  check((await page.locator(`[data-testid=result-row][data-token="${mine.token}"]`).textContent()).includes("won"), "the buyer's entry won");

  state.step = "the won order is paid";
  await page.goBack();
  await page.getByTestId("won-order").click();
  await page.getByTestId("order").waitFor();
  check((await textOf(page, "order-status")) === "reserved", "the win is a reserved order");
  await page.getByTestId("pay").click();
  await until("confirmed", async () => (await textOf(page, "order-status")) === "confirmed");
  const entry = await api("GET", `/drops/${drop.id}/entries/me`, { token: buyer.token });
  const order = await api("GET", `/orders/${entry.order_id}`, { token: buyer.token });
  check(entry.result === "won" && order.status === "confirmed" && order.sku === "m", `paid for Medium (${order.status})`);
});
