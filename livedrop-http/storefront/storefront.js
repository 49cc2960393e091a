// The livedrop storefront: live and upcoming drops, a drop's page with its countdown
// and live stock (per size when it has several), buying the chosen size with an
// Idempotency-Key that survives a retry, a waitlist for a sold-out size, the buyer's
// orders, and register / log in. Plain JavaScript over the public API.
// Every allocation mode has its own panel: first come (buy), a draw (enter, replace,
// withdraw, the commitment, the result and the revealed seed, the public results
// recomputed in the browser) and a waiting room (join, the place and estimated wait
// from the `queue` events, then a buy that carries the Admission-Token).
"use strict";

const SESSION = "livedrop.session";
const RETURN_TO = "livedrop.returnTo";
const PENDING = "livedrop.pending.";

// ---------------------------------------------------------------------------
// DOM: every text goes in as a text node, never as markup.

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const view = () => document.getElementById("view");

function show(...nodes) {
  view().replaceChildren(...nodes);
}

function alertBox(message) {
  const box = document.getElementById("alert");
  if (!message) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.hidden = false;
  box.textContent = message;
}

// ---------------------------------------------------------------------------
// Session and API.

const session = {
  load() {
    try {
      const s = JSON.parse(localStorage.getItem(SESSION));
      if (s && s.token && new Date(s.expires_at) > new Date()) return s;
    } catch (_) {
      // An unreadable session is no session.
    }
    return null;
  },
  save(s) {
    localStorage.setItem(SESSION, JSON.stringify(s));
  },
  clear() {
    localStorage.removeItem(SESSION);
  },
};

class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /// Whether the request may have been decided without its answer reaching us, or
  /// may succeed if sent again unchanged: then a retry must reuse its key.
  get retryable() {
    return (
      this.status === 0 ||
      this.status === 408 ||
      this.status === 429 ||
      this.status >= 500 ||
      this.code === "idempotency_key_in_flight"
    );
  }

  describe() {
    return this.status === 0 ? this.message : `${this.message} (${this.code})`;
  }
}

async function api(method, path, { body, key, headers: extra } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const s = session.load();
  if (s) headers.Authorization = `Bearer ${s.token}`;
  if (key) headers["Idempotency-Key"] = key;
  let response;
  let text;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    text = await response.text();
  } catch (_) {
    throw new ApiError(0, "network", "The server's answer did not arrive. Retrying is safe.");
  }
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    if (response.status === 401 && s) {
      session.clear();
      renderNav();
    }
    throw new ApiError(
      response.status,
      (data && data.code) || `http_${response.status}`,
      (data && data.message) || response.statusText || "request failed",
      data && data.details,
    );
  }
  return data;
}

/// A fresh idempotency key (works outside secure contexts too).
function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The purchase in flight for a drop: its key and quantity, kept until an answer
// arrives, so "Retry" sends the same key and the server answers with the same order.
const pending = {
  load(dropId) {
    try {
      return JSON.parse(sessionStorage.getItem(PENDING + dropId));
    } catch (_) {
      return null;
    }
  },
  save(dropId, p) {
    sessionStorage.setItem(PENDING + dropId, JSON.stringify(p));
  },
  clear(dropId) {
    sessionStorage.removeItem(PENDING + dropId);
  },
};

// ---------------------------------------------------------------------------
// Formatting.

function money(cents, currency) {
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(cents / 100);
  } catch (_) {
    return `${(cents / 100).toFixed(2)} ${currency}`;
  }
}

function duration(ms) {
  const total = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(total / 86400);
  const hms = [Math.floor(total / 3600) % 24, Math.floor(total / 60) % 60, total % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  return d > 0 ? `${d}d ${hms}` : hms;
}

const STATUS_TEXT = {
  scheduled: "upcoming",
  live: "live",
  sold_out: "sold out",
  ended: "ended",
  cancelled: "cancelled",
};

function statusBadge(status) {
  return h("span", { class: `status ${status}`, "data-testid": "status" }, STATUS_TEXT[status] || status);
}

/// `load` with its answers kept per key, so each is asked for once; a failed load is
/// forgotten, and asked for again next time.
function once(load) {
  const answers = new Map();
  return async (key) => {
    if (!answers.has(key)) answers.set(key, load(key));
    try {
      return await answers.get(key);
    } catch (e) {
      answers.delete(key);
      throw e;
    }
  };
}

const product = once((id) => api("GET", `/products/${id}`));

/// The title of the product a drop releases.
const dropTitle = once(async (dropId) => (await product((await api("GET", `/drops/${dropId}`)).product_id)).title);

// ---------------------------------------------------------------------------
// What runs while a page is shown (a countdown, an event stream), stopped on leaving.

let teardown = [];

function onLeave(fn) {
  teardown.push(fn);
}

function leave() {
  for (const fn of teardown) fn();
  teardown = [];
}

function every(ms, fn) {
  fn();
  const id = setInterval(fn, ms);
  onLeave(() => clearInterval(id));
}

// ---------------------------------------------------------------------------
// Pages.

function renderNav() {
  const nav = document.getElementById("nav");
  const s = session.load();
  if (s) {
    nav.replaceChildren(
      h("span", { "data-testid": "who" }, s.user.display_name),
      h("a", { href: "#/orders" }, "My orders"),
      h("a", { href: "#/notifications" }, "Notifications"),
      h(
        "button",
        {
          class: "secondary",
          type: "button",
          onclick: () => {
            session.clear();
            renderNav();
            route();
          },
        },
        "Log out",
      ),
    );
  } else {
    nav.replaceChildren(h("a", { href: "#/login" }, "Log in"), h("a", { href: "#/register" }, "Register"));
  }
}

async function homePage() {
  const hash = location.hash;
  show(h("p", { class: "muted" }, "Loading drops…"));
  const lists = await Promise.all(
    ["live", "sold_out", "scheduled"].map((status) => api("GET", `/drops?status=${status}&limit=100`)),
  );
  const drops = lists.flatMap((page) => page.items);
  if (drops.length === 0) {
    show(h("h1", {}, "Drops"), h("p", { class: "muted", "data-testid": "empty" }, "No live or upcoming drops."));
    return;
  }
  const cards = await Promise.all(drops.map(dropCard));
  // The buyer may have moved on while the drops loaded (e.g. right after logging in).
  if (location.hash !== hash) return;
  show(h("h1", {}, "Drops"), h("div", { class: "grid", "data-testid": "drops" }, cards));
}

async function dropCard(drop) {
  const p = await product(drop.product_id);
  const when =
    drop.status === "scheduled"
      ? `starts ${new Date(drop.starts_at).toLocaleString()}`
      : `ends ${new Date(drop.ends_at).toLocaleString()}`;
  return h(
    "a",
    { class: "card", href: `#/drops/${drop.id}`, "data-testid": "drop-card", "data-drop": drop.id },
    h("h3", {}, p.title),
    h(
      "p",
      {},
      statusBadge(drop.status),
      " ",
      money(p.price_cents, p.currency),
      drop.draw ? h("span", { class: "mode-tag", "data-testid": "mode" }, "draw") : null,
      drop.waiting_room ? h("span", { class: "mode-tag", "data-testid": "mode" }, "waiting room") : null,
    ),
    h("p", { class: "stock muted" }, `${drop.stock.available} of ${drop.stock.total} left · ${when}`),
  );
}

async function dropPage(id) {
  const hash = location.hash;
  show(h("p", { class: "muted" }, "Loading…"));
  let drop = await api("GET", `/drops/${id}`);
  const p = await product(drop.product_id);
  if (location.hash !== hash) return;

  const status = h("span", {}, statusBadge(drop.status));
  const available = h("strong", { "data-testid": "available" }, drop.stock.available);
  const total = h("span", { "data-testid": "total" }, drop.stock.total);
  const countdown = h("span", { class: "countdown", "data-testid": "countdown" });
  const quantity = h("input", {
    type: "number",
    min: 1,
    max: drop.per_user_limit,
    value: 1,
    "data-testid": "quantity",
    "aria-label": "Quantity",
  });
  const buyButton = h("button", { type: "button", "data-testid": "buy" }, "Buy");
  const buyNote = h("p", { class: "muted", "data-testid": "buy-note" });

  // Sizes: a drop of several variants shows a picker with each one's stock; the
  // chosen sku is what Buy orders and what the waitlist waits for.
  const sized = drop.variants.length > 1;
  let chosen = (drop.variants.find((v) => v.stock.available > 0) || drop.variants[0]).sku;
  const variantOf = (sku) => drop.variants.find((v) => v.sku === sku);
  const sizeStock = new Map();
  const sizes = sized
    ? h(
        "fieldset",
        { class: "sizes", "data-testid": "sizes" },
        h("legend", {}, "Size"),
        drop.variants.map((v) => {
          const left = h("span", { class: "muted stock", "data-testid": "variant-available" });
          sizeStock.set(v.sku, left);
          const radio = h("input", {
            type: "radio",
            name: "sku",
            value: v.sku,
            checked: v.sku === chosen,
            "data-testid": "size",
            onchange: () => {
              chosen = v.sku;
              refreshBuy();
            },
          });
          return h("label", { class: "size", "data-testid": "variant", "data-sku": v.sku }, radio, " ", v.label || v.sku, " ", left);
        }),
      )
    : null;
  const waitButton = h("button", { type: "button", class: "secondary", "data-testid": "join-waitlist", hidden: true }, "Join waitlist");
  const waitNote = h("p", { class: "muted", "data-testid": "waitlist-position" });
  // The buyer's place on this drop's waitlist, if any.
  let place = null;
  // The allocation mode's own panel: a draw's entry and result, or a waiting room's
  // queue. A first-come drop without a waiting room has neither.
  const ctx = {
    drop: () => drop,
    chosen: () => chosen,
    quantity: () => Number.parseInt(quantity.value, 10),
    label: (sku) => variantOf(sku)?.label || sku,
    refresh: () => refreshBuy(),
    update: (fresh) => setStock(fresh.stock, fresh.status, fresh.variants, fresh),
  };
  const draw = drop.draw ? drawPanel(ctx) : null;
  const room = drop.waiting_room ? queuePanel(ctx) : null;

  const paintSizes = () => {
    for (const v of drop.variants) {
      const left = sizeStock.get(v.sku);
      if (left) left.textContent = v.stock.available > 0 ? `${v.stock.available} of ${v.stock.total} left` : "sold out";
    }
  };

  const setStock = (stock, newStatus, variants, fresh) => {
    drop = { ...drop, ...(fresh || {}), stock, status: newStatus || drop.status };
    if (variants) {
      drop.variants = drop.variants.map((v) => {
        const moved = variants.find((m) => m.sku === v.sku);
        return moved ? { ...v, stock: moved.stock } : v;
      });
    }
    available.textContent = stock.available;
    total.textContent = stock.total;
    status.replaceChildren(statusBadge(drop.status));
    paintSizes();
    refreshBuy();
  };

  function refreshBuy() {
    const p = pending.load(drop.id);
    const signedIn = session.load() !== null;
    const variant = variantOf(chosen);
    const open = drop.status === "live" || drop.status === "sold_out";
    const waiting = place && place.sku === chosen;
    waitButton.hidden = !(signedIn && open && variant.stock.available === 0);
    waitButton.textContent = waiting ? "Update waitlist" : "Join waitlist";
    waitNote.textContent = place
      ? `You are #${place.position} in line for ${place.quantity} × ${variantOf(place.sku)?.label || place.sku}`
      : "";
    if (draw) {
      // A draw is entered, not bought: its panel has the buttons.
      buyButton.hidden = true;
      waitButton.hidden = true;
      draw.paint();
      return;
    }
    if (room) room.paint();
    if (p) {
      quantity.value = p.quantity;
      quantity.disabled = true;
      buyButton.textContent = "Retry order";
      buyButton.disabled = false;
      return;
    }
    quantity.disabled = false;
    buyButton.textContent = signedIn ? "Buy" : "Log in to buy";
    buyButton.disabled = signedIn && !(drop.status === "live" && variant.stock.available > 0);
    if (room && signedIn && !room.token()) {
      buyButton.textContent = "Buy when admitted";
      buyButton.disabled = true;
    }
  }

  waitButton.addEventListener("click", async () => {
    const n = Number.parseInt(quantity.value, 10);
    if (!Number.isInteger(n) || n < 1) {
      alertBox("Choose a quantity of at least 1.");
      return;
    }
    waitButton.disabled = true;
    try {
      place = await api("PUT", `/drops/${drop.id}/waitlist/me`, { body: { sku: chosen, quantity: n } });
      alertBox(null);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      alertBox(e.describe());
    } finally {
      waitButton.disabled = false;
      refreshBuy();
    }
  });

  async function readPlace() {
    if (!session.load()) return;
    try {
      place = await api("GET", `/drops/${drop.id}/waitlist/me`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      place = null; // 404: not waiting (or served: the order is in "My orders")
    }
    refreshBuy();
  }

  buyButton.addEventListener("click", async () => {
    if (!session.load()) {
      sessionStorage.setItem(RETURN_TO, location.hash);
      location.hash = "#/login";
      return;
    }
    const n = Number.parseInt(quantity.value, 10);
    if (!Number.isInteger(n) || n < 1) {
      alertBox("Choose a quantity of at least 1.");
      return;
    }
    let attempt = pending.load(drop.id);
    if (!attempt) {
      attempt = { key: newKey(), quantity: n, sku: chosen };
      pending.save(drop.id, attempt);
    }
    buyButton.disabled = true;
    buyNote.textContent = "Ordering…";
    try {
      const admission = room ? room.token() : null;
      const order = await api("POST", "/orders", {
        body: { drop_id: drop.id, quantity: attempt.quantity, sku: attempt.sku || chosen },
        key: attempt.key,
        headers: admission ? { "Admission-Token": admission } : undefined,
      });
      pending.clear(drop.id);
      buyNote.textContent = "";
      location.hash = `#/orders/${order.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (room && e.code === "admission_required") room.read();
      if (e.retryable) {
        buyNote.textContent = "The order may have gone through: Retry sends the same request, and never orders twice.";
      } else {
        pending.clear(drop.id);
        buyNote.textContent = "";
      }
      alertBox(e.describe());
      refreshBuy();
    }
  });

  every(1000, () => {
    const now = Date.now();
    // A hand-over may leave the stock as it was (reserved for the rival, then for
    // this buyer), so no stock event says it happened: ask now and then too.
    if (place && now % 5000 < 1000) readPlace();
    if (drop.status === "scheduled") {
      const left = new Date(drop.starts_at) - now;
      countdown.textContent = `Starts in ${duration(left)}`;
      if (left <= 0) reload();
    } else if (drop.status === "live") {
      const left = new Date(drop.ends_at) - now;
      countdown.textContent = `Ends in ${duration(left)}`;
      if (left <= 0) reload();
    } else {
      countdown.textContent = "";
    }
  });

  let reloading = false;
  async function reload() {
    if (reloading) return;
    reloading = true;
    try {
      const fresh = await api("GET", `/drops/${drop.id}`);
      setStock(fresh.stock, fresh.status, fresh.variants, fresh);
    } catch (_) {
      // The stream or the next tick brings it.
    } finally {
      setTimeout(() => {
        reloading = false;
      }, 2000);
    }
  }

  const stream = new EventSource(`/drops/${drop.id}/events`);
  stream.addEventListener("stock", (e) => {
    const data = JSON.parse(e.data);
    setStock(data.stock, data.status, data.variants);
    // A size that moved may have served (or moved) the buyer's place.
    if (place) readPlace();
    // Units a winner gave back may have gone to this buyer's entry.
    if (draw) draw.moved();
  });
  stream.addEventListener("queue", (e) => {
    if (room) room.moved(JSON.parse(e.data));
  });
  stream.addEventListener("status", (e) => {
    const data = JSON.parse(e.data);
    setStock(drop.stock, data.status);
  });
  stream.addEventListener("open", () => view().setAttribute("data-live", "1"));
  onLeave(() => {
    stream.close();
    view().removeAttribute("data-live");
  });

  paintSizes();
  refreshBuy();
  if (!draw) readPlace();
  if (draw) draw.read();
  if (room) room.read();
  show(
    h(
      "section",
      { class: "panel", "data-testid": "drop", "data-drop": drop.id },
      h("h1", { "data-testid": "title" }, p.title),
      p.description ? h("p", {}, p.description) : null,
      h("p", {}, status, " ", h("strong", {}, money(p.price_cents, p.currency)), " · ", countdown),
      h("p", { class: "stock" }, available, " of ", total, " available · at most ", drop.per_user_limit, " per buyer"),
      sizes,
      h("div", { class: "row" }, h("label", {}, "Quantity", quantity), buyButton, waitButton),
      buyNote,
      waitNote,
      draw ? draw.node : null,
      room ? room.node : null,
    ),
  );
}

function sendToLogin() {
  sessionStorage.setItem(RETURN_TO, location.hash);
  location.hash = "#/login";
}

/// A draw drop's panel: the commitment, the countdown to entries close, entering
/// (or replacing) with the chosen size and quantity, withdrawing, and after the draw
/// the buyer's result, the revealed seed and the public results.
function drawPanel(ctx) {
  const id = ctx.drop().id;
  // The buyer's entry (`GET /drops/{id}/entries/me`), null when not entered.
  let entry = null;
  let polling = false;
  const closes = h("span", { class: "countdown", "data-testid": "entries-countdown" });
  const commitment = h("code", { class: "hash", "data-testid": "commitment" });
  const seed = h("code", { class: "hash", "data-testid": "seed" });
  const seedLine = h("p", { hidden: true }, "Seed revealed: ", seed);
  const note = h("p", { "data-testid": "entry" });
  const result = h("p", { class: "result", "data-testid": "draw-result" });
  const results = h("a", { href: `#/drops/${id}/results`, "data-testid": "results-link", hidden: true }, "Public results");
  const enter = h("button", { type: "button", "data-testid": "enter" }, "Enter the draw");
  const withdraw = h("button", { type: "button", class: "secondary", "data-testid": "withdraw", hidden: true }, "Withdraw");

  const drawn = () => Boolean(ctx.drop().draw.seed);
  const open = () => {
    const d = ctx.drop();
    const now = Date.now();
    return !drawn() && d.status !== "cancelled" && now >= new Date(d.starts_at) && now < new Date(d.draw.entries_close_at);
  };

  async function read() {
    if (!session.load()) return paint();
    try {
      entry = await api("GET", `/drops/${id}/entries/me`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      entry = null; // 404: not entered
    }
    paint();
  }

  function paint() {
    const d = ctx.drop();
    const signedIn = session.load() !== null;
    commitment.textContent = d.draw.commitment;
    enter.hidden = !open();
    enter.textContent = !signedIn ? "Log in to enter" : entry ? "Replace entry" : "Enter the draw";
    withdraw.hidden = !(open() && entry);
    note.textContent = entry
      ? `Your entry: ${entry.quantity} × ${ctx.label(entry.sku)} · token ${entry.token}`
      : signedIn && open()
        ? "You have not entered yet. Entering reserves nothing: winners are drawn when entries close."
        : "";
    seedLine.hidden = !drawn();
    seed.textContent = d.draw.seed || "";
    results.hidden = !drawn();
    if (!entry || !drawn() || entry.result === "pending") {
      result.replaceChildren(entry && drawn() ? "Your entry is being drawn…" : "");
    } else if (entry.result === "won") {
      result.replaceChildren(
        `You won (rank ${entry.rank}). `,
        h("a", { href: `#/orders/${entry.order_id}`, "data-testid": "won-order" }, "Pay for your order"),
      );
    } else {
      result.replaceChildren(`You did not win this time (rank ${entry.rank}). If a winner does not pay, the units go to the next in line.`);
    }
  }

  async function send(method) {
    const n = ctx.quantity();
    if (method === "PUT" && (!Number.isInteger(n) || n < 1)) {
      alertBox("Choose a quantity of at least 1.");
      return;
    }
    enter.disabled = true;
    withdraw.disabled = true;
    try {
      if (method === "PUT") {
        entry = await api("PUT", `/drops/${id}/entries/me`, { body: { sku: ctx.chosen(), quantity: n } });
      } else {
        await api("DELETE", `/drops/${id}/entries/me`);
        entry = null;
      }
      alertBox(null);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      alertBox(e.describe());
    } finally {
      enter.disabled = false;
      withdraw.disabled = false;
      paint();
    }
  }

  enter.addEventListener("click", () => (session.load() ? send("PUT") : sendToLogin()));
  withdraw.addEventListener("click", () => send("DELETE"));

  // Once entries close, ask for the drop until its seed is out, then for the result.
  async function poll() {
    if (polling) return;
    polling = true;
    try {
      const fresh = await api("GET", `/drops/${id}`);
      ctx.update(fresh);
      if (drawn()) await read();
    } catch (_) {
      // The next tick asks again.
    } finally {
      polling = false;
    }
  }

  every(1000, () => {
    const d = ctx.drop();
    const now = Date.now();
    if (drawn()) closes.textContent = `Drawn ${new Date(d.draw.drawn_at).toLocaleString()}`;
    else if (now < new Date(d.starts_at)) closes.textContent = `Entries open in ${duration(new Date(d.starts_at) - now)}`;
    else if (now < new Date(d.draw.entries_close_at)) closes.textContent = `Entries close in ${duration(new Date(d.draw.entries_close_at) - now)}`;
    else {
      closes.textContent = "Drawing…";
      poll();
    }
    // The window opening or closing changes the buttons.
    paint();
  });

  const node = h(
    "div",
    { class: "mode", "data-testid": "draw" },
    h("h2", {}, "Draw"),
    h("p", {}, closes),
    h("p", { class: "muted" }, "Commitment (SHA-256 of the secret seed, published before any entry): ", commitment),
    h("div", { class: "row" }, enter, withdraw),
    note,
    result,
    seedLine,
    h("p", {}, results),
  );
  return {
    node,
    paint,
    read,
    moved: () => {
      if (drawn() && entry && entry.result !== "won") read();
    },
  };
}

/// A waiting-room drop's panel: joining the queue, the place and estimated wait
/// (asked again when a `queue` event says the admitted part reached it), and the
/// admission token that Buy sends while it is valid.
function queuePanel(ctx) {
  const id = ctx.drop().id;
  // The buyer's place (`GET /drops/{id}/queue/me`), null when not in the queue.
  let place = null;
  let reading = false;
  const join = h("button", { type: "button", class: "secondary", "data-testid": "join-queue" }, "Join the queue");
  const note = h("p", { "data-testid": "queue-status" });

  const opensAt = () => {
    const d = ctx.drop();
    return new Date(new Date(d.starts_at) - d.waiting_room.opens_minutes_before * 60_000);
  };
  const token = () =>
    place && place.status === "admitted" && place.admission_token && new Date(place.expires_at) > new Date()
      ? place.admission_token
      : null;

  async function read() {
    if (!session.load() || reading) return paint();
    reading = true;
    try {
      place = await api("GET", `/drops/${id}/queue/me`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      place = null; // 404: not in the queue
    } finally {
      reading = false;
    }
    ctx.refresh();
  }

  function paint() {
    const d = ctx.drop();
    const signedIn = session.load() !== null;
    const joinable = ["scheduled", "live"].includes(d.status) && new Date() >= opensAt();
    join.hidden = !joinable || (place !== null && (place.status === "waiting" || token() !== null));
    join.textContent = signedIn ? "Join the queue" : "Log in to join the queue";
    if (token()) {
      note.textContent = `Admitted: buy before ${new Date(place.expires_at).toLocaleTimeString()}`;
    } else if (place && place.status === "waiting") {
      const wait = place.estimated_wait_seconds;
      note.textContent =
        new Date() < new Date(d.starts_at)
          ? `In the queue: the order is drawn at random when the sale opens (for now #${place.position})`
          : `You are #${place.position} in the queue · about ${duration((wait || 0) * 1000)} to wait`;
    } else if (place) {
      note.textContent = "Your admission ran out: join the queue again.";
    } else if (new Date() < opensAt()) {
      note.textContent = `The queue opens ${opensAt().toLocaleString()}`;
    } else {
      note.textContent = "This drop has a waiting room: join the queue to buy.";
    }
  }

  join.addEventListener("click", async () => {
    if (!session.load()) return sendToLogin();
    join.disabled = true;
    try {
      place = await api("POST", `/drops/${id}/queue`);
      alertBox(null);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      alertBox(e.describe());
    } finally {
      join.disabled = false;
      ctx.refresh();
    }
  });

  // While waiting, the place and the wait are asked for now and then too: the
  // shuffle at the start moves every place at once.
  every(1000, () => {
    paint();
    if (place && place.status === "waiting" && Date.now() % 5000 < 1000) read();
    if (place && place.status === "admitted" && !token()) ctx.refresh();
  });

  const node = h("div", { class: "mode", "data-testid": "waiting-room" }, h("h2", {}, "Waiting room"), note, h("div", { class: "row" }, join));
  return {
    node,
    paint,
    read,
    token,
    moved: (queue) => {
      if (place && place.status === "waiting" && place.position <= queue.admitted_through) read();
    },
  };
}

function orderRow(order, title) {
  return h(
    "tr",
    { "data-testid": "order-row", "data-order": order.id },
    h("td", {}, h("a", { href: `#/orders/${order.id}` }, title)),
    h("td", {}, order.quantity),
    h("td", {}, money(order.total_cents, order.currency)),
    h("td", {}, order.status),
    h("td", {}, new Date(order.created_at).toLocaleString()),
  );
}

async function ordersPage() {
  if (!requireSession()) return;
  const page = await api("GET", "/orders?limit=100");
  const titles = await Promise.all(page.items.map((o) => dropTitle(o.drop_id)));
  show(
    h("h1", {}, "My orders"),
    page.items.length === 0
      ? h("p", { class: "muted" }, "No orders yet.")
      : h(
          "table",
          { "data-testid": "orders" },
          h("thead", {}, h("tr", {}, ["Product", "Units", "Total", "Status", "Placed"].map((t) => h("th", {}, t)))),
          h("tbody", {}, page.items.map((o, i) => orderRow(o, titles[i]))),
        ),
  );
}

async function orderPage(id) {
  if (!requireSession()) return;
  let order = await api("GET", `/orders/${id}`);
  const title = await dropTitle(order.drop_id);
  const status = h("strong", { "data-testid": "order-status" }, order.status);
  const hold = h("span", { class: "countdown", "data-testid": "hold" });
  const actions = h("div", { class: "row" });

  const act = (label, path, testid, style) =>
    h(
      "button",
      {
        type: "button",
        class: style,
        "data-testid": testid,
        onclick: async (e) => {
          e.target.disabled = true;
          try {
            order = await api("POST", `/orders/${order.id}/${path}`);
            alertBox(null);
            paint();
          } catch (err) {
            if (!(err instanceof ApiError)) throw err;
            alertBox(err.describe());
            e.target.disabled = false;
          }
        },
      },
      label,
    );

  function paint() {
    status.textContent = order.status;
    const buttons = [];
    if (order.status === "reserved") {
      buttons.push(act("Pay", "confirm", "pay"));
      if (!order.extended_at) buttons.push(act("Extend hold", "extend", "extend", "secondary"));
      buttons.push(act("Cancel", "cancel", "cancel", "secondary"));
    }
    actions.replaceChildren(...buttons);
  }

  every(1000, () => {
    if (order.status !== "reserved") {
      hold.textContent = "";
      return;
    }
    const left = new Date(order.reserved_until) - Date.now();
    hold.textContent = left > 0 ? `Held for ${duration(left)}` : "The hold has run out";
  });

  paint();
  show(
    h(
      "section",
      { class: "panel", "data-testid": "order", "data-order": order.id },
      h("h1", {}, "Order: ", h("span", { "data-testid": "order-title" }, title)),
      h("p", {}, "Status: ", status, " · ", hold),
      order.sku && order.sku !== "default" ? h("p", {}, "Size: ", h("span", { "data-testid": "order-sku" }, order.sku)) : null,
      h("p", {}, `${order.quantity} × ${money(order.unit_price_cents, order.currency)} = `, h("strong", {}, money(order.total_cents, order.currency))),
      h("p", {}, h("a", { href: `#/drops/${order.drop_id}` }, "Back to the drop")),
      actions,
    ),
  );
}

/// Lower-case hex SHA-256 of a text, or null where the browser offers no digest
/// (outside a secure context).
async function sha256(text) {
  if (!globalThis.crypto || !crypto.subtle) return null;
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/// A drawn drop's public results: the seed, its commitment and every entry in rank
/// order, checked here in the browser (the commitment is the seed's hash; the ranks
/// follow SHA-256(seed + ":" + token) ascending).
async function resultsPage(id) {
  const drop = await api("GET", `/drops/${id}`);
  const title = (await product(drop.product_id)).title;
  if (!drop.draw || !drop.draw.seed) {
    show(h("h1", {}, `Draw: ${title}`), h("p", { "data-testid": "verdict" }, "Not drawn yet."));
    return;
  }
  const entries = [];
  let cursor = null;
  do {
    const page = await api("GET", `/drops/${id}/draw/entries?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    entries.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  const committed = await sha256(drop.draw.seed);
  const keyed = await Promise.all(entries.map(async (e) => ({ e, key: await sha256(`${drop.draw.seed}:${e.token}`) })));
  let verdict;
  if (committed === null) verdict = "This browser cannot compute SHA-256 here; check with examples/verify_draw.rs.";
  else {
    const sorted = [...keyed].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    const ranked = sorted.every((k, i) => k.e.rank === i + 1);
    const sameOrder = sorted.every((k, i) => k.e.token === entries[i].token);
    verdict =
      committed === drop.draw.commitment && ranked && sameOrder
        ? `Verified: the seed matches the commitment, and the ${entries.length} ranks follow from the seed.`
        : "Mismatch: the published result is not the one the seed gives.";
  }
  show(
    h("h1", {}, `Draw: ${title}`),
    h("p", { "data-testid": "verdict" }, verdict),
    h("p", { class: "muted" }, "Commitment: ", h("code", { class: "hash" }, drop.draw.commitment)),
    h("p", { class: "muted" }, "Seed: ", h("code", { class: "hash" }, drop.draw.seed)),
    h(
      "table",
      { "data-testid": "results" },
      h("thead", {}, h("tr", {}, ["Rank", "Entry token", "Size", "Units", "Result"].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        entries.map((e) =>
          h(
            "tr",
            { "data-testid": "result-row", "data-token": e.token },
            h("td", {}, e.rank),
            h("td", {}, h("code", {}, e.token)),
            h("td", {}, e.sku),
            h("td", {}, e.quantity),
            h("td", {}, e.result),
          ),
        ),
      ),
    ),
    h("p", {}, h("a", { href: `/drops/${id}/draw/entries?limit=100` }, "The same list as JSON"), " · ", h("a", { href: `#/drops/${id}` }, "Back to the drop")),
  );
}

const NOTICE_TEXT = {
  waitlist_offer: "A unit you waited for is yours: pay for it before the hold runs out",
  waitlist_skipped: "Your waitlist place was skipped (the per-buyer limit)",
  waitlist_closed: "The drop ended before your waitlist turn",
  draw_won: "You won a draw: pay for your order",
  draw_lost: "You did not win a draw",
  drop_live: "A drop you follow is live",
  drop_scheduled: "A drop you follow is scheduled",
  order_confirmed: "Your order is confirmed",
  order_expired: "Your hold ran out",
};

/// The order a notification names, if any (its payload's `order` or `order_id`).
function noticeOrder(payload) {
  if (!payload) return null;
  if (payload.order && payload.order.id) return payload.order.id;
  return payload.order_id || null;
}

async function notificationsPage() {
  if (!requireSession()) return;
  const page = await api("GET", "/notifications?limit=100");
  show(
    h("h1", {}, "Notifications"),
    page.items.length === 0
      ? h("p", { class: "muted" }, "Nothing yet.")
      : h(
          "ul",
          { class: "notices", "data-testid": "notifications" },
          page.items.map((n) => {
            const order = noticeOrder(n.payload);
            return h(
              "li",
              { "data-testid": "notification", "data-kind": n.kind, class: n.read_at ? "read" : "unread" },
              NOTICE_TEXT[n.kind] || n.kind,
              " · ",
              h("span", { class: "muted" }, new Date(n.created_at).toLocaleString()),
              order ? [" · ", h("a", { href: `#/orders/${order}`, "data-testid": "notification-order" }, "Open the order")] : null,
            );
          }),
        ),
    page.items.some((n) => !n.read_at)
      ? h(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-testid": "read-all",
            onclick: async () => {
              await api("POST", "/notifications/read-all");
              route();
            },
          },
          "Mark all read",
        )
      : null,
  );
}

function requireSession() {
  if (session.load()) return true;
  sessionStorage.setItem(RETURN_TO, location.hash);
  location.hash = "#/login";
  return false;
}

function field(label, attrs) {
  return h("label", {}, label, h("input", { required: true, ...attrs }));
}

async function signIn(email, password) {
  const s = await api("POST", "/sessions", { body: { email, password } });
  session.save(s);
  renderNav();
  const back = sessionStorage.getItem(RETURN_TO);
  sessionStorage.removeItem(RETURN_TO);
  location.hash = back || "#/";
}

function authForm(title, fields, submitLabel, submit) {
  const form = h(
    "form",
    { class: "stack", "data-testid": "auth-form" },
    h("h1", {}, title),
    fields,
    h("button", { type: "submit", "data-testid": "submit" }, submitLabel),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const values = Object.fromEntries(new FormData(form));
    try {
      await submit(values);
      alertBox(null);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      alertBox(err.describe());
    }
  });
  return form;
}

function loginPage() {
  show(
    authForm(
      "Log in",
      [
        field("Email", { name: "email", type: "email", autocomplete: "email", "data-testid": "email" }),
        field("Password", {
          name: "password",
          type: "password",
          autocomplete: "current-password",
          "data-testid": "password",
        }),
      ],
      "Log in",
      (v) => signIn(v.email, v.password),
    ),
    h("p", {}, "New here? ", h("a", { href: "#/register" }, "Register")),
  );
}

function registerPage() {
  show(
    authForm(
      "Register",
      [
        field("Name", { name: "display_name", autocomplete: "nickname", "data-testid": "display-name" }),
        field("Email", { name: "email", type: "email", autocomplete: "email", "data-testid": "email" }),
        field("Password (at least 8 characters)", {
          name: "password",
          type: "password",
          minlength: 8,
          autocomplete: "new-password",
          "data-testid": "password",
        }),
      ],
      "Register",
      async (v) => {
        await api("POST", "/users", {
          body: { email: v.email, password: v.password, display_name: v.display_name, role: "customer" },
        });
        await signIn(v.email, v.password);
      },
    ),
  );
}

// ---------------------------------------------------------------------------
// Routing by the location's hash.

async function route() {
  leave();
  const path = location.hash.replace(/^#/, "") || "/";
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts.length === 0) await homePage();
    else if (parts[0] === "drops" && parts[1] && parts[2] === "results") await resultsPage(parts[1]);
    else if (parts[0] === "drops" && parts[1]) await dropPage(parts[1]);
    else if (parts[0] === "notifications") await notificationsPage();
    else if (parts[0] === "orders" && parts[1]) await orderPage(parts[1]);
    else if (parts[0] === "orders") await ordersPage();
    else if (parts[0] === "login") loginPage();
    else if (parts[0] === "register") registerPage();
    else show(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "All drops")));
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    show(h("h1", {}, "Something went wrong"), h("p", { "data-testid": "error" }, e.describe()));
  }
}

window.addEventListener("hashchange", () => {
  alertBox(null);
  route();
});
renderNav();
route();
