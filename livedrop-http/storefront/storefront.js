// The livedrop storefront: live and upcoming drops, a drop's page with its countdown
// and live stock (per size when it has several), buying the chosen size with an
// Idempotency-Key that survives a retry, a waitlist for a sold-out size, the buyer's
// orders, and register / log in. Plain JavaScript over the public API.
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

async function api(method, path, { body, key } = {}) {
  const headers = { Accept: "application/json" };
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
    h("p", {}, statusBadge(drop.status), " ", money(p.price_cents, p.currency)),
    h("p", { class: "stock muted" }, `${drop.stock.available} of ${drop.stock.total} left · ${when}`),
  );
}

async function dropPage(id) {
  show(h("p", { class: "muted" }, "Loading…"));
  let drop = await api("GET", `/drops/${id}`);
  const p = await product(drop.product_id);

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

  const paintSizes = () => {
    for (const v of drop.variants) {
      const left = sizeStock.get(v.sku);
      if (left) left.textContent = v.stock.available > 0 ? `${v.stock.available} of ${v.stock.total} left` : "sold out";
    }
  };

  const setStock = (stock, newStatus, variants) => {
    drop = { ...drop, stock, status: newStatus || drop.status };
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
      const order = await api("POST", "/orders", {
        body: { drop_id: drop.id, quantity: attempt.quantity, sku: attempt.sku || chosen },
        key: attempt.key,
      });
      pending.clear(drop.id);
      buyNote.textContent = "";
      location.hash = `#/orders/${order.id}`;
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
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
      setStock(fresh.stock, fresh.status, fresh.variants);
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
  readPlace();
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
    ),
  );
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
    else if (parts[0] === "drops" && parts[1]) await dropPage(parts[1]);
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
