// Switchyard embedded tenant UI: vanilla JS, no build step, no external
// resources. Every piece of DOM is built with createElement + textContent,
// so nothing from the API (names, payloads, responses) can inject markup.
// The page is served under a CSP of `default-src 'self'`: no inline
// scripts or handlers, no eval.
(() => {
  "use strict";

  const SEVERITIES = ["info", "low", "medium", "high", "critical"];
  const OPS = [
    ["eq", "= equals"],
    ["ne", "≠ not equal"],
    ["gt", "> greater than"],
    ["gte", "≥ at least"],
    ["lt", "< less than"],
    ["lte", "≤ at most"],
    ["in", "is one of"],
    ["exists", "exists"],
    ["contains", "contains"],
  ];
  const DELIVERY_STATES = ["pending", "retrying", "succeeded", "dead", "suppressed"];
  const TERMINAL = new Set(["succeeded", "dead", "suppressed"]);
  const STORAGE_KEY = "switchyard.embed.session";
  const REFRESH_MS = 3000;
  const MAX_TOASTS = 2;
  const NAV = [
    ["overview", "Overview"],
    ["connections", "Destinations"],
    ["rules", "Rules"],
    ["deliveries", "Deliveries"],
  ];
  const EXAMPLE_EVENT = {
    event: "alert.triggered",
    resource: "alert",
    resource_id: "alrt_tyrion_42",
    payload: {
      alert_id: "alrt_tyrion_42",
      account_id: "acc_casterly",
      severity: "high",
      resource: "api_latency_p95",
      value: 1840,
      threshold: 1000,
      triggered_at: "2026-04-17T16:02:00Z",
    },
  };

  // Where the API lives: next to the page (`{public_url}/embed` → `{public_url}/`).
  const BASE = new URL(".", window.location.href);

  const state = {
    session: null,
    workspace: null,
    expiresAt: 0,
    expired: false,
    expiryTimer: 0,
    expiringTimer: 0,
    // Origins the session lets frame the UI (from the exchange); the host
    // page's origin is picked from them, or from the first init when empty.
    allowedOrigins: [],
    hostOrigin: null,
    readySent: false,
    firstRoute: true,
    routeSerial: 0,
    leave: [],
    rerender: null,
    // What the operator configured (GET /v1/capabilities); until known, or
    // from a server without that endpoint, everything is offered.
    capabilities: { slack: true, email: { resend: true, smtp: true } },
  };

  // ---------------------------------------------------------------- DOM

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    let value;
    if (props) {
      for (const [key, v] of Object.entries(props)) {
        if (v === null || v === undefined || v === false) continue;
        if (key === "class") el.className = v;
        else if (key === "text") el.textContent = v;
        else if (key === "testid") el.dataset.testid = v;
        else if (key === "value") value = v;
        else if (key.startsWith("on") && typeof v === "function") el.addEventListener(key.slice(2), v);
        else if (key === "checked" || key === "disabled" || key === "selected" || key === "required" || key === "readOnly") el[key] = true;
        else el.setAttribute(key, v === true ? "" : String(v));
      }
    }
    add(el, children);
    if (value !== undefined) el.value = value;
    return el;
  }

  function add(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function $(selector, root) {
    return (root || document).querySelector(selector);
  }

  let idCounter = 0;
  function uid(prefix) {
    idCounter += 1;
    return `${prefix}-${idCounter}`;
  }

  /** A labelled form field; `control` gets an id if it has none. */
  function field(label, control, hint) {
    if (!control.id) control.id = uid("f");
    const hintEl = hint ? h("div", { class: "hint", id: uid("h") }, hint) : null;
    if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
    return h("div", { class: "field" }, h("label", { for: control.id }, label), control, hintEl);
  }

  function notice(kind, ...children) {
    return h("div", { class: `notice notice-${kind}`, role: kind === "bad" ? "alert" : null }, children);
  }

  /**
   * Error banners of the page: slots marked `data-transient` are emptied
   * when the tenant starts something else (opens a form, starts an install),
   * so one form's error never stands beside another form.
   */
  function transientSlot() {
    return h("div", { class: "item-body", "data-transient": "" });
  }

  function clearBanners() {
    for (const slot of document.querySelectorAll("#view [data-transient]")) slot.replaceChildren();
  }

  /**
   * A form's error clears once the tenant fixes what it pointed at: editing
   * a field marked invalid unmarks it, and when none is left the message goes.
   */
  function clearErrorOnFix(form, error) {
    const fixed = (e) => {
      const control = e.target;
      if (!control || control.getAttribute("aria-invalid") !== "true") return;
      control.removeAttribute("aria-invalid");
      if (!form.querySelector("[aria-invalid=true]")) error.replaceChildren();
    };
    form.addEventListener("input", fixed);
    form.addEventListener("change", fixed);
  }

  function spinnerBlock(text) {
    return h("div", { class: "boot", "aria-busy": "true" }, h("div", { class: "spinner", "aria-hidden": "true" }), h("p", null, text || "Loading…"));
  }

  function toast(message, kind) {
    const region = $("#toasts");
    if (!region) return;
    const el = h("div", { class: `toast${kind === "bad" ? " toast-bad" : ""}`, testid: "toast" }, message);
    // At most two at once, so they stay over the header and off the page.
    while (region.children.length >= MAX_TOASTS) region.firstElementChild.remove();
    region.append(el);
    setTimeout(() => el.remove(), kind === "bad" ? 8000 : 4000);
  }

  /** A button that asks again before doing something destructive. */
  function confirmButton(label, confirmLabel, action, testid, tone) {
    const wrap = h("span", { class: "actions" });
    const start = h("button", { type: "button", class: `${tone === "neutral" ? "" : "danger "}small-button`, testid }, label);
    const showStart = () => {
      wrap.replaceChildren(start);
    };
    start.addEventListener("click", () => {
      const yes = h("button", { type: "button", class: `${tone === "neutral" ? "primary" : "danger-solid"} small-button`, testid: testid ? `${testid}-confirm` : null }, confirmLabel);
      const no = h("button", { type: "button", class: "small-button" }, "Cancel");
      yes.addEventListener("click", async () => {
        yes.disabled = true;
        no.disabled = true;
        try {
          await action();
        } finally {
          if (wrap.isConnected) showStart();
        }
      });
      const cancel = () => {
        showStart();
        start.focus();
      };
      no.addEventListener("click", cancel);
      for (const button of [yes, no]) {
        button.addEventListener("keydown", (e) => {
          if (e.key === "Escape") cancel();
        });
      }
      wrap.replaceChildren(yes, no);
      yes.focus();
    });
    showStart();
    return wrap;
  }

  /** Runs `work` with the button disabled and a busy label. */
  async function busy(button, label, work) {
    const before = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (label) button.textContent = label;
    try {
      return await work();
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = before;
    }
  }

  // --------------------------------------------------------------- time

  const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
  const absoluteFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

  function relative(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return "";
    const seconds = Math.round((at - Date.now()) / 1000);
    const abs = Math.abs(seconds);
    if (abs < 5) return "just now";
    if (abs < 60) return relativeFormat.format(seconds, "second");
    if (abs < 3600) return relativeFormat.format(Math.round(seconds / 60), "minute");
    if (abs < 86400) return relativeFormat.format(Math.round(seconds / 3600), "hour");
    return relativeFormat.format(Math.round(seconds / 86400), "day");
  }

  function timeEl(iso, prefix) {
    if (!iso) return null;
    const at = Date.parse(iso);
    return h("time", { datetime: iso, title: Number.isNaN(at) ? iso : absoluteFormat.format(at) }, prefix ? `${prefix} ${relative(iso)}` : relative(iso));
  }

  function absolute(iso) {
    const at = Date.parse(iso);
    return Number.isNaN(at) ? iso : absoluteFormat.format(at);
  }

  const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const dayClockFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });

  /** "16:02" today, "Apr 17, 16:02" before: how a tenant names an alert. */
  function clockEl(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return null;
    const today = new Date(at).toDateString() === new Date().toDateString();
    return h("time", { datetime: iso, title: absoluteFormat.format(at) }, (today ? clockFormat : dayClockFormat).format(at));
  }

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    if (state.expired) throw new ApiError(401, "unauthorized", "Your session has expired.");
    const init = { method, headers: { Authorization: `Bearer ${state.session}` }, cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(new URL(path, BASE), init);
    } catch (_) {
      throw new ApiError(0, "network", "Could not reach the server. Check your connection and try again.");
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (response.status === 401) {
      expireSession();
      throw new ApiError(401, "unauthorized", "Your session has expired.");
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, error.code || "error", error.message || `The request failed (HTTP ${response.status}).`);
    }
    if (method === "POST" && path === "v1/connections") tellConnection(data);
    return data;
  }

  function errorText(error) {
    const text = (error && error.message) || "Something went wrong.";
    // "field: message" stays as the server wrote it; plain sentences get a capital.
    return /^[a-z_]+(\[\d+\])?(\.[a-z_]+)*:/.test(text) ? text : text[0].toUpperCase() + text.slice(1);
  }

  // ------------------------------------------------------- capabilities

  async function loadCapabilities() {
    try {
      const answer = await api("GET", "v1/capabilities");
      if (answer && answer.email) state.capabilities = answer;
    } catch (_) {
      // An older server: offer everything, as before; the API still refuses
      // what the instance cannot do, with a message that says why.
    }
  }

  function canSlack() {
    return state.capabilities.slack === true;
  }

  /** The email providers this instance can send through, as [value, label]. */
  function emailProviders() {
    const email = state.capabilities.email || {};
    return [["resend", "Resend"], ["smtp", "SMTP"]].filter(([value]) => email[value] === true);
  }

  /** What the tenant cannot set up here, and what the operator must configure. */
  function unavailableNotice() {
    const missing = [];
    if (!canSlack()) {
      missing.push(h("li", { testid: "unavailable-slack" },
        h("strong", null, "Slack isn't set up on this instance. "),
        "Its operator must add the Slack app's credentials (",
        h("code", null, "slack.client_id"), " and ", h("code", null, "slack.client_secret"), ")."));
    }
    if (!emailProviders().length) {
      missing.push(h("li", { testid: "unavailable-email" },
        h("strong", null, "Email isn't set up on this instance. "),
        "Its operator must configure a provider (",
        h("code", null, "email.resend.api_key"), " or ", h("code", null, "email.smtp.host"), ")."));
    }
    if (!missing.length) return null;
    return notice("info", h("ul", { class: "plain-list", testid: "unavailable" }, missing),
      h("p", { class: "small" }, "Ask whoever runs this instance for you; webhooks work meanwhile."));
  }

  /** "connect Slack or add a webhook", as far as this instance can. */
  function destinationChoices() {
    const email = emailProviders().length > 0;
    if (canSlack()) return email ? "connect Slack, add a webhook or an email sender" : "connect Slack or add a webhook";
    return email ? "add a webhook or an email sender" : "add a webhook";
  }

  // ------------------------------------------------------------ session

  function saveSession() {
    try {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ session: state.session, workspace: state.workspace, expires_at: state.expiresAt, allowed_origins: state.allowedOrigins }));
    } catch (_) {
      // Storage may be blocked in third-party frames; the session still works in memory.
    }
  }

  function restoreSession() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
      if (saved && saved.session && saved.expires_at > Date.now()) {
        state.session = saved.session;
        state.workspace = saved.workspace;
        state.expiresAt = saved.expires_at;
        state.allowedOrigins = Array.isArray(saved.allowed_origins) ? saved.allowed_origins : [];
        return true;
      }
    } catch (_) {
      // Unreadable or blocked storage: no saved session.
    }
    return false;
  }

  function forgetSession() {
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) {
      // Nothing to forget.
    }
  }

  /** Exchanges the launch token for a session; false when it is not valid. */
  async function exchange(launch) {
    const response = await fetch(new URL("embed/session", BASE), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: launch }),
      cache: "no-store",
    });
    if (response.status === 401) return false;
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const data = await response.json();
    state.session = data.session;
    state.workspace = data.workspace;
    state.expiresAt = Date.parse(data.expires_at) || Date.now() + 30 * 60 * 1000;
    state.allowedOrigins = Array.isArray(data.allowed_origins) ? data.allowed_origins : [];
    saveSession();
    return true;
  }

  function scheduleExpiry() {
    clearTimeout(state.expiryTimer);
    clearTimeout(state.expiringTimer);
    const wait = state.expiresAt - Date.now();
    if (wait <= 0) {
      expireSession();
      return;
    }
    // setTimeout holds at most ~24.8 days; sessions last at most 12 hours.
    state.expiryTimer = setTimeout(expireSession, Math.min(wait, 2147483647));
    // Warn the host a minute ahead, or halfway through a session shorter
    // than two minutes, so it has time to mint a new launch token.
    const lead = Math.min(EXPIRING_LEAD_MS, wait / 2);
    state.expiringTimer = setTimeout(() => {
      tellHost("session-expiring", { expires_at: new Date(state.expiresAt).toISOString() });
    }, Math.min(wait - lead, 2147483647));
  }

  function expireSession() {
    if (state.expired) return;
    state.expired = true;
    state.session = null;
    clearTimeout(state.expiryTimer);
    clearTimeout(state.expiringTimer);
    forgetSession();
    leaveView();
    showExpired();
    // Let the host product mint a new session if it wants to.
    tellHost("session-expired", {});
  }

  // -------------------------------------------------------- host page
  //
  // The postMessage contract with the page that frames the UI (README,
  // "Embedding"). Messages go only to the host's origin, never "*", and
  // come only from the session's allowed origins.

  const EXPIRING_LEAD_MS = 60 * 1000;
  const HOST_ROUTE = /^[a-z]+(\/[A-Za-z0-9_.:-]+)?$/;

  function framed() {
    return window.parent !== window;
  }

  /** The host page's origin, once it is known. */
  function hostOrigin() {
    if (state.hostOrigin) return state.hostOrigin;
    const allowed = state.allowedOrigins;
    if (allowed.length === 1) return allowed[0];
    // Several allowed origins: Chromium and Safari name the parent's.
    const ancestors = window.location.ancestorOrigins;
    if (allowed.length > 1 && ancestors && ancestors.length && allowed.includes(ancestors[0])) return ancestors[0];
    return null;
  }

  /** Posts `switchyard:<name>` to the host; dropped while its origin is unknown. */
  function tellHost(name, fields) {
    const origin = hostOrigin();
    if (!framed() || !origin) return;
    window.parent.postMessage({ type: `switchyard:${name}`, ...fields }, origin);
  }

  /** Nested: a flat `type` would overwrite the message's own `type`. */
  function tellConnection(connection) {
    if (connection && connection.id) tellHost("connection-changed", { connection: { id: connection.id, type: connection.type, status: connection.status } });
  }

  /** Announces the UI once it has rendered, then its height whenever it changes. */
  function announceReady() {
    if (state.readySent || !hostOrigin() || !$(".shell")) return;
    state.readySent = true;
    tellHost("ready", {});
    let last = -1;
    const observer = new ResizeObserver(() => {
      const height = Math.ceil($("#app").getBoundingClientRect().height);
      if (height === last) return;
      last = height;
      tellHost("resize", { height });
    });
    observer.observe($("#app"));
  }

  /** Without allowed origins, the first init names the host; nothing else is taken before it. */
  function fromAllowedOrigin(origin, type) {
    if (state.allowedOrigins.length) return state.allowedOrigins.includes(origin);
    return state.hostOrigin ? state.hostOrigin === origin : type === "switchyard:init";
  }

  function onHostMessage(event) {
    const data = event.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string" || !data.type.startsWith("switchyard:")) return;
    if (data.type === "switchyard:slack-install") return; // the Slack popup's, see onMessage
    if (!fromAllowedOrigin(event.origin, data.type)) {
      console.warn(`switchyard: ignored ${data.type} from ${event.origin}, which this session does not allow`);
      return;
    }
    if (!state.hostOrigin && (!state.allowedOrigins.length || state.allowedOrigins.length > 1)) state.hostOrigin = event.origin;
    if (data.type === "switchyard:init") applyInit(data);
    else if (data.type === "switchyard:token") renewSession(data.token);
    else if (data.type === "switchyard:navigate") navigateTo(data.route);
    announceReady();
  }

  function applyInit(data) {
    const root = document.documentElement;
    // Sized by the host: full-page states must not take a share of a
    // viewport that itself follows the content, or they would shrink forever.
    root.dataset.sized = "";
    if (data.theme === "light" || data.theme === "dark") root.dataset.theme = data.theme;
    else delete root.dataset.theme;
    if (typeof data.accent === "string" && /^#[0-9a-fA-F]{6}$/.test(data.accent)) root.style.setProperty("--accent", data.accent);
  }

  /** Swaps in a session from a fresh launch token; the page and its forms stay as they are. */
  async function renewSession(token) {
    if (typeof token !== "string" || !token) return;
    const wasExpired = state.expired;
    let ok;
    try {
      ok = await exchange(token);
    } catch (_) {
      ok = false;
    }
    if (!ok) {
      console.warn("switchyard: the launch token from the host page could not be exchanged");
      return;
    }
    state.expired = false;
    scheduleExpiry();
    if (wasExpired) {
      renderShell();
      route();
    }
  }

  function navigateTo(target) {
    if (typeof target !== "string" || !HOST_ROUTE.test(target) || !ROUTES[target.split("/")[0]]) return;
    window.location.hash = `#/${target}`;
  }

  function showExpired() {
    const app = $("#app");
    app.removeAttribute("aria-busy");
    const heading = h("h1", { tabindex: "-1" }, "Your session has expired");
    app.replaceChildren(
      h("div", { class: "fullpage", testid: "session-expired" },
        h("div", { class: "card" },
          heading,
          h("p", { class: "muted" }, "For your security this page signs out after a while. Reload the page in your product to open a new session."))));
  }

  function showFatal(message) {
    const app = $("#app");
    app.removeAttribute("aria-busy");
    app.replaceChildren(
      h("div", { class: "fullpage", testid: "fatal" },
        h("div", { class: "card" }, h("h1", null, "This page could not load"), h("p", { class: "muted" }, message))));
  }

  // ------------------------------------------------------------- shell

  function renderShell() {
    const app = $("#app");
    app.removeAttribute("aria-busy");
    const nav = h("nav", { class: "nav", "aria-label": "Sections" },
      NAV.map(([id, label]) => h("a", { href: `#/${id}`, "data-route": id, testid: `nav-${id}` }, label)));
    const name = (state.workspace && state.workspace.name) || "";
    app.replaceChildren(
      h("div", { class: "shell" },
        h("header", { class: "topbar" },
          h("div", { class: "brand" },
            h("span", { class: "brand-title" }, "Alert routing"),
            name ? h("span", { class: "brand-ws", testid: "workspace-name", title: name }, name) : null),
          nav),
        h("main", { id: "view", tabindex: "-1", testid: "view" })));
  }

  function leaveView() {
    const leave = state.leave;
    state.leave = [];
    state.rerender = null;
    for (const fn of leave) {
      try {
        fn();
      } catch (_) {
        // A cleanup that fails must not stop the others.
      }
    }
  }

  /** What a view gets: whether it is still shown, and cleanup hooks. */
  function viewContext(serial) {
    return {
      alive: () => serial === state.routeSerial && !state.expired,
      onLeave: (fn) => state.leave.push(fn),
      every(ms, fn) {
        const timer = setInterval(() => {
          if (!document.hidden) fn();
        }, ms);
        state.leave.push(() => clearInterval(timer));
      },
    };
  }

  const ROUTES = {
    overview: (view, ctx) => viewOverview(view, ctx),
    connections: (view, ctx, parts) => viewConnections(view, ctx, parts[1]),
    rules: (view, ctx, parts) => (parts[1] ? viewRuleEditor(view, ctx, parts[1]) : viewRules(view, ctx)),
    deliveries: (view, ctx, parts) => (parts[1] ? viewDelivery(view, ctx, parts[1]) : viewDeliveries(view, ctx)),
  };

  async function route() {
    if (state.expired) return;
    leaveView();
    const parts = window.location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
    const name = parts[0] || "overview";
    if (!ROUTES[name]) {
      window.location.replace("#/overview");
      return;
    }
    for (const link of document.querySelectorAll(".nav a")) {
      if (link.dataset.route === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    state.routeSerial += 1;
    const serial = state.routeSerial;
    const ctx = viewContext(serial);
    tellHost("navigate", { route: parts.join("/") || name });
    const view = $("#view");
    view.replaceChildren(spinnerBlock());
    state.rerender = () => {
      if (ctx.alive()) route();
    };
    const first = state.firstRoute;
    state.firstRoute = false;
    try {
      await ROUTES[name](view, ctx, parts);
    } catch (error) {
      if (!ctx.alive()) return;
      const retry = h("button", { type: "button", onclick: () => route() }, "Try again");
      view.replaceChildren(
        h("div", { class: "fullpage" },
          h("div", { class: "card", testid: "view-error" },
            h("h1", null, error.status === 404 ? "Not found" : "Something went wrong"),
            h("p", { class: "muted" }, errorText(error)),
            h("div", { class: "form-actions" }, retry, h("a", { href: "#/overview", class: "button ghost" }, "Back to overview")))));
      return;
    }
    if (!ctx.alive()) return;
    // Move focus to the new page's heading for keyboard and screen reader
    // users; not on first load, where focusing would scroll the host page.
    if (!first) {
      const heading = $("h1", view);
      if (heading) {
        heading.setAttribute("tabindex", "-1");
        heading.classList.add("view-title");
        heading.focus({ preventScroll: true });
      }
      window.scrollTo(0, 0);
    }
  }

  function pageHead(title, subtitle, ...actions) {
    return h("div", { class: "page-head" },
      h("div", null, h("h1", null, title), subtitle ? h("p", null, subtitle) : null),
      actions.length ? h("div", { class: "actions" }, actions) : null);
  }

  // ------------------------------------------------------ event summaries

  // Delivery rows name their event, but the delivery list carries only its
  // id: the rows on screen fetch their events a few at a time. Events never
  // change, so each is fetched once; only its summary is kept (payloads can
  // be large), for at most EVENT_CACHE_MAX events.
  const EVENT_CACHE_MAX = 500;
  const EVENT_FETCH_PARALLEL = 4;
  const eventSummaries = new Map(); // event id → summary, or null once the event is gone
  const eventsInFlight = new Set();

  function summarizeEvent(event) {
    const payload = event.payload && typeof event.payload === "object" ? event.payload : {};
    const scalar = (v) => (typeof v === "number" || typeof v === "string" ? v : undefined);
    const severity = typeof payload.severity === "string" && SEVERITIES.includes(payload.severity.toLowerCase())
      ? payload.severity.toLowerCase()
      : null;
    return {
      event: event.event,
      severity,
      subject: scalar(payload.resource) ?? event.resource_id ?? event.resource ?? null,
      value: scalar(payload.value),
      received_at: event.received_at,
    };
  }

  /** Fetches the summaries `ids` lack; true when any arrived. */
  async function loadEventSummaries(ids) {
    const wanted = [...new Set(ids)].filter((id) => id && !eventSummaries.has(id) && !eventsInFlight.has(id));
    let next = 0;
    let added = false;
    const worker = async () => {
      while (next < wanted.length && !state.expired) {
        const id = wanted[next];
        next += 1;
        eventsInFlight.add(id);
        try {
          rememberEvent(id, summarizeEvent(await api("GET", `v1/events/${encodeURIComponent(id)}`)));
          added = true;
        } catch (error) {
          // Removed by retention: say so. Anything else is tried again on the next render.
          if (error.status === 404) {
            rememberEvent(id, null);
            added = true;
          }
        } finally {
          eventsInFlight.delete(id);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(EVENT_FETCH_PARALLEL, wanted.length) }, worker));
    return added;
  }

  function rememberEvent(id, summary) {
    if (eventSummaries.size >= EVENT_CACHE_MAX) eventSummaries.delete(eventSummaries.keys().next().value);
    eventSummaries.set(id, summary);
  }

  /** "HIGH api_latency_p95 · 1840" for an alert; the event type otherwise. */
  function eventTitle(eventId) {
    const summary = eventSummaries.get(eventId);
    if (summary === undefined) return h("span", { class: "muted", testid: "delivery-event", "data-loaded": "false" }, "Loading the event…");
    if (summary === null) return h("span", { class: "muted", testid: "delivery-event", "data-loaded": "true" }, "Event no longer kept");
    const parts = [];
    if (summary.subject !== null) parts.push(String(summary.subject));
    if (summary.value !== undefined) parts.push(String(summary.value));
    return h("span", { testid: "delivery-event", "data-loaded": "true" },
      summary.severity ? h("span", { class: `sev sev-${summary.severity}` }, capitalize(summary.severity)) : null,
      parts.length ? parts.join(" · ") : h("code", null, summary.event));
  }

  // ------------------------------------------------------------ helpers

  function typeTag(type) {
    const glyph = { slack: "#", webhook: "{ }", email: "@", pagerduty: "PD", teams: "T", discord: "D" }[type] || "?";
    return h("span", { class: `type-tag type-${type}`, "aria-hidden": "true" }, glyph);
  }

  function typeName(type) {
    return { slack: "Slack", webhook: "Webhook", email: "Email", pagerduty: "PagerDuty", teams: "Microsoft Teams", discord: "Discord" }[type] || type;
  }

  function connectionStatusPill(status) {
    const [kind, label] = {
      active: ["ok", "Active"],
      needs_reauth: ["warn", "Needs reconnect"],
      disabled: ["bad", "Disabled"],
    }[status] || ["plain", status];
    return h("span", { class: `pill pill-${kind}`, testid: "connection-status" }, label);
  }

  function deliveryPill(status) {
    const [kind, label] = {
      pending: ["info", "Pending"],
      retrying: ["warn", "Retrying"],
      succeeded: ["ok", "Succeeded"],
      dead: ["bad", "Dead"],
      suppressed: ["plain", "Suppressed"],
    }[status] || ["plain", status];
    return h("span", { class: `pill pill-${kind}`, testid: "delivery-status", "data-status": status }, label);
  }

  function describeConnection(connection) {
    const config = connection.config || {};
    if (connection.type === "webhook") return config.url || "Webhook";
    if (connection.type === "slack") return config.team_name ? `Slack workspace ${config.team_name}` : "Slack";
    if (connection.type === "email") {
      const provider = config.provider === "smtp" ? "SMTP" : "Resend";
      return config.from ? `From ${config.from} via ${provider}` : `Email via ${provider}`;
    }
    if (connection.type === "pagerduty") return "PagerDuty integration (key hidden)";
    if (CHAT_KINDS[connection.type]) return chatDescription(connection);
    return connection.type;
  }

  function byId(list) {
    const map = new Map();
    for (const item of list || []) map.set(item.id, item);
    return map;
  }

  /** The editor's options and the rule list say the same: "High and above", "Critical only". */
  function severityLabel(value) {
    if (!value) return "Any severity";
    if (value === SEVERITIES[SEVERITIES.length - 1]) return `${capitalize(value)} only`;
    return `${capitalize(value)} and above`;
  }

  function capitalize(text) {
    return text ? text[0].toUpperCase() + text.slice(1) : text;
  }

  function ruleSummary(rule, connections) {
    const parts = [(rule.events || []).join(", ")];
    if (rule.min_severity) parts.push(severityLabel(rule.min_severity));
    const count = (rule.conditions || []).length;
    if (count) parts.push(count === 1 ? "1 condition" : `${count} conditions`);
    const connection = connections.get(rule.connection_id);
    let destination = connection ? connection.name : "a deleted destination";
    if (rule.target && rule.target.channel) destination += ` (${rule.target.channel})`;
    if (rule.target && Array.isArray(rule.target.to)) destination += ` (${rule.target.to.join(", ")})`;
    return `${parts.join(" · ")} → ${destination}`;
  }

  // Condition values: numbers, booleans and null are typed; "quoted" stays a string.
  function parseScalar(text) {
    const t = text.trim();
    if (/^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(t)) return Number(t);
    if (t === "true") return true;
    if (t === "false") return false;
    if (t === "null") return null;
    if (t.length >= 2 && t.startsWith('"') && t.endsWith('"')) return t.slice(1, -1);
    return t;
  }

  function parseConditionValue(text, op) {
    const t = text.trim();
    if (op === "in") return t === "" ? [] : t.split(",").map((item) => parseScalar(item));
    if (op === "exists" && t === "") return undefined;
    return parseScalar(t);
  }

  function formatScalar(value) {
    if (typeof value === "string") return parseScalar(value) === value ? value : JSON.stringify(value);
    return JSON.stringify(value);
  }

  function formatConditionValue(value) {
    if (value === undefined) return "";
    if (Array.isArray(value)) return value.map(formatScalar).join(", ");
    return formatScalar(value);
  }

  function splitList(text) {
    return text.split(",").map((item) => item.trim()).filter(Boolean);
  }

  async function copyText(input) {
    try {
      await navigator.clipboard.writeText(input.value);
      return true;
    } catch (_) {
      input.focus();
      input.select();
      try {
        return document.execCommand("copy");
      } catch (__) {
        return false;
      }
    }
  }

  /** The once-only secret box, with a copy button and a warning. */
  function secretBox(title, secret, onDone) {
    const input = h("input", { type: "text", readOnly: true, value: secret, testid: "signing-secret-value", "aria-label": "Signing secret", spellcheck: "false" });
    const copy = h("button", { type: "button", testid: "copy-secret" }, "Copy");
    copy.addEventListener("click", async () => {
      const ok = await copyText(input);
      copy.textContent = ok ? "Copied" : "Press Ctrl+C to copy";
      setTimeout(() => {
        copy.textContent = "Copy";
      }, 2500);
    });
    const done = h("button", { type: "button", class: "small-button", testid: "secret-done" }, "I've saved it");
    const box = h("div", { class: "secret-box", testid: "signing-secret", role: "region", "aria-label": title },
      h("div", { class: "label" }, title),
      h("p", { class: "small" }, "Copy this secret now and store it with your endpoint: it is shown only once. Use it to verify the webhook-signature header of every request."),
      h("div", { class: "secret-line" }, input, copy),
      h("div", null, done));
    done.addEventListener("click", () => {
      box.remove();
      if (onDone) onDone();
    });
    input.addEventListener("focus", () => input.select());
    return box;
  }

  // ------------------------------------------------------- Slack install

  const slackInstall = { popup: null, timer: 0, watchUntil: 0 };

  /** Asks for the install URL and opens Slack's page in a popup. */
  async function startSlackInstall(button, messageSlot) {
    clearBanners();
    messageSlot.replaceChildren();
    let url;
    try {
      url = await busy(button, "Opening Slack…", async () => (await api("POST", "v1/connections/slack/authorize", {})).url);
    } catch (error) {
      if (state.expired) return;
      const text = error.code === "slack_not_configured"
        ? "Slack isn't available on this instance yet: its administrator has not set up the Slack app."
        : errorText(error);
      messageSlot.replaceChildren(notice("bad", h("span", { testid: "slack-error" }, text)));
      return;
    }
    const popup = window.open(url, "slack-install", "width=720,height=800");
    if (!popup) {
      messageSlot.replaceChildren(notice("warn",
        h("strong", null, "Your browser blocked the Slack window."),
        "Allow pop-ups for this page, or ",
        h("a", { href: url, target: "slack-install", rel: "opener" }, "open Slack's install page"),
        "."));
      return;
    }
    watchInstall(popup);
    messageSlot.replaceChildren(notice("info", "Finish the install in the Slack window. This page updates when you're done."));
  }

  function watchInstall(popup) {
    clearInterval(slackInstall.timer);
    slackInstall.popup = popup;
    // Keep refreshing on focus for a while: a popup whose opener link was cut
    // (cross-origin isolation) looks closed but may still finish the install.
    slackInstall.watchUntil = Date.now() + 15 * 60 * 1000;
    slackInstall.timer = setInterval(() => {
      if (popup.closed) {
        clearInterval(slackInstall.timer);
        slackInstall.popup = null;
        if (state.rerender) state.rerender();
      }
    }, 500);
  }

  function onMessage(event) {
    if (event.origin !== window.location.origin) return;
    const data = event.data;
    if (!data || typeof data !== "object" || data.type !== "switchyard:slack-install") return;
    clearInterval(slackInstall.timer);
    slackInstall.watchUntil = 0;
    if (data.ok === true) {
      toast("Slack is connected.");
      api("GET", "v1/connections")
        .then((list) => list.data.filter((c) => c.type === "slack").forEach(tellConnection))
        .catch(() => {});
      if (slackInstall.popup && !slackInstall.popup.closed) slackInstall.popup.close();
    } else {
      toast("Slack was not connected. See the Slack window for why.", "bad");
    }
    slackInstall.popup = null;
    if (state.rerender) state.rerender();
  }

  function onFocus() {
    if (slackInstall.watchUntil > Date.now() && !slackInstall.popup && state.rerender) {
      slackInstall.watchUntil = 0;
      state.rerender();
    }
  }

  /** Null where the instance has no Slack app: nothing to click that can only fail. */
  function slackButton(label, messageSlot, testid, quiet) {
    if (!canSlack()) return null;
    const button = h("button", { type: "button", class: quiet ? "small-button" : "slack-button", testid }, label);
    button.addEventListener("click", () => startSlackInstall(button, messageSlot));
    return button;
  }

  // ------------------------------------------------------ test event

  /** The "Send test event" panel: tweak severity and value, send, watch. */
  function testEventPanel(ctx, connections, onClose, onChange) {
    const severity = h("select", { testid: "test-severity" },
      SEVERITIES.map((s) => h("option", { value: s }, s[0].toUpperCase() + s.slice(1))));
    severity.value = EXAMPLE_EVENT.payload.severity;
    const value = h("input", { type: "number", step: "any", value: String(EXAMPLE_EVENT.payload.value), testid: "test-value", inputmode: "decimal" });
    const preview = h("pre", { testid: "test-payload" });
    const result = h("div", { class: "stack-sm", testid: "test-result", "aria-live": "polite" });
    const send = h("button", { type: "submit", class: "primary", testid: "test-send" }, "Send test event");
    const close = h("button", { type: "button", class: "ghost", testid: "test-close" }, "Close");

    const body = () => {
      const event = JSON.parse(JSON.stringify(EXAMPLE_EVENT));
      event.payload.severity = severity.value;
      const number = Number(value.value);
      event.payload.value = value.value.trim() !== "" && Number.isFinite(number) ? number : value.value;
      return event;
    };
    const updatePreview = () => {
      preview.textContent = JSON.stringify(body(), null, 2);
    };
    severity.addEventListener("change", updatePreview);
    value.addEventListener("input", updatePreview);
    updatePreview();

    let watchSerial = 0;
    const watch = async (eventId, deliveries) => {
      watchSerial += 1;
      const mine = watchSerial;
      const list = h("ul", { class: "rows", testid: "test-deliveries" });
      result.replaceChildren(
        notice("ok", h("strong", null, "Event sent."),
          deliveries === 0
            ? "No rule matched it, so nothing was delivered."
            : `It matched ${deliveries === 1 ? "1 rule" : `${deliveries} rules`}; watch the deliveries below.`),
        deliveries === 0
          ? h("p", { class: "small muted" }, "Create a rule for ", h("code", null, "alert.triggered"), " to route it. ", h("a", { href: "#/rules/new" }, "New rule"))
          : list);
      if (deliveries === 0) return;
      const started = Date.now();
      let lastSeen = "";
      while (ctx.alive() && mine === watchSerial && Date.now() - started < 120000) {
        let event;
        try {
          event = await api("GET", `v1/events/${encodeURIComponent(eventId)}`);
        } catch (error) {
          if (!state.expired) list.replaceChildren(h("li", null, notice("bad", errorText(error))));
          return;
        }
        const seen = JSON.stringify(event.deliveries);
        if (seen !== lastSeen && onChange) onChange();
        lastSeen = seen;
        list.replaceChildren(...event.deliveries.map((delivery) => {
          const connection = connections.get(delivery.connection_id);
          return h("li", null,
            h("a", { class: "row-link delivery-row", href: `#/deliveries/${encodeURIComponent(delivery.id)}`, testid: "test-delivery" },
              deliveryPill(delivery.status),
              h("span", { class: "row-main" }, connection ? connection.name : delivery.connection_id),
              h("span", { class: "row-meta row-side" }, "View attempts →")));
        }));
        if (event.deliveries.every((delivery) => TERMINAL.has(delivery.status))) return;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    };

    const form = h("form", { class: "card test-panel stack", testid: "test-event-panel", "aria-label": "Send a test event", novalidate: true },
      h("div", { class: "section-head" },
        h("h2", null, "Send a test event"),
        close),
      h("p", { class: "small muted" }, "Sends the ", h("code", null, "alert.triggered"), " example (api_latency_p95 over its threshold of 1000) through your rules, exactly like your product would."),
      h("div", { class: "field-row" },
        field("Severity", severity),
        field("Value", value),
        h("div", { class: "form-actions" }, send)),
      h("details", null, h("summary", { class: "small" }, "Event body"), preview),
      result);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      result.replaceChildren();
      try {
        const answer = await busy(send, "Sending…", () => api("POST", "v1/events", body()));
        watch(answer.id, answer.deliveries);
      } catch (error) {
        if (!state.expired) result.replaceChildren(notice("bad", errorText(error)));
      }
    });
    close.addEventListener("click", () => {
      watchSerial += 1;
      onClose();
    });
    return form;
  }

  /** A button that toggles the test panel into `slot`. */
  function testEventToggle(ctx, slot, getConnections, onChange) {
    const button = h("button", { type: "button", class: "primary", testid: "open-test-event", "aria-expanded": "false" }, "Send test event");
    button.addEventListener("click", () => {
      if (slot.firstChild) {
        slot.replaceChildren();
        button.setAttribute("aria-expanded", "false");
        return;
      }
      const panel = testEventPanel(ctx, getConnections(), () => {
        slot.replaceChildren();
        button.setAttribute("aria-expanded", "false");
        button.focus();
      }, onChange);
      slot.replaceChildren(panel);
      button.setAttribute("aria-expanded", "true");
      $("select", panel).focus();
    });
    return button;
  }

  // ----------------------------------------------------------- overview

  async function viewOverview(view, ctx) {
    const [connectionList, ruleList, deliveryList] = await Promise.all([
      api("GET", "v1/connections"),
      api("GET", "v1/rules"),
      api("GET", "v1/deliveries?limit=6"),
    ]);
    if (!ctx.alive()) return;
    const connections = connectionList.data;
    const rules = ruleList.data;
    const connectionMap = byId(connections);
    const ruleMap = byId(rules);
    const slackMessage = h("div");
    const testSlot = h("div");

    const reauth = connections.filter((c) => c.type === "slack" && c.status === "needs_reauth").map((c) =>
      notice("warn",
        h("div", { class: "notice-row", testid: "reauth-banner" },
          h("div", null,
            h("strong", null, `Slack (${c.config.team_name || c.name}) needs to be reconnected`),
            "Slack stopped accepting this connection, so alerts to it are failing. ",
            canSlack() ? "Reconnect to fix it." : "Reconnecting needs the Slack app, which isn't set up on this instance: ask its operator."),
          slackButton("Reconnect Slack", slackMessage, "reconnect-slack"))));

    const destinations = h("section", { class: "card", "aria-labelledby": "ov-dest", testid: "overview-connections" },
      h("div", { class: "section-head" }, h("h2", { id: "ov-dest" }, "Destinations"), connections.length ? h("a", { href: "#/connections" }, "Manage") : null),
      connections.length
        ? h("ul", { class: "rows" }, connections.map((c) => h("li", null,
          h("a", { class: "row-link", href: "#/connections", testid: "overview-connection" },
            typeTag(c.type),
            h("span", { class: "row-main" }, h("div", { class: "item-title" }, c.name), h("div", { class: "row-meta" }, describeConnection(c))),
            connectionStatusPill(c.status)))))
        : h("div", { class: "empty", testid: "empty-connections" },
          h("p", null, h("strong", null, `No destinations yet — ${destinationChoices()}.`)),
          h("p", { class: "small" }, "Destinations are where your alerts go: a Slack channel, an email address or your own endpoint."),
          h("div", { class: "actions" },
            slackButton("Connect Slack", slackMessage, "connect-slack"),
            h("a", { class: "button", href: "#/connections/webhook" }, "Add a webhook")),
          unavailableNotice()));

    const enabled = rules.filter((r) => r.enabled).length;
    const rulesCard = h("section", { class: "card", "aria-labelledby": "ov-rules", testid: "overview-rules" },
      h("div", { class: "section-head" }, h("h2", { id: "ov-rules" }, "Rules"), rules.length ? h("a", { href: "#/rules" }, "Manage") : null),
      rules.length
        ? [
          h("p", { class: "small muted" }, `${enabled} of ${rules.length} ${rules.length === 1 ? "rule" : "rules"} enabled`),
          h("ul", { class: "rows" }, rules.slice(0, 5).map((r) => h("li", null,
            h("a", { class: "row-link", href: `#/rules/${encodeURIComponent(r.id)}` },
              h("span", { class: "row-main" }, h("div", { class: "item-title" }, r.name), h("div", { class: "row-meta" }, ruleSummary(r, connectionMap))),
              r.enabled ? h("span", { class: "pill pill-ok" }, "On") : h("span", { class: "pill" }, "Off"))))),
        ]
        : h("div", { class: "empty", testid: "empty-rules" },
          h("p", null, h("strong", null, connections.length ? "No rules yet — create one to route alerts." : "No rules yet.")),
          h("p", { class: "small" }, connections.length
            ? "A rule picks events (for example alert.triggered of high severity) and sends them to a destination."
            : "Add a destination first, then create a rule that sends alerts to it."),
          connections.length ? h("a", { class: "button", href: "#/rules/new" }, "Create a rule") : null));

    const deliveriesBox = h("div");
    let shown = [];
    const renderDeliveries = (list) => {
      shown = list;
      if (list.length) {
        // Whatever arrives, the latest list is drawn again with it.
        loadEventSummaries(list.map((d) => d.event_id)).then((added) => {
          if (added && ctx.alive()) renderDeliveries(shown);
        });
      }
      deliveriesBox.replaceChildren(list.length
        ? h("ul", { class: "rows", testid: "recent-deliveries" }, list.map((d) => deliveryRow(d, connectionMap, ruleMap)))
        : h("div", { class: "empty", testid: "empty-deliveries" },
          h("p", null, h("strong", null, "No deliveries yet.")),
          h("p", { class: "small" }, rules.length ? "Send a test event to see one arrive here." : "Once a rule matches an event, each delivery and its attempts show up here.")));
    };
    renderDeliveries(deliveryList.data);
    let last = JSON.stringify(deliveryList.data);
    const refreshDeliveries = async () => {
      try {
        const fresh = await api("GET", "v1/deliveries?limit=6");
        const text = JSON.stringify(fresh.data);
        if (ctx.alive() && (text !== last || !deliveriesBox.contains(document.activeElement))) {
          last = text;
          renderDeliveries(fresh.data);
        }
      } catch (_) {
        // A failed refresh is retried on the next tick; expiry is handled in api().
      }
    };
    ctx.every(REFRESH_MS, refreshDeliveries);

    view.replaceChildren(
      pageHead("Overview", "Route your product's alerts to Slack, email or your own endpoints.", testEventToggle(ctx, testSlot, () => connectionMap, refreshDeliveries)),
      h("div", { class: "stack" },
        slackMessage,
        reauth,
        testSlot,
        h("div", { class: "grid-2" }, destinations, rulesCard),
        h("section", { class: "card", "aria-labelledby": "ov-deliveries", testid: "overview-deliveries" },
          h("div", { class: "section-head" }, h("h2", { id: "ov-deliveries" }, "Recent deliveries"), h("a", { href: "#/deliveries" }, "See all")),
          deliveriesBox)));
  }

  /** One delivery: its state, what the event was, where it went, when. */
  function deliveryRow(d, connections, rules) {
    const connection = connections.get(d.connection_id);
    const rule = rules.get(d.rule_id);
    const summary = eventSummaries.get(d.event_id);
    const where = [summary ? `${summary.event} → ` : "", connection ? connection.name : "a deleted destination"].join("");
    return h("li", null,
      h("a", { class: "row-link delivery-row", href: `#/deliveries/${encodeURIComponent(d.id)}`, testid: "delivery-row", "data-id": d.id, "data-status": d.status },
        deliveryPill(d.status),
        h("span", { class: "row-main" },
          h("div", { class: "item-title" }, eventTitle(d.event_id)),
          h("div", { class: "row-meta" }, where, rule ? ` · Rule: ${rule.name}` : "")),
        h("span", { class: "row-meta row-side" },
          `${d.attempt_count} ${d.attempt_count === 1 ? "attempt" : "attempts"}`,
          d.status === "retrying" && d.next_attempt_at ? [" · ", timeEl(d.next_attempt_at, "next")] : null,
          " · ",
          clockEl((summary && summary.received_at) || d.created_at))));
  }

  // --------------------------------------------------------- connections

  async function viewConnections(view, ctx, open) {
    const { data: connections } = await api("GET", "v1/connections");
    if (!ctx.alive()) return;
    const slackMessage = h("div", { "data-transient": "" });
    const formSlot = h("div");
    const secretSlot = h("div", { class: "stack-sm" });
    const listSlot = h("div");

    const reload = async () => {
      const fresh = await api("GET", "v1/connections");
      if (ctx.alive()) renderList(fresh.data);
    };

    const renderList = (list) => {
      listSlot.replaceChildren(list.length
        ? h("ul", { class: "list", testid: "connection-list" }, list.map((c) => connectionItem(c, reload, secretSlot)))
        : h("div", { class: "empty", testid: "empty-connections" },
          h("p", null, h("strong", null, `No destinations yet — ${destinationChoices()}.`)),
          h("p", { class: "small" }, "Then create a rule to send alerts to it.")));
    };
    renderList(connections);

    const openForm = (build, button) => {
      if (formSlot.firstChild && formSlot.firstChild.dataset.kind === button.dataset.testid) {
        formSlot.replaceChildren();
        return;
      }
      clearBanners();
      const form = build(async (created) => {
        formSlot.replaceChildren();
        if (created && created.signing_secret) {
          secretSlot.replaceChildren(secretBox(`Signing secret for ${created.name}`, created.signing_secret, () => secretSlot.replaceChildren()));
          $("input", secretSlot).focus({ preventScroll: true });
        }
        if (created) toast(`${created.name} added.`);
        await reload();
      }, () => {
        formSlot.replaceChildren();
        button.focus();
      });
      form.dataset.kind = button.dataset.testid;
      formSlot.replaceChildren(form);
      $("input", form).focus();
    };

    const addWebhook = h("button", { type: "button", testid: "add-webhook" }, "Add webhook");
    addWebhook.addEventListener("click", () => openForm(webhookForm, addWebhook));
    const addEmail = h("button", { type: "button", testid: "add-email" }, "Add email sender");
    addEmail.addEventListener("click", () => openForm(emailForm, addEmail));

    const addPagerDuty = pagerDutyButton(openForm);
    const addChat = chatButtons(openForm, open);
    const canEmail = emailProviders().length > 0;
    if (open === "webhook") openForm(webhookForm, addWebhook);
    if (open === "pagerduty") addPagerDuty.click();
    if (open === "email" && canEmail) openForm(emailForm, addEmail);
    view.replaceChildren(
      pageHead("Destinations", destinationsSubtitle(canEmail),
        slackButton("Connect Slack", slackMessage, "connect-slack"), addWebhook, canEmail ? addEmail : null, addPagerDuty, addChat),
      h("div", { class: "stack" }, unavailableNotice(), slackMessage, formSlot, secretSlot, listSlot));
  }

  function destinationsSubtitle(canEmail) {
    if (canSlack()) return `Where your alerts go. Connect Slack, send signed webhooks to your own endpoint${canEmail ? ", or email" : ""}.`;
    return `Where your alerts go. Send signed webhooks to your own endpoint${canEmail ? ", or email" : ""}.`;
  }

  function webhookForm(onCreated, onCancel) {
    const name = h("input", { type: "text", required: true, value: "My endpoint", testid: "webhook-name", autocomplete: "off", maxlength: "128" });
    const url = h("input", { type: "url", required: true, placeholder: "https://example.com/hooks/alerts", testid: "webhook-url", autocomplete: "off", spellcheck: "false" });
    const error = h("div", { class: "notice notice-bad", role: "alert", testid: "form-error" });
    const submit = h("button", { type: "submit", class: "primary", testid: "webhook-save" }, "Add webhook");
    const cancel = h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel");
    const form = h("form", { class: "card stack", "aria-label": "Add a webhook", novalidate: true, testid: "webhook-form" },
      h("h2", null, "Add a webhook endpoint"),
      h("div", { class: "field-row" },
        field("Name", name),
        field("Endpoint URL", url, "We POST each alert here as JSON, signed with the Standard Webhooks headers.")),
      error,
      h("div", { class: "form-actions" }, submit, cancel));
    clearErrorOnFix(form, error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.replaceChildren();
      url.removeAttribute("aria-invalid");
      if (!url.value.trim()) {
        url.setAttribute("aria-invalid", "true");
        error.textContent = "Enter the URL of your endpoint.";
        url.focus();
        return;
      }
      try {
        const created = await busy(submit, "Adding…", () =>
          api("POST", "v1/connections", { type: "webhook", name: name.value.trim() || "Webhook", config: { url: url.value.trim() } }));
        await onCreated(created);
      } catch (err) {
        if (state.expired) return;
        if (/url/.test(err.message)) url.setAttribute("aria-invalid", "true");
        error.textContent = errorText(err);
      }
    });
    return form;
  }

  function emailForm(onCreated, onCancel) {
    const name = h("input", { type: "text", required: true, value: "Email alerts", testid: "email-name", autocomplete: "off", maxlength: "128" });
    const providers = emailProviders();
    const provider = h("select", { testid: "email-provider" },
      providers.map(([value, label]) => h("option", { value }, label)));
    const from = h("input", { type: "text", required: true, placeholder: "Alerts <alerts@example.com>", testid: "email-from", autocomplete: "off" });
    const error = h("div", { class: "notice notice-bad", role: "alert", testid: "form-error" });
    const submit = h("button", { type: "submit", class: "primary", testid: "email-save" }, "Add email sender");
    const cancel = h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel");
    const form = h("form", { class: "card stack", "aria-label": "Add an email sender", novalidate: true, testid: "email-form" },
      h("h2", null, "Add an email sender"),
      h("p", { class: "small muted" }, "Rules that use it name the recipients. The mail is sent by this instance's provider."),
      h("div", { class: "field-row" },
        field("Name", name),
        field("Provider", provider, providers.length === 1 ? `The only provider set up on this instance.` : null),
        field("From", from, "The sender address, optionally with a name.")),
      error,
      h("div", { class: "form-actions" }, submit, cancel));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.replaceChildren();
      try {
        const created = await busy(submit, "Adding…", () =>
          api("POST", "v1/connections", { type: "email", name: name.value.trim() || "Email", config: { provider: provider.value, from: from.value.trim() } }));
        await onCreated(created);
      } catch (err) {
        if (!state.expired) error.textContent = errorText(err);
      }
    });
    return form;
  }

  // ------------------------------------------------- Teams and Discord

  /** Kinds whose connection is one pasted URL (a secret, shown masked). */
  const CHAT_KINDS = {
    teams: {
      button: "Add Teams channel",
      title: "Add a Microsoft Teams channel",
      name: "Teams alerts",
      placeholder: "https://prod-00.westus.logic.azure.com/workflows/…",
      hint: "In Teams, open the channel's Workflows, choose \u201cPost to a channel when a webhook request is received\u201d and paste its URL. It is kept encrypted and never shown again in full.",
    },
    discord: {
      button: "Add Discord channel",
      title: "Add a Discord channel",
      name: "Discord alerts",
      placeholder: "https://discord.com/api/webhooks/…",
      hint: "In Discord, open the channel's settings, Integrations, Webhooks, create one and copy its URL. It is kept encrypted and never shown again in full.",
    },
  };

  function chatDescription(connection) {
    const url = (connection.config || {}).url;
    return url ? `${typeName(connection.type)} via ${url}` : typeName(connection.type);
  }

  /** The "Add Teams channel" and "Add Discord channel" buttons. */
  function chatButtons(openForm, open) {
    return Object.keys(CHAT_KINDS).map((kind) => {
      const button = h("button", { type: "button", testid: `add-${kind}` }, CHAT_KINDS[kind].button);
      const build = (onCreated, onCancel) => chatForm(kind, onCreated, onCancel);
      button.addEventListener("click", () => openForm(build, button));
      if (open === kind) openForm(build, button);
      return button;
    });
  }

  function chatForm(kind, onCreated, onCancel) {
    const spec = CHAT_KINDS[kind];
    const name = h("input", { type: "text", required: true, value: spec.name, testid: `${kind}-name`, autocomplete: "off", maxlength: "128" });
    const url = h("input", { type: "url", required: true, placeholder: spec.placeholder, testid: `${kind}-url`, autocomplete: "off", spellcheck: "false" });
    const error = h("div", { class: "notice notice-bad", role: "alert", testid: "form-error" });
    const submit = h("button", { type: "submit", class: "primary", testid: `${kind}-save` }, spec.button);
    const cancel = h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel");
    const form = h("form", { class: "card stack", "aria-label": spec.title, novalidate: true, testid: `${kind}-form` },
      h("h2", null, spec.title),
      h("div", { class: "field-row" },
        field("Name", name),
        field("Webhook URL", url, spec.hint)),
      error,
      h("div", { class: "form-actions" }, submit, cancel));
    clearErrorOnFix(form, error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.replaceChildren();
      url.removeAttribute("aria-invalid");
      if (!url.value.trim()) {
        url.setAttribute("aria-invalid", "true");
        error.textContent = "Paste the channel's webhook URL.";
        url.focus();
        return;
      }
      try {
        const created = await busy(submit, "Adding…", () =>
          api("POST", "v1/connections", { type: kind, name: name.value.trim() || spec.name, config: { url: url.value.trim() } }));
        await onCreated(created);
      } catch (err) {
        if (state.expired) return;
        if (/url/.test(err.message)) url.setAttribute("aria-invalid", "true");
        error.textContent = errorText(err);
      }
    });
    return form;
  }

  // ------------------------------------------------------------ PagerDuty

  /** The Destinations page's "Add PagerDuty" button, opening its form. */
  function pagerDutyButton(openForm) {
    const button = h("button", { type: "button", testid: "add-pagerduty" }, "Add PagerDuty");
    button.addEventListener("click", () => openForm(pagerDutyForm, button));
    return button;
  }

  function pagerDutyForm(onCreated, onCancel) {
    const name = h("input", { type: "text", required: true, value: "PagerDuty", testid: "pagerduty-name", autocomplete: "off", maxlength: "128" });
    const key = h("input", { type: "password", required: true, placeholder: "32 letters and digits", testid: "pagerduty-routing-key", autocomplete: "off", spellcheck: "false", maxlength: "64" });
    const error = h("div", { class: "notice notice-bad", role: "alert", testid: "form-error" });
    const submit = h("button", { type: "submit", class: "primary", testid: "pagerduty-save" }, "Add PagerDuty");
    const cancel = h("button", { type: "button", class: "ghost", onclick: onCancel }, "Cancel");
    const form = h("form", { class: "card stack", "aria-label": "Add PagerDuty", novalidate: true, testid: "pagerduty-form" },
      h("h2", null, "Add PagerDuty"),
      h("p", { class: "small muted" }, "On your PagerDuty service, add an Events API v2 integration and paste its integration key. Acknowledged and resolved alerts update the incident they opened."),
      h("div", { class: "field-row" },
        field("Name", name),
        field("Integration key", key, "Stored encrypted; it is never shown again.")),
      error,
      h("div", { class: "form-actions" }, submit, cancel));
    clearErrorOnFix(form, error);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      error.replaceChildren();
      key.removeAttribute("aria-invalid");
      if (!key.value.trim()) {
        key.setAttribute("aria-invalid", "true");
        error.textContent = "Paste the integration key of your PagerDuty service.";
        key.focus();
        return;
      }
      try {
        const created = await busy(submit, "Adding…", () =>
          api("POST", "v1/connections", { type: "pagerduty", name: name.value.trim() || "PagerDuty", config: { routing_key: key.value.trim() } }));
        await onCreated(created);
      } catch (err) {
        if (state.expired) return;
        if (/routing_key/.test(err.message)) key.setAttribute("aria-invalid", "true");
        error.textContent = errorText(err);
      }
    });
    return form;
  }

  function connectionItem(c, reload, secretSlot) {
    const body = h("div", { class: "item-body stack-sm" });
    const message = transientSlot();
    const actions = h("div", { class: "actions" });

    const test = h("button", { type: "button", class: "small-button", testid: "test-connection" }, "Send test");
    test.addEventListener("click", () => {
      clearBanners();
      if (c.type === "webhook" || c.type === "pagerduty" || CHAT_KINDS[c.type]) {
        runTest(test, body, c, undefined);
        return;
      }
      body.replaceChildren(testTargetForm(c, body));
    });
    actions.append(test);

    if (c.type === "webhook") {
      actions.append(confirmButton("Rotate secret", "Rotate now", async () => {
        try {
          const { signing_secret: secret } = await api("POST", `v1/connections/${encodeURIComponent(c.id)}/rotate-secret`);
          secretSlot.replaceChildren(secretBox(`New signing secret for ${c.name}`, secret, () => secretSlot.replaceChildren()));
          secretSlot.append(notice("info", "The previous secret keeps signing alongside the new one for 24 hours, so you can update your endpoint without missing alerts."));
          $("input", secretSlot).focus({ preventScroll: true });
          secretSlot.scrollIntoView({ block: "nearest" });
        } catch (err) {
          if (!state.expired) body.replaceChildren(notice("bad", errorText(err)));
        }
      }, "rotate-secret", "neutral"));
    }
    if (c.type === "slack" && canSlack()) {
      actions.append(c.status === "needs_reauth"
        ? slackButton("Reconnect Slack", message, "reconnect-slack")
        : slackButton("Reinstall", message, "reinstall-slack", true));
    }
    actions.append(confirmButton("Delete", "Delete for good", async () => {
      try {
        await api("DELETE", `v1/connections/${encodeURIComponent(c.id)}`);
        tellConnection({ id: c.id, type: c.type, status: "removed" });
        toast(`${c.name} deleted.`);
        await reload();
      } catch (err) {
        if (state.expired) return;
        const users = err.status === 409 ? await rulesUsing(c.id) : [];
        message.replaceChildren(notice("bad",
          h("strong", { testid: "delete-error" }, errorText(err)),
          users.length
            ? ["Used by ", users.map((rule, i) => [i ? ", " : "", h("a", { href: `#/rules/${encodeURIComponent(rule.id)}` }, rule.name)]), "."]
            : null));
      }
    }, "delete-connection"));

    return h("li", { class: "item", testid: "connection", "data-id": c.id, "data-type": c.type },
      typeTag(c.type),
      h("div", { class: "item-main" },
        h("div", { class: "item-title" }, c.name, " ", h("span", { class: "muted small" }, `· ${typeName(c.type)}`)),
        h("div", { class: "item-sub" }, describeConnection(c))),
      connectionStatusPill(c.status),
      actions,
      c.status === "needs_reauth"
        ? h("div", { class: "item-body" }, notice("warn", "Slack stopped accepting this connection. Reconnect it to resume alerts."))
        : null,
      message,
      body);
  }

  /** The rules that send to a connection (to explain a 409 on delete). */
  async function rulesUsing(connectionId) {
    try {
      return (await api("GET", "v1/rules")).data.filter((rule) => rule.connection_id === connectionId);
    } catch (_) {
      return [];
    }
  }

  /** Slack and email tests need a target: a channel or recipients. */
  function testTargetForm(c, body) {
    const submit = h("button", { type: "submit", class: "primary small-button" }, "Send test");
    const cancel = h("button", { type: "button", class: "ghost small-button", onclick: () => body.replaceChildren() }, "Cancel");
    let target;
    let control;
    if (c.type === "slack") {
      const picker = channelPicker(c.id, "");
      control = picker.el;
      target = () => (picker.value() ? { channel: picker.value() } : null);
    } else {
      const to = h("input", { type: "text", placeholder: "you@example.com", testid: "test-to", autocomplete: "email" });
      control = field("Send to", to, "Comma-separated addresses.");
      target = () => (splitList(to.value).length ? { to: splitList(to.value) } : null);
    }
    const result = h("div");
    const form = h("form", { class: "stack-sm", novalidate: true }, control, h("div", { class: "form-actions" }, submit, cancel), result);
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const value = target();
      if (!value) {
        result.replaceChildren(notice("bad", c.type === "slack" ? "Pick a channel first." : "Enter at least one address."));
        return;
      }
      runTest(submit, result, c, value);
    });
    return form;
  }

  async function runTest(button, slot, c, target) {
    slot.replaceChildren(h("p", { class: "small muted" }, "Sending a test message…"));
    try {
      const outcome = await busy(button, "Sending…", () =>
        api("POST", `v1/connections/${encodeURIComponent(c.id)}/test`, target ? { target } : {}));
      const facts = [];
      if (outcome.status_code) facts.push(`HTTP ${outcome.status_code}`);
      facts.push(`${outcome.duration_ms} ms`);
      slot.replaceChildren(h("div", { class: "stack-sm", testid: "test-outcome", "data-ok": String(outcome.ok) },
        notice(outcome.ok ? "ok" : "bad",
          h("strong", null, outcome.ok ? "Test delivered" : "Test failed"),
          [outcome.error ? `${outcome.error} · ` : "", facts.join(" · ")].join("")),
        outcome.response ? h("pre", { "aria-label": "Response" }, outcome.response) : null));
    } catch (err) {
      if (!state.expired) slot.replaceChildren(notice("bad", errorText(err)));
    }
  }

  /** A searchable Slack channel list; `value()` is the chosen channel id. */
  function channelPicker(connectionId, initial) {
    let selected = initial || "";
    let channels = [];
    const search = h("input", { type: "search", placeholder: "Search channels", testid: "channel-search", autocomplete: "off", "aria-label": "Search channels" });
    const select = h("select", { size: "8", testid: "channel-select" });
    const selectId = uid("channels");
    select.id = selectId;
    const status = h("div", { class: "hint", "aria-live": "polite" }, "Loading channels…");
    const manual = h("input", { type: "text", placeholder: "C0123456789", testid: "channel-manual", spellcheck: "false" });
    const manualField = h("div", { hidden: true }, field("Channel ID", manual, "Couldn't list channels: enter the channel's ID instead (in Slack: channel details → About)."));
    manual.addEventListener("input", () => {
      selected = manual.value.trim();
    });

    const render = () => {
      const q = search.value.trim().toLowerCase().replace(/^#/, "");
      const shown = channels.filter((c) => !q || c.name.toLowerCase().includes(q) || c.id.toLowerCase() === q);
      const limited = shown.slice(0, 300);
      if (selected && !limited.some((c) => c.id === selected)) {
        const chosen = channels.find((c) => c.id === selected);
        if (chosen) limited.unshift(chosen);
      }
      select.replaceChildren(...limited.map((c) =>
        h("option", { value: c.id }, `${c.is_private ? "" : "#"}${c.name}${c.is_private ? " (private)" : ""}`)));
      if (selected) select.value = selected;
      const count = shown.length === 0
        ? "No channel matches."
        : `${shown.length} ${shown.length === 1 ? "channel" : "channels"}${shown.length > limited.length ? `, showing the first ${limited.length}: refine the search` : ""}.`;
      const chosen = channels.find((c) => c.id === selected);
      status.textContent = chosen ? `${count} Selected: ${chosen.is_private ? "" : "#"}${chosen.name}.` : count;
    };
    search.addEventListener("input", render);
    select.addEventListener("change", () => {
      selected = select.value;
      render();
    });

    api("GET", `v1/connections/${encodeURIComponent(connectionId)}/channels`).then((answer) => {
      channels = (answer.data || []).slice().sort((a, b) => a.name.localeCompare(b.name));
      if (selected && !channels.some((c) => c.id === selected)) {
        channels.unshift({ id: selected, name: selected, is_private: false });
      }
      render();
    }).catch((err) => {
      if (state.expired) return;
      status.textContent = errorText(err);
      select.hidden = true;
      search.hidden = true;
      manualField.hidden = false;
      manual.value = selected;
    });

    const el = h("div", { class: "picker", testid: "channel-picker" },
      h("label", { for: selectId, class: "label" }, "Slack channel"),
      search, select, status, manualField,
      h("div", { class: "hint" }, "Private channels need the app invited first (/invite in the channel)."));
    return { el, value: () => selected };
  }

  // --------------------------------------------------------------- rules

  async function viewRules(view, ctx) {
    const [{ data: rules }, { data: connections }] = await Promise.all([api("GET", "v1/rules"), api("GET", "v1/connections")]);
    if (!ctx.alive()) return;
    const connectionMap = byId(connections);
    const newRule = connections.length
      ? h("a", { class: "button primary", href: "#/rules/new", testid: "new-rule" }, "New rule")
      : null;

    const item = (rule) => {
      const message = transientSlot();
      const toggle = h("input", { type: "checkbox", checked: rule.enabled, testid: "rule-toggle", "aria-label": `${rule.name}: enabled` });
      toggle.addEventListener("change", async () => {
        toggle.disabled = true;
        try {
          const updated = await api("PATCH", `v1/rules/${encodeURIComponent(rule.id)}`, { enabled: toggle.checked });
          rule.enabled = updated.enabled;
          row.dataset.enabled = String(rule.enabled);
          toast(`${rule.name} ${rule.enabled ? "enabled" : "disabled"}.`);
        } catch (err) {
          toggle.checked = rule.enabled;
          if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
        } finally {
          toggle.disabled = false;
        }
      });
      const row = h("li", { class: "item", testid: "rule", "data-id": rule.id, "data-enabled": String(rule.enabled) },
        h("div", { class: "item-main" },
          h("div", { class: "item-title" }, rule.name),
          h("div", { class: "item-sub" }, ruleSummary(rule, connectionMap))),
        h("div", { class: "actions" },
          h("label", { class: "check" }, toggle, "Enabled"),
          h("a", { class: "button small-button", href: `#/rules/${encodeURIComponent(rule.id)}`, testid: "edit-rule", "aria-label": `Edit ${rule.name}` }, "Edit"),
          confirmButton("Delete", "Delete rule", async () => {
            try {
              await api("DELETE", `v1/rules/${encodeURIComponent(rule.id)}`);
              toast(`${rule.name} deleted.`);
              if (state.rerender) state.rerender();
            } catch (err) {
              if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
            }
          }, "delete-rule")),
        message);
      return row;
    };

    view.replaceChildren(
      pageHead("Rules", "Each rule sends matching events to one destination.", newRule),
      rules.length
        ? h("ul", { class: "list", testid: "rule-list" }, rules.map(item))
        : h("div", { class: "empty", testid: "empty-rules" },
          h("p", null, h("strong", null, connections.length ? "No rules yet." : `No destinations yet — ${destinationChoices()} first.`)),
          h("p", { class: "small" }, connections.length
            ? "Create a rule to route alerts, for example every alert.triggered of high severity to Slack."
            : "Rules send events to a destination, so add one before creating a rule."),
          connections.length
            ? h("a", { class: "button primary", href: "#/rules/new" }, "Create a rule")
            : h("a", { class: "button primary", href: "#/connections" }, "Add a destination")));
  }

  async function viewRuleEditor(view, ctx, id) {
    const isNew = id === "new";
    const [{ data: connections }, rule] = await Promise.all([
      api("GET", "v1/connections"),
      isNew ? Promise.resolve(null) : api("GET", `v1/rules/${encodeURIComponent(id)}`),
    ]);
    if (!ctx.alive()) return;
    const connectionMap = byId(connections);
    const initial = rule || {
      name: "",
      events: ["alert.triggered"],
      min_severity: null,
      conditions: [],
      connection_id: connections.length === 1 ? connections[0].id : "",
      target: {},
      enabled: true,
      dedup_seconds: null,
      max_per_hour: null,
    };

    const name = h("input", { type: "text", required: true, value: initial.name, testid: "rule-name", autocomplete: "off", maxlength: "128", placeholder: "High latency to on-call" });
    const events = h("input", { type: "text", required: true, value: (initial.events || []).join(", "), testid: "rule-events", autocomplete: "off", spellcheck: "false" });
    const severity = h("select", { testid: "rule-severity" },
      h("option", { value: "" }, "Any severity"),
      SEVERITIES.map((s) => h("option", { value: s }, severityLabel(s))));
    severity.value = initial.min_severity || "";

    // Noise control: blank means off.
    const dedup = h("input", { type: "number", min: "1", max: "86400", step: "1", inputmode: "numeric", value: initial.dedup_seconds ?? "", testid: "rule-dedup", placeholder: "Off", autocomplete: "off" });
    const perHour = h("input", { type: "number", min: "1", max: "100000", step: "1", inputmode: "numeric", value: initial.max_per_hour ?? "", testid: "rule-max-per-hour", placeholder: "No limit", autocomplete: "off" });
    const wholeOrNull = (input) => (input.value.trim() === "" ? null : Number(input.value));

    // Conditions builder
    const conditionRows = h("div", { class: "conditions", testid: "conditions" });
    const conditionsEmpty = h("p", { class: "small muted" }, "No conditions: every event that matches the types and severity is sent.");
    const syncEmpty = () => {
      conditionsEmpty.hidden = conditionRows.children.length > 0;
    };
    const addCondition = (condition) => {
      const path = h("input", { type: "text", value: condition.path || "", testid: "cond-path", placeholder: "value", spellcheck: "false", autocomplete: "off" });
      const op = h("select", { testid: "cond-op" }, OPS.map(([v, label]) => h("option", { value: v }, label)));
      op.value = condition.op || "eq";
      const value = h("input", { type: "text", value: formatConditionValue(condition.value), testid: "cond-value", spellcheck: "false", autocomplete: "off" });
      const placeholder = () => {
        value.placeholder = { in: "a, b, c", exists: "true (default) or false", contains: "text" }[op.value] || "1500";
      };
      op.addEventListener("change", placeholder);
      placeholder();
      const remove = h("button", { type: "button", class: "ghost small-button", testid: "cond-remove" }, "Remove");
      const row = h("div", { class: "condition", testid: "condition" },
        field("Field path", path), field("Operator", op), field("Value", value), remove);
      remove.addEventListener("click", () => {
        const next = row.nextElementSibling || row.previousElementSibling;
        row.remove();
        relabel();
        syncEmpty();
        (next ? $("input", next) : addButton).focus();
      });
      conditionRows.append(row);
      relabel();
      syncEmpty();
      return row;
    };
    const relabel = () => {
      [...conditionRows.children].forEach((row, i) => {
        $("[data-testid=cond-remove]", row).setAttribute("aria-label", `Remove condition ${i + 1}`);
        row.dataset.index = String(i);
      });
    };
    const addButton = h("button", { type: "button", class: "small-button", testid: "add-condition" }, "+ Add condition");
    addButton.addEventListener("click", () => $("input", addCondition({ path: "", op: "gt", value: undefined })).focus());
    for (const condition of initial.conditions || []) addCondition(condition);
    syncEmpty();

    // Destination and its target
    const connection = h("select", { testid: "rule-connection", required: true },
      h("option", { value: "" }, "Choose a destination…"),
      connections.map((c) => h("option", { value: c.id }, `${c.name} (${typeName(c.type)})`)));
    connection.value = initial.connection_id || "";
    const targetSlot = h("div", { testid: "rule-target" });
    let targetValue = () => ({});
    const renderTarget = () => {
      const chosen = connectionMap.get(connection.value);
      const sameAsInitial = rule && chosen && chosen.id === rule.connection_id;
      const start = sameAsInitial ? rule.target || {} : {};
      if (!chosen) {
        targetSlot.replaceChildren();
        targetValue = () => ({});
      } else if (chosen.type === "slack") {
        const picker = channelPicker(chosen.id, start.channel || "");
        targetSlot.replaceChildren(picker.el);
        targetValue = () => ({ channel: picker.value() });
      } else if (chosen.type === "email") {
        const to = h("input", { type: "text", value: (start.to || []).join(", "), testid: "rule-recipients", placeholder: "oncall@example.com, cto@example.com", autocomplete: "off" });
        targetSlot.replaceChildren(field("Recipients", to, "Comma-separated, up to 50 addresses."));
        targetValue = () => ({ to: splitList(to.value) });
      } else if (chosen.type === "pagerduty") {
        targetSlot.replaceChildren(h("p", { class: "small muted", testid: "rule-target-pagerduty" }, "PagerDuty gets every matching event on its integration; acknowledged and resolved alerts update the incident they opened. Nothing else to choose."));
        targetValue = () => ({});
      } else {
        const text = CHAT_KINDS[chosen.type]
          ? `Every matching event is posted to this ${typeName(chosen.type)} channel; nothing else to choose.`
          : "Webhooks receive every matching event at their URL; nothing else to choose.";
        targetSlot.replaceChildren(h("p", { class: "small muted", testid: "rule-no-target" }, text));
        targetValue = () => ({});
      }
    };
    connection.addEventListener("change", renderTarget);
    renderTarget();

    const enabled = h("input", { type: "checkbox", checked: initial.enabled !== false, testid: "rule-enabled" });
    const error = h("div", { class: "notice notice-bad", role: "alert", testid: "form-error" });
    const save = h("button", { type: "submit", class: "primary", testid: "rule-save" }, isNew ? "Create rule" : "Save changes");
    const cancel = h("a", { class: "button ghost", href: "#/rules" }, "Cancel");

    const deleteButton = isNew ? null : confirmButton("Delete rule", "Delete for good", async () => {
      try {
        await api("DELETE", `v1/rules/${encodeURIComponent(rule.id)}`);
        toast(`${rule.name} deleted.`);
        window.location.hash = "#/rules";
      } catch (err) {
        if (!state.expired) error.textContent = errorText(err);
      }
    }, "delete-rule");

    const clearInvalid = () => {
      for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    };
    // Server messages name the field: `conditions[0].value: …`, `target.channel: …`.
    const markInvalid = (message) => {
      const match = /^([a-z_]+)(?:\[(\d+)\])?(?:\.([a-z_]+))?/.exec(message || "");
      if (!match) return;
      const [, key, index, sub] = match;
      let el = null;
      if (key === "name") el = name;
      else if (key === "events") el = events;
      else if (key === "min_severity") el = severity;
      else if (key === "dedup_seconds") el = dedup;
      else if (key === "max_per_hour") el = perHour;
      else if (key === "connection_id") el = connection;
      else if (key === "target") el = $("input, select", targetSlot);
      else if (key === "conditions" && index !== undefined) {
        const row = conditionRows.children[Number(index)];
        if (row) el = $(`[data-testid=cond-${sub === "op" ? "op" : sub === "path" ? "path" : "value"}]`, row);
      }
      if (el) el.setAttribute("aria-invalid", "true");
    };

    const collect = () => {
      const conditions = [...conditionRows.children].map((row) => {
        const op = $("[data-testid=cond-op]", row).value;
        const condition = { path: $("[data-testid=cond-path]", row).value.trim(), op };
        const value = parseConditionValue($("[data-testid=cond-value]", row).value, op);
        if (value !== undefined) condition.value = value;
        return condition;
      });
      const body = {
        name: name.value.trim(),
        events: splitList(events.value),
        connection_id: connection.value,
        target: targetValue(),
        conditions,
        enabled: enabled.checked,
      };
      if (severity.value) body.min_severity = severity.value;
      else if (!isNew) body.min_severity = null;
      for (const [key, input] of [["dedup_seconds", dedup], ["max_per_hour", perHour]]) {
        const value = wholeOrNull(input);
        if (value !== null || !isNew) body[key] = value;
      }
      return body;
    };

    const localProblem = (body) => {
      if (!body.name) return ["name", "Give the rule a name."];
      if (!body.events.length) return ["events", "Enter at least one event type, such as alert.triggered."];
      if (!body.connection_id) return ["connection_id", "Choose where to send the events."];
      const chosen = connectionMap.get(body.connection_id);
      if (chosen && chosen.type === "slack" && !body.target.channel) return ["target", "Pick a Slack channel."];
      if (chosen && chosen.type === "email" && !body.target.to.length) return ["target", "Enter at least one recipient."];
      if (body.dedup_seconds !== undefined && body.dedup_seconds !== null && !(Number.isInteger(body.dedup_seconds) && body.dedup_seconds >= 1 && body.dedup_seconds <= 86400)) return ["dedup_seconds", "Skip repeats for 1 to 86400 seconds, or leave it blank."];
      if (body.max_per_hour !== undefined && body.max_per_hour !== null && !(Number.isInteger(body.max_per_hour) && body.max_per_hour >= 1 && body.max_per_hour <= 100000)) return ["max_per_hour", "Allow 1 to 100000 per hour, or leave it blank."];
      const blank = body.conditions.findIndex((c) => !c.path);
      if (blank >= 0) return [`conditions[${blank}].path`, `Condition ${blank + 1} needs a field path, such as value.`];
      return null;
    };

    const form = h("form", { class: "card stack", testid: "rule-form", novalidate: true, "aria-label": isNew ? "New rule" : "Edit rule" },
      field("Name", name),
      h("div", { class: "field-row" },
        field("Event types", events, "Comma-separated: alert.triggered, alert.* for every alert event, or * for all."),
        field("Minimum severity", severity, "Read from the payload's severity field.")),
      h("fieldset", { class: "stack-sm" },
        h("legend", null, "Conditions"),
        h("p", { class: "hint" }, "All must hold. A field path is a dot path into the payload, like value or labels.env. Numbers and true/false are compared as such; put text in \"quotes\" to keep it text; separate \"is one of\" values with commas."),
        conditionRows, conditionsEmpty, h("div", null, addButton)),
      h("div", { class: "field-row" }, field("Destination", connection), targetSlot),
      h("fieldset", { class: "stack-sm", testid: "rule-noise" },
        h("legend", null, "Noise control"),
        h("div", { class: "field-row" },
          field("Skip repeats of an alert for (seconds)", dedup, "A repeated alert.triggered for the same alert within this time is recorded as suppressed, not sent. Blank: off."),
          field("At most per hour", perHour, "Past this many in an hour the rest are suppressed; the next message says how many. Acknowledged and resolved always go out."))),
      connections.length ? null : notice("warn", "No destinations yet. ", h("a", { href: "#/connections" }, "Add one first"), "."),
      h("label", { class: "check" }, enabled, "Enabled"),
      error,
      h("div", { class: "form-actions" }, save, cancel, h("span", { class: "spacer" }), deleteButton));
    clearErrorOnFix(form, error);

    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearInvalid();
      error.replaceChildren();
      const body = collect();
      const problem = localProblem(body);
      if (problem) {
        markInvalid(problem[0]);
        error.textContent = problem[1];
        const invalid = $("[aria-invalid=true]", form);
        if (invalid) invalid.focus();
        return;
      }
      try {
        await busy(save, "Saving…", () => (isNew
          ? api("POST", "v1/rules", body)
          : api("PATCH", `v1/rules/${encodeURIComponent(rule.id)}`, body)));
        toast(isNew ? `Rule ${body.name} created.` : `Rule ${body.name} saved.`);
        window.location.hash = "#/rules";
      } catch (err) {
        if (state.expired) return;
        markInvalid(err.message);
        error.textContent = errorText(err);
        error.scrollIntoView({ block: "nearest" });
      }
    });

    view.replaceChildren(
      h("p", { class: "small" }, h("a", { href: "#/rules" }, "← All rules")),
      pageHead(isNew ? "New rule" : `Edit ${rule.name}`, "Which events to send, and where."),
      form);
  }

  // ---------------------------------------------------------- deliveries

  let deliveriesFilter = "";

  async function viewDeliveries(view, ctx) {
    let connections = new Map();
    let rules = new Map();
    const loadNames = async () => {
      const [c, r] = await Promise.all([api("GET", "v1/connections"), api("GET", "v1/rules")]);
      connections = byId(c.data);
      rules = byId(r.data);
    };
    await loadNames();
    if (!ctx.alive()) return;

    const testSlot = h("div");
    const listSlot = h("div", { testid: "delivery-list", "aria-live": "off" });
    const more = h("div", { class: "form-actions" });
    const message = h("div");
    let loaded = [];
    let next = null;
    let lastText = "";

    const query = (after) => {
      const params = new URLSearchParams({ limit: "50" });
      if (deliveriesFilter) params.set("status", deliveriesFilter);
      if (after) params.set("after", after);
      return `v1/deliveries?${params}`;
    };

    const render = () => {
      if (loaded.length) {
        // Whatever arrives, the rows loaded by then are drawn again with it.
        loadEventSummaries(loaded.map((d) => d.event_id)).then((added) => {
          if (added && ctx.alive()) render();
        });
      }
      listSlot.replaceChildren(loaded.length
        ? h("ul", { class: "rows" }, loaded.map((d) => deliveryRow(d, connections, rules)))
        : h("div", { class: "empty", testid: "empty-deliveries" },
          h("p", null, h("strong", null, deliveriesFilter ? `No ${deliveriesFilter} deliveries.` : "No deliveries yet.")),
          h("p", { class: "small" }, deliveriesFilter ? "Try another filter." : "Send a test event: each rule it matches creates a delivery here.")));
      more.replaceChildren();
      if (next) {
        const button = h("button", { type: "button", testid: "load-more" }, "Load more");
        button.addEventListener("click", async () => {
          try {
            const page = await busy(button, "Loading…", () => api("GET", query(next)));
            loaded = loaded.concat(page.data);
            next = page.next;
            render();
          } catch (err) {
            if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
          }
        });
        more.append(button);
      }
    };

    const refresh = async (force) => {
      const page = await api("GET", query());
      if (!ctx.alive()) return;
      if (page.data.some((d) => !connections.has(d.connection_id) || !rules.has(d.rule_id))) await loadNames();
      const text = JSON.stringify(page.data);
      // Keep pages already loaded beyond the first unless the first changed.
      if (force || text !== lastText || !listSlot.contains(document.activeElement)) {
        const changed = text !== lastText;
        lastText = text;
        if (force || changed || loaded.length <= page.data.length) {
          loaded = page.data;
          next = page.next;
        }
        render();
      }
    };

    const filters = h("div", { class: "segmented", role: "group", "aria-label": "Filter by state" },
      [["", "All"], ...DELIVERY_STATES.map((s) => [s, s[0].toUpperCase() + s.slice(1)])].map(([value, label]) => {
        const button = h("button", { type: "button", "aria-pressed": String(deliveriesFilter === value), testid: `filter-${value || "all"}` }, label);
        button.addEventListener("click", async () => {
          deliveriesFilter = value;
          for (const b of filters.children) b.setAttribute("aria-pressed", String(b === button));
          message.replaceChildren();
          try {
            await refresh(true);
          } catch (err) {
            if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
          }
        });
        return button;
      }));

    const retryDead = h("button", { type: "button", testid: "retry-dead" }, "Retry all dead");
    retryDead.addEventListener("click", async () => {
      message.replaceChildren();
      try {
        const { queued } = await busy(retryDead, "Queuing…", () => api("POST", "v1/deliveries/retry", { status: "dead" }));
        const text = queued === 0 ? "There were no dead deliveries to retry." : `Queued ${queued} ${queued === 1 ? "delivery" : "deliveries"} for another attempt.`;
        message.replaceChildren(notice(queued === 0 ? "info" : "ok", h("span", { testid: "retry-dead-result" }, text)));
        await refresh(true);
      } catch (err) {
        if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
      }
    });

    await refresh(true);
    if (!ctx.alive()) return;
    ctx.every(REFRESH_MS, () => refresh(false).catch(() => {
      // Retried on the next tick; expiry is handled in api().
    }));

    view.replaceChildren(
      pageHead("Deliveries", "Every event sent to a destination, with each attempt. Updates every few seconds.",
        testEventToggle(ctx, testSlot, () => connections, () => refresh(true).catch(() => {})), retryDead),
      h("div", { class: "stack" },
        testSlot,
        message,
        h("section", { class: "card", "aria-label": "Deliveries" },
          h("div", { class: "toolbar" }, filters, h("span", { class: "live" }, "Live")),
          listSlot,
          more)));
  }

  async function viewDelivery(view, ctx, id) {
    const path = `v1/deliveries/${encodeURIComponent(id)}`;
    const [delivery, { data: connectionList }, { data: ruleList }] = await Promise.all([
      api("GET", path),
      api("GET", "v1/connections"),
      api("GET", "v1/rules"),
    ]);
    if (!ctx.alive()) return;
    const connections = byId(connectionList);
    const rules = byId(ruleList);
    const eventBox = h("div", { class: "stack-sm" }, h("p", { class: "small muted" }, "Loading the event…"));
    api("GET", `v1/events/${encodeURIComponent(delivery.event_id)}`).then((event) => {
      eventBox.replaceChildren(
        h("dl", { class: "facts" },
          h("dt", null, "Type"), h("dd", null, h("code", null, event.event)),
          h("dt", null, "Received"), h("dd", null, absolute(event.received_at)),
          event.resource ? [h("dt", null, "Resource"), h("dd", null, `${event.resource}${event.resource_id ? ` ${event.resource_id}` : ""}`)] : null),
        h("div", { class: "label" }, "Payload"),
        h("pre", { testid: "event-payload" }, JSON.stringify(event.payload, null, 2)));
    }).catch((err) => {
      if (!state.expired) eventBox.replaceChildren(h("p", { class: "small muted" }, errorText(err)));
    });

    const head = h("div");
    const facts = h("div");
    const attempts = h("div");
    const message = h("div");
    const retry = h("button", { type: "button", testid: "retry-delivery" }, "Retry now");
    const retryHint = h("p", { class: "hint retry-hint", id: uid("h"), testid: "retry-hint" });
    retry.setAttribute("aria-describedby", retryHint.id);
    let current = delivery;

    const render = (d) => {
      current = d;
      const connection = connections.get(d.connection_id);
      const rule = rules.get(d.rule_id);
      // A queued delivery has nothing to retry: say when it runs instead.
      const queued = !TERMINAL.has(d.status);
      const suppressed = d.status === "suppressed";
      const why = suppressed
        ? "Held back by the rule's noise control: it is never sent."
        : queued ? queuedReason(d) : "";
      retry.disabled = queued || suppressed;
      retry.title = why;
      retryHint.textContent = why;
      retryHint.hidden = !why;
      head.replaceChildren(
        h("div", { class: "page-head" },
          h("div", null,
            h("h1", null, "Delivery ", deliveryPill(d.status)),
            h("p", { class: "mono small break" }, d.id)),
          h("div", { class: "retry-box" }, retry, retryHint)));
      facts.replaceChildren(
        h("dl", { class: "facts", testid: "delivery-facts" },
          h("dt", null, "Destination"), h("dd", null, connection ? `${connection.name} (${typeName(connection.type)})` : d.connection_id),
          h("dt", null, "Rule"), h("dd", null, rule ? h("a", { href: `#/rules/${encodeURIComponent(rule.id)}` }, rule.name) : d.rule_id),
          h("dt", null, "Created"), h("dd", null, absolute(d.created_at), " (", timeEl(d.created_at), ")"),
          h("dt", null, "Attempts"), h("dd", null, String(d.attempt_count)),
          d.alert ? [h("dt", null, "Alert"), h("dd", { class: "mono break", testid: "delivery-alert" }, d.alert)] : null,
          d.suppressed_before
            ? [h("dt", null, "Suppressed before it"), h("dd", null, String(d.suppressed_before))]
            : null,
          d.next_attempt_at && !TERMINAL.has(d.status)
            ? [h("dt", null, "Next attempt"), h("dd", null, absolute(d.next_attempt_at), " (", timeEl(d.next_attempt_at), ")")]
            : null));
      const list = d.attempts || [];
      attempts.replaceChildren(
        h("h2", null, `Attempts (${list.length})`),
        list.length
          ? h("ol", { class: "timeline", testid: "attempts" }, list.map((a, i) => attemptItem(a, i)).reverse())
          : h("p", { class: "muted", testid: "no-attempts" }, "No attempts yet: the first one is on its way."));
    };
    render(delivery);

    retry.addEventListener("click", async () => {
      message.replaceChildren();
      try {
        await busy(retry, "Queuing…", () => api("POST", `${path}/retry`));
        message.replaceChildren(notice("ok", "Queued for another attempt."));
        render(await api("GET", path));
      } catch (err) {
        if (!state.expired) message.replaceChildren(notice("bad", errorText(err)));
      }
    });

    let lastText = JSON.stringify(delivery);
    ctx.every(REFRESH_MS, async () => {
      if (TERMINAL.has(current.status) && current.attempts && current.attempts.length) return;
      try {
        const fresh = await api("GET", path);
        const text = JSON.stringify(fresh);
        if (ctx.alive() && text !== lastText) {
          lastText = text;
          render(fresh);
        }
      } catch (_) {
        // Retried on the next tick.
      }
    });

    view.replaceChildren(
      h("p", { class: "small" }, h("a", { href: "#/deliveries", testid: "back-to-deliveries" }, "← All deliveries")),
      head,
      h("div", { class: "stack" },
        message,
        h("section", { class: "card" }, facts),
        h("section", { class: "card stack-sm", "aria-label": "Attempts" }, attempts),
        h("section", { class: "card stack-sm", "aria-label": "Event" }, h("h2", null, "Event"), eventBox)));
  }

  function queuedReason(d) {
    const next = d.next_attempt_at;
    const which = d.attempt_count ? "next" : "first";
    if (next && Date.parse(next) > Date.now() + 5000) {
      return `Already queued: the ${which} attempt is due ${absolute(next)} (${relative(next)}). Nothing to retry until then.`;
    }
    return `Already queued: the ${which} attempt is on its way.`;
  }

  function attemptItem(a, index) {
    const ok = !a.error && a.status_code >= 200 && a.status_code < 300;
    const meta = [];
    if (a.status_code) meta.push(`HTTP ${a.status_code}`);
    meta.push(`${a.duration_ms} ms`);
    return h("li", { class: "card attempt", testid: "attempt", "data-ok": String(ok) },
      h("div", { class: "attempt-head" },
        h("h3", null, `Attempt ${index + 1}`),
        h("span", { class: `pill ${ok ? "pill-ok" : "pill-bad"}` }, ok ? "Succeeded" : "Failed"),
        h("span", { class: "small muted", testid: "attempt-meta" }, meta.join(" · ")),
        h("span", { class: "small muted" }, absolute(a.at))),
      a.error ? notice("bad", h("span", { testid: "attempt-error" }, a.error)) : null,
      a.response ? [h("div", { class: "label" }, "Response"), h("pre", { testid: "attempt-response" }, a.response)] : null);
  }

  // ---------------------------------------------------------------- boot

  async function boot() {
    window.addEventListener("message", onMessage);
    window.addEventListener("message", onHostMessage);
    window.addEventListener("focus", onFocus);
    const params = new URLSearchParams(window.location.search);
    const launch = params.get("token");
    if (launch) {
      let ok;
      try {
        ok = await exchange(launch);
      } catch (_) {
        showFatal("Could not reach the server. Check your connection and reload the page.");
        return;
      }
      // The launch token has done its job: keep it out of the address and history.
      window.history.replaceState(null, "", window.location.pathname + window.location.hash);
      if (!ok) forgetSession();
    } else {
      restoreSession();
    }
    if (!state.session) {
      state.expired = true;
      showExpired();
      return;
    }
    scheduleExpiry();
    if (state.expired) return;
    await loadCapabilities();
    if (state.expired) return;
    renderShell();
    window.addEventListener("hashchange", route);
    if (!window.location.hash) window.history.replaceState(null, "", `${window.location.pathname}#/overview`);
    await route();
    announceReady();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
