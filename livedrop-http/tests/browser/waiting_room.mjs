// A buyer's waiting-room journey: the queue opens before the sale; the buyer joins
// from the drop page and waits; at the start the queue is shuffled and buyers are
// admitted one a second; the page learns it is the buyer's turn and buys with the
// Admission-Token, which a buyer who never queued does not have.
import { api, at, check, journey, logIn, openDrop, person, product, refusal, run, textOf, until } from "./lib.mjs";

const ADMIT_WAIT = 30_000;
const creator = await person("creator", "creator");
const item = await product(creator, "Queue console");
const drop = await api("POST", "/drops", {
  token: creator.token,
  body: {
    product_id: item.id,
    starts_at: at(12_000),
    ends_at: at(3_600_000),
    total_stock: 5,
    per_user_limit: 1,
    waiting_room: { admit_per_minute: 60, token_seconds: 300, opens_minutes_before: 10 },
  },
});
const buyer = await person("customer", "buyer");
const rival = await person("customer", "rival");
const latecomer = await person("customer", "latecomer");

await journey("waiting-room", async (page, state) => {
  state.step = "the buyer joins the queue before the start";
  await logIn(page, buyer);
  await openDrop(page, drop.id);
  check((await textOf(page, "status")) === "upcoming", "the drop has not started");
  await page.getByTestId("join-queue").click();
  await until("a place in the queue", async () => (await textOf(page, "queue-status")).startsWith("In the queue"));
  check(await page.getByTestId("join-queue").isHidden(), "joined once");
  await api("POST", `/drops/${drop.id}/queue`, { token: rival.token });
  const place = await api("GET", `/drops/${drop.id}/queue/me`, { token: buyer.token });
  check(place.status === "waiting" && place.position >= 1, `waiting (${JSON.stringify(place)})`);

  state.step = "at the start the buyer is admitted, and the page says so";
  const sent = [];
  await page.route("**/orders", (route) => {
    if (route.request().method() === "POST") sent.push(route.request().headers()["admission-token"]);
    return route.continue();
  });
  await until("admitted", async () => (await textOf(page, "queue-status")).startsWith("Admitted"), ADMIT_WAIT);
  await until("the live badge", async () => (await textOf(page, "status")) === "live");
  const admitted = await api("GET", `/drops/${drop.id}/queue/me`, { token: buyer.token });
  check(admitted.status === "admitted" && admitted.admission_token, "the server admitted the buyer");

  state.step = "a buyer who never queued is refused";
  const refused = await refusal("POST", "/orders", {
    token: latecomer.token,
    key: `late-${run}`,
    body: { drop_id: drop.id, quantity: 1 },
  });
  check(refused.status === 403 && refused.code === "admission_required", `403 admission_required (${JSON.stringify(refused)})`);

  state.step = "the admitted buyer buys with the token";
  await until("the buy button", async () => (await textOf(page, "buy")) === "Buy" && !(await page.getByTestId("buy").isDisabled()));
  await page.getByTestId("buy").click();
  await page.waitForURL(/#\/orders\/[0-9a-f-]+$/);
  check(sent.length === 1 && sent[0] === admitted.admission_token, "the order carried the admission token");
  const order = await api("GET", `/orders/${page.url().split("/").pop()}`, { token: buyer.token });
  check(order.status === "reserved" && order.drop_id === drop.id, `a reserved order (${order.status})`);
});
