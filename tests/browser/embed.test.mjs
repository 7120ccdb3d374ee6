// Browser tests of the embedded tenant UI, run by tests/api/embed_browser.rs
// (`cargo test --test api embed_browser`), which starts the server, the fake
// Slack, a webhook receiver and a host page, and passes them in the
// environment. Run alone: `node --test tests/browser/embed.test.mjs` with
// the same variables set.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import fs from "node:fs";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run this through cargo test --test api embed_browser`);
  return value;
};

const SWITCHYARD_URL = env("SWITCHYARD_URL");
const HOST_URL = env("HOST_URL");
const SCREENSHOT_DIR = env("SCREENSHOT_DIR");
const WIDE = { width: 1280, height: 1140 };
const NARROW = { width: 360, height: 1140 };

let browser;

before(async () => {
  fs.mkdirSync(SCREENSHOT_DIR, { recursive: true });
  for (const file of fs.readdirSync(SCREENSHOT_DIR)) {
    if (file.startsWith("failure-")) fs.rmSync(path.join(SCREENSHOT_DIR, file));
  }
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-dev-shm-usage",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      // Chromium still looks up Google's hosts in the background; no test
      // reaches the internet, so every name but localhost is unknown to it.
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ],
  });
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh browser context with the host product's page framing `embedUrl`.
 * Collects page errors and CSP violations, which fail the test.
 */
async function openHost(embedUrl, viewport = WIDE) {
  const context = await browser.newContext({ viewport, colorScheme: "light", locale: "en-US" });
  context.setDefaultTimeout(20000);
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) {
      problems.push(`CSP: ${message.text()}`);
    }
  });
  await page.goto(`${HOST_URL}/?src=${encodeURIComponent(embedUrl)}`);
  const ui = page.frameLocator("#switchyard");
  await ui.getByTestId("view").waitFor();
  const frame = await (await page.locator("#switchyard").elementHandle()).contentFrame();
  return { context, page, ui, frame, problems };
}

async function close({ context, problems }) {
  await context.close();
  assert.deepEqual(problems, [], "the UI logged errors or CSP violations");
}

/** Screenshots the framed UI (the iframe's box). */
async function shot(page, name) {
  await page.locator("#switchyard").screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
}

/** Runs a scenario; on failure, keeps a screenshot of where it stood. */
function scenario(name, body) {
  test(name, { timeout: 120000 }, async () => {
    let opened;
    const open = async (...args) => {
      opened = await openHost(...args);
      return opened;
    };
    try {
      await body(open);
    } catch (error) {
      if (opened && !opened.page.isClosed()) {
        const file = `failure-${name.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}.png`;
        await opened.page.screenshot({ path: path.join(SCREENSHOT_DIR, file), fullPage: true }).catch(() => {});
      }
      throw error;
    }
    if (opened) await close(opened);
  });
}

/** The session token the UI keeps (sessionStorage of its frame). */
async function sessionToken(frame) {
  return frame.evaluate(() => JSON.parse(sessionStorage.getItem("switchyard.embed.session")).session);
}

/** `fetch` from inside the UI's frame with its session token. */
async function fetchInFrame(frame, method, url, body) {
  return frame.evaluate(async ({ method, url, body }) => {
    const token = JSON.parse(sessionStorage.getItem("switchyard.embed.session")).session;
    const init = { method, headers: { Authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(url, init);
    const text = await response.text();
    return { status: response.status, body: text ? JSON.parse(text) : null };
  }, { method, url, body });
}

/** Clicks `trigger` and follows the Slack install popup it opens. */
async function installSlack(page, trigger) {
  const [popup] = await Promise.all([page.context().waitForEvent("page"), trigger.click()]);
  // The fake Slack's authorize page redirects straight to the callback,
  // whose result page tells the UI; the UI then closes the popup.
  if (!popup.isClosed()) await popup.waitForEvent("close", { timeout: 20000 });
}

/**
 * A fresh launch URL for workspace A, framed by the host: launch tokens are
 * single use, so each scenario mints its own.
 */
async function launchA() {
  const answer = await fetch(`${SWITCHYARD_URL}/v1/embed/sessions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env("WORKSPACE_A_SECRET_KEY")}`, "Content-Type": "application/json" },
    body: JSON.stringify({ allowed_origins: [HOST_URL] }),
  });
  assert.equal(answer.status, 201);
  return (await answer.json()).url;
}

/** No toast on screen covers a control of the page (toasts sit over the header). */
async function assertToastsClearOfControls(frame) {
  const overlaps = await frame.evaluate(() => {
    const boxes = (selector) => [...document.querySelectorAll(selector)]
      .map((el) => ({ el, r: el.getBoundingClientRect() }))
      .filter(({ r }) => r.width > 0 && r.height > 0);
    const toasts = boxes("[data-testid=toast]");
    const controls = boxes("#view button, #view a, #view input, #view select, #view label.check");
    const found = [];
    for (const t of toasts) {
      for (const c of controls) {
        if (t.r.left < c.r.right && c.r.left < t.r.right && t.r.top < c.r.bottom && c.r.top < t.r.bottom) {
          found.push(`${t.el.textContent} covers ${c.el.dataset.testid || c.el.textContent}`);
        }
      }
      // And a click where the toast is reaches the page underneath.
      const x = t.r.left + t.r.width / 2;
      const y = t.r.top + t.r.height / 2;
      if (t.el.contains(document.elementFromPoint(x, y))) found.push(`${t.el.textContent} takes clicks`);
    }
    return { count: toasts.length, found };
  });
  assert.ok(overlaps.count > 0, "no toast on screen to check");
  assert.deepEqual(overlaps.found, []);
}

/** A select is wide enough for its longest option (nothing truncated). */
async function assertSelectFits(locator) {
  const { widest, room } = await locator.evaluate((select) => {
    const style = getComputedStyle(select);
    const context = document.createElement("canvas").getContext("2d");
    context.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    const widest = Math.max(...[...select.options].map((option) => context.measureText(option.text).width));
    // The room left for text: the box without its padding and the arrow.
    const room = select.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 18;
    return { widest, room };
  });
  assert.ok(widest <= room, `the longest option needs ${widest.toFixed(0)}px, the select has ${room.toFixed(0)}px`);
}

/**
 * Delivery rows line up whatever their state: badges as wide as each
 * other, the event starting at the same x; in a narrow frame every row
 * wraps the same way (attempts and time under the event).
 */
async function assertDeliveryRowsAligned(frame, narrow) {
  const rows = await frame.evaluate(() => [...document.querySelectorAll("[data-testid=delivery-list] [data-testid=delivery-row]")].map((row) => {
    const box = (selector) => row.querySelector(selector).getBoundingClientRect();
    const pill = box(".pill");
    const main = box(".row-main");
    const side = box(".row-side");
    return { status: row.dataset.status, pillWidth: pill.width, mainLeft: main.left, mainBottom: main.bottom, sideLeft: side.left, sideTop: side.top };
  }));
  assert.ok(new Set(rows.map((r) => r.status)).size > 1, `rows of one state only: ${JSON.stringify(rows)}`);
  const same = (values, what) => assert.ok(Math.max(...values) - Math.min(...values) < 1, `${what} differ: ${values}`);
  same(rows.map((r) => r.pillWidth), "badge widths");
  same(rows.map((r) => r.mainLeft), "event columns");
  if (narrow) {
    for (const r of rows) {
      assert.ok(Math.abs(r.sideLeft - r.mainLeft) < 1 && r.sideTop >= r.mainBottom - 1, `a ${r.status} row wraps differently: ${JSON.stringify(r)}`);
    }
  } else {
    same(rows.map((r) => r.sideTop - r.mainBottom), "row heights");
  }
}

scenario("a tenant adds a webhook, routes high alerts to it and watches the delivery succeed", async (open) => {
  const host = await open(env("EMBED_URL_A"));
  const { page, ui, frame } = host;

  // The launch token left the address once exchanged.
  assert.ok(!frame.url().includes("token="), frame.url());
  await ui.getByTestId("workspace-name").filter({ hasText: "Acme Corp" }).waitFor();
  await ui.getByTestId("empty-connections").getByText("No destinations yet — connect Slack, add a webhook or an email sender").waitFor();
  // This instance has Slack and Resend: nothing is marked unavailable.
  assert.equal(await ui.getByTestId("unavailable").count(), 0);
  await shot(page, "overview-empty-1280");

  // Add the webhook endpoint: the signing secret is shown once.
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-webhook").click();
  await ui.getByTestId("webhook-name").fill("Ops endpoint");
  await ui.getByTestId("webhook-url").fill(env("RECEIVER_URL"));
  await ui.getByTestId("webhook-save").click();
  const secret = await ui.getByTestId("signing-secret-value").inputValue();
  assert.match(secret, /^whsec_/);
  await ui.getByTestId("signing-secret").getByText("shown only once").waitFor();
  const connection = ui.getByTestId("connection").filter({ hasText: "Ops endpoint" });
  await connection.getByTestId("connection-status").filter({ hasText: "Active" }).waitFor();
  await shot(page, "connections-1280");
  await ui.getByTestId("secret-done").click();
  await ui.getByTestId("signing-secret").waitFor({ state: "detached" });

  // Send a test message to it.
  await connection.getByTestId("test-connection").click();
  await connection.locator('[data-testid=test-outcome][data-ok="true"]').getByText("HTTP 200").waitFor();

  // Leaving and coming back never shows the secret again.
  await ui.getByTestId("nav-overview").click();
  await ui.getByTestId("overview-connection").filter({ hasText: "Ops endpoint" }).waitFor();
  await ui.getByTestId("nav-connections").click();
  await connection.waitFor();
  assert.ok(!(await frame.content()).includes(secret), "the signing secret was shown twice");

  // A rule: alert.triggered, high and above, value > 1500.
  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  // A missing name is marked; typing one clears the mark and the message.
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("form-error").getByText("Give the rule a name.").waitFor();
  assert.equal(await ui.getByTestId("rule-name").getAttribute("aria-invalid"), "true");
  await ui.getByTestId("rule-name").fill("High latency to ops");
  await ui.getByTestId("form-error").waitFor({ state: "hidden" });
  assert.equal(await ui.getByTestId("form-error").textContent(), "");
  assert.equal(await ui.getByTestId("rule-name").getAttribute("aria-invalid"), null);
  assert.equal(await ui.getByTestId("rule-events").inputValue(), "alert.triggered");
  // One wording for the minimum severity, here and in the rule list.
  const severities = await ui.getByTestId("rule-severity").locator("option").allTextContents();
  assert.deepEqual(severities, ["Any severity", "Info and above", "Low and above", "Medium and above", "High and above", "Critical only"]);
  await ui.getByTestId("rule-severity").selectOption("high");
  await ui.getByTestId("add-condition").click();
  await ui.getByTestId("cond-path").fill("value");
  await ui.getByTestId("cond-op").selectOption("gt");
  await ui.getByTestId("cond-value").fill("1500");
  await ui.getByTestId("rule-connection").selectOption({ label: "Ops endpoint (Webhook)" });
  await shot(page, "rule-editor-1280");

  // A 422 shows next to the form and marks the field.
  await ui.getByTestId("rule-events").fill("alert triggered");
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("form-error").getByText("events[0]").waitFor();
  assert.equal(await ui.getByTestId("rule-events").getAttribute("aria-invalid"), "true");
  await ui.getByTestId("rule-events").fill("alert.triggered");
  await ui.getByTestId("form-error").waitFor({ state: "hidden" });
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "High latency to ops" }).getByText("High and above").waitFor();

  // The condition went out typed: value > 1500 as a number.
  const rules = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`);
  assert.equal(rules.status, 200);
  const rule = rules.body.data.find((r) => r.name === "High latency to ops");
  assert.deepEqual(rule.events, ["alert.triggered"]);
  assert.equal(rule.min_severity, "high");
  assert.deepEqual(rule.conditions, [{ path: "value", op: "gt", value: 1500 }]);
  assert.equal(rule.enabled, true);

  // Send the test event (critical, 2000) and watch it succeed.
  await ui.getByTestId("nav-deliveries").click();
  await ui.getByTestId("open-test-event").click();
  await ui.getByTestId("test-severity").selectOption("critical");
  await ui.getByTestId("test-value").fill("2000");
  await ui.getByTestId("test-send").click();
  await ui.getByTestId("test-result").getByText("It matched 1 rule").waitFor();
  await ui.locator('[data-testid=test-delivery] [data-status="succeeded"]').waitFor();
  // The log refreshes by itself every 3 s.
  const row = ui.locator('[data-testid=delivery-list] [data-testid=delivery-row][data-status="succeeded"]');
  await row.first().waitFor({ timeout: 10000 });
  await ui.getByTestId("test-close").click();
  await ui.getByTestId("filter-succeeded").click();
  await row.first().waitFor();
  await ui.getByTestId("filter-dead").click();
  await ui.getByTestId("empty-deliveries").waitFor();
  await ui.getByTestId("filter-all").click();
  await row.first().waitFor();
  // The row names the event: severity, resource and value.
  const event = row.first().locator('[data-testid=delivery-event][data-loaded="true"]');
  await event.waitFor();
  assert.equal(await event.textContent(), "Criticalapi_latency_p95 · 2000");
  await row.first().getByText("alert.triggered → Ops endpoint · Rule: High latency to ops").waitFor();
  await shot(page, "delivery-log-1280");

  // Its detail: every attempt with status code and response.
  await row.first().click();
  await ui.getByTestId("delivery-status").filter({ hasText: "Succeeded" }).waitFor();
  // It names the alert the event belongs to.
  assert.equal(await ui.getByTestId("delivery-alert").textContent(), "alert:alrt_tyrion_42");
  const attempt = ui.getByTestId("attempt");
  assert.equal(await attempt.count(), 1);
  await attempt.getByTestId("attempt-meta").getByText("HTTP 200").waitFor();
  await attempt.getByTestId("attempt-response").waitFor();
  await ui.getByTestId("event-payload").getByText('"severity": "critical"').waitFor();
  await shot(page, "delivery-detail-1280");

  // Retry it: queued again, then succeeds again with a second attempt.
  await ui.getByTestId("retry-delivery").click();
  await ui.getByTestId("attempt").nth(1).waitFor({ timeout: 15000 });
});

scenario("a tenant connects Slack through the popup and picks a channel", async (open) => {
  const host = await open(await launchA());
  const { page, ui } = host;

  await ui.getByTestId("nav-connections").click();
  await installSlack(page, ui.getByTestId("connect-slack"));
  const slack = ui.locator('[data-testid=connection][data-type="slack"]').filter({ hasText: env("SLACK_TEAM_NAME") });
  await slack.waitFor();
  await slack.getByTestId("connection-status").filter({ hasText: "Active" }).waitFor();

  // A rule to #general, chosen from the searchable picker.
  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  await ui.getByTestId("rule-name").fill("Alerts to Slack");
  await ui.getByTestId("rule-connection").selectOption({ label: `Slack: ${env("SLACK_TEAM_NAME")} (Slack)` });
  const picker = ui.getByTestId("channel-picker");
  await picker.locator("option").first().waitFor({ state: "attached" });
  assert.ok((await picker.locator("option").count()) > 100, "the channel list is loaded");
  await ui.getByTestId("channel-search").fill("gener");
  await picker.getByText("1 channel").waitFor();
  await ui.getByTestId("channel-select").selectOption("C0000001");
  await shot(page, "rule-editor-slack-1280");
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "Alerts to Slack" }).filter({ hasText: "C0000001" }).waitFor();

  // The test event now fans out to Slack (and the webhook of the first scenario).
  await ui.getByTestId("nav-overview").click();
  await ui.getByTestId("open-test-event").click();
  await ui.getByTestId("test-send").click();
  const deliveries = ui.getByTestId("test-delivery");
  await deliveries.filter({ hasText: "Slack" }).locator('[data-status="succeeded"]').waitFor({ timeout: 20000 });
  await ui.getByTestId("test-close").click();
  await ui.getByTestId("recent-deliveries").waitFor();
  await shot(page, "overview-1280");

  await page.setViewportSize(NARROW);
  await ui.getByTestId("recent-deliveries").waitFor();
  await shot(page, "overview-360");
  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("rule").first().waitFor();
  // A toast in a narrow frame stays clear of the rules' buttons.
  await ui.getByTestId("rule-toggle").first().uncheck();
  await ui.getByTestId("toast").filter({ hasText: "disabled" }).waitFor();
  await assertToastsClearOfControls(host.frame);
  await shot(page, "rules-toast-360");
  await ui.getByTestId("rule-toggle").first().check();
  await ui.getByTestId("toast").filter({ hasText: "enabled" }).waitFor();
  await ui.getByTestId("edit-rule").first().click();
  await ui.getByTestId("rule-form").waitFor();
  // The operator select shows its longest label whole in a narrow frame.
  await ui.getByTestId("add-condition").click();
  await ui.getByTestId("cond-op").last().selectOption("gte");
  await assertSelectFits(ui.getByTestId("cond-op").last());
  await shot(page, "rule-editor-360");
  // Nothing overflows sideways in a narrow frame.
  const overflow = await host.frame.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the UI is ${overflow}px wider than a 360px frame`);
});

scenario("a tenant adds an email sender and routes critical alerts to recipients", async (open) => {
  const host = await open(await launchA());
  const { ui, frame } = host;
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-email").click();
  // Only the provider this instance has (Resend, no SMTP) is offered.
  assert.deepEqual(await ui.getByTestId("email-provider").locator("option").allTextContents(), ["Resend"]);
  await ui.getByTestId("email-name").fill("On-call email");
  await ui.getByTestId("email-provider").selectOption("resend");
  await ui.getByTestId("email-from").fill("Alerts <alerts@acme.test>");
  await ui.getByTestId("email-save").click();
  const email = ui.locator('[data-testid=connection][data-type="email"]').filter({ hasText: "On-call email" });
  await email.getByText("alerts@acme.test").waitFor();

  // A test message needs recipients.
  await email.getByTestId("test-connection").click();
  await email.getByTestId("test-to").fill("me@acme.test");
  await email.getByRole("button", { name: "Send test" }).last().click();
  await email.locator('[data-testid=test-outcome][data-ok="true"]').waitFor();

  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  await ui.getByTestId("rule-name").fill("Critical to on-call");
  await ui.getByTestId("rule-severity").selectOption("critical");
  await ui.getByTestId("rule-connection").selectOption({ label: "On-call email (Email)" });
  await ui.getByTestId("rule-recipients").fill("oncall@acme.test, cto@acme.test");
  await ui.getByTestId("add-condition").click();
  await ui.getByTestId("cond-path").fill("account_id");
  await ui.getByTestId("cond-op").selectOption("in");
  await ui.getByTestId("cond-value").fill("acc_casterly, acc_winterfell");
  // Noise control: a bad value is caught before sending, a good one saved.
  await ui.getByTestId("rule-dedup").fill("0");
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("form-error").getByText("Skip repeats for 1 to 86400 seconds").waitFor();
  assert.equal(await ui.getByTestId("rule-dedup").getAttribute("aria-invalid"), "true");
  await ui.getByTestId("rule-dedup").fill("600");
  await ui.getByTestId("rule-max-per-hour").fill("20");
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "Critical to on-call" }).waitFor();
  const rules = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`);
  const rule = rules.body.data.find((r) => r.name === "Critical to on-call");
  assert.deepEqual(rule.target, { to: ["oncall@acme.test", "cto@acme.test"] });
  await ui.getByTestId("rule").filter({ hasText: "Critical to on-call" }).getByText("Critical only").waitFor();
  assert.deepEqual(rule.conditions, [{ path: "account_id", op: "in", value: ["acc_casterly", "acc_winterfell"] }]);
  assert.equal(rule.dedup_seconds, 600);
  assert.equal(rule.max_per_hour, 20);

  // Turn it off from the list, then edit it back on.
  const item = ui.getByTestId("rule").filter({ hasText: "Critical to on-call" });
  await item.getByTestId("rule-toggle").uncheck();
  await ui.getByTestId("toast").filter({ hasText: "disabled" }).waitFor();
  await assertToastsClearOfControls(frame);
  await item.getByTestId("edit-rule").click();
  assert.equal(await ui.getByTestId("rule-enabled").isChecked(), false);
  assert.equal(await ui.getByTestId("cond-value").inputValue(), "acc_casterly, acc_winterfell");
  assert.equal(await ui.getByTestId("rule-dedup").inputValue(), "600");
  assert.equal(await ui.getByTestId("rule-max-per-hour").inputValue(), "20");
  await ui.getByTestId("rule-enabled").check();
  // Blank turns a noise control off.
  await ui.getByTestId("rule-dedup").fill("");
  await ui.getByTestId("rule-save").click();
  await item.getByTestId("rule-toggle").and(ui.locator(":checked")).waitFor();
  const edited = (await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`)).body.data.find((r) => r.name === "Critical to on-call");
  assert.equal(edited.dedup_seconds, null);
  assert.equal(edited.max_per_hour, 20);
  // The "saved" toast stays clear of the editor's buttons, Delete rule too.
  // The list has a Delete per rule too: wait for the editor's own, or a
  // list not yet replaced by the editor matches three.
  await item.getByTestId("edit-rule").click();
  const editorDelete = ui.getByTestId("rule-form").getByTestId("delete-rule");
  await editorDelete.waitFor();
  await ui.getByTestId("toast").filter({ hasText: "saved" }).waitFor();
  await assertToastsClearOfControls(frame);
  await editorDelete.click();
  await ui.getByTestId("delete-rule-confirm").waitFor();
  await ui.getByRole("button", { name: "Cancel" }).last().click();

  // An email sender that rules use cannot be deleted: the 409 says so.
  await ui.getByTestId("nav-connections").click();
  await email.getByTestId("delete-connection").click();
  await email.getByTestId("delete-connection-confirm").click();
  await email.getByTestId("delete-error").waitFor();
  await email.getByRole("link", { name: "Critical to on-call" }).waitFor();
  // Opening another form puts that error away.
  await ui.getByTestId("add-webhook").click();
  await ui.getByTestId("webhook-form").waitFor();
  await email.getByTestId("delete-error").waitFor({ state: "detached" });
});

scenario("a tenant connects PagerDuty with its integration key and routes alerts to it", async (open) => {
  const host = await open(await launchA());
  const { page, ui, frame } = host;
  const routingKey = env("PAGERDUTY_ROUTING_KEY");
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-pagerduty").click();
  await ui.getByTestId("pagerduty-name").fill("On-call PagerDuty");
  // A key that is not an integration key is refused, and the field says so.
  await ui.getByTestId("pagerduty-routing-key").fill("not-a-key");
  await ui.getByTestId("pagerduty-save").click();
  await ui.getByTestId("form-error").getByText("routing_key").waitFor();
  assert.equal(await ui.getByTestId("pagerduty-routing-key").getAttribute("aria-invalid"), "true");
  await ui.getByTestId("pagerduty-routing-key").fill(routingKey);
  await ui.getByTestId("pagerduty-save").click();
  const pagerduty = ui.locator('[data-testid=connection][data-type="pagerduty"]').filter({ hasText: "On-call PagerDuty" });
  await pagerduty.getByText("key hidden").waitFor();
  // The key is never shown again, on the page or in the API's answers.
  assert.ok(!(await frame.content()).includes(routingKey), "the routing key is on the page");
  const listed = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/connections`);
  const connection = listed.body.data.find((c) => c.type === "pagerduty");
  assert.deepEqual(connection.config, { routing_key: "********" });
  assert.ok(!JSON.stringify(listed.body).includes(routingKey));

  // A test needs no target: it triggers straight away.
  await pagerduty.getByTestId("test-connection").click();
  await pagerduty.locator('[data-testid=test-outcome][data-ok="true"]').waitFor();

  // The rule editor offers it, with nothing to choose as a target.
  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  await ui.getByTestId("rule-name").fill("Page the on-call");
  await ui.getByTestId("rule-connection").selectOption({ label: "On-call PagerDuty (PagerDuty)" });
  await ui.getByTestId("rule-target-pagerduty").waitFor();
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "Page the on-call" }).waitFor();
  const rules = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`);
  const rule = rules.body.data.find((r) => r.name === "Page the on-call");
  assert.equal(rule.connection_id, connection.id);
  assert.deepEqual(rule.target, {});

  // The overview lists it among the destinations.
  await ui.getByTestId("nav-overview").click();
  await ui.getByTestId("overview-connection").filter({ hasText: "On-call PagerDuty" }).getByText("PagerDuty integration").waitFor();
  await shot(page, "pagerduty-overview-1280");

  // Its form fits a narrow frame beside the other destinations' buttons.
  await page.setViewportSize(NARROW);
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-pagerduty").click();
  await ui.getByTestId("pagerduty-form").waitFor();
  await shot(page, "pagerduty-form-360");
  const overflow = await frame.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.ok(overflow <= 0, `the UI is ${overflow}px wider than a 360px frame`);
  // Remove the rule and the connection so later scenarios see A as before.
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/rules/${rule.id}`)).status, 204);
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/connections/${connection.id}`)).status, 204);
});

scenario("a tenant connects a Discord channel: the URL stays masked and rules need no target", async (open) => {
  const host = await open(await launchA());
  const { ui, frame } = host;
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-discord").click();
  await ui.getByTestId("discord-name").fill("Ops Discord");
  // The receiver answers anything; the token in the path is the secret.
  await ui.getByTestId("discord-url").fill(`${env("RECEIVER_URL")}/api/webhooks/42/discord-token-SECRET`);
  await ui.getByTestId("discord-save").click();
  const discord = ui.locator('[data-testid=connection][data-type="discord"]').filter({ hasText: "Ops Discord" });
  await discord.getByText("Discord via http://").waitFor();
  await discord.getByText("/********").waitFor();
  assert.ok(!(await frame.content()).includes("discord-token-SECRET"), "the webhook URL was shown");

  // A test message needs nothing more.
  await discord.getByTestId("test-connection").click();
  await discord.locator('[data-testid=test-outcome][data-ok="true"]').waitFor();

  await ui.getByTestId("nav-overview").click();
  await ui.getByTestId("overview-connection").filter({ hasText: "Ops Discord" }).waitFor();

  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  await ui.getByTestId("rule-name").fill("Alerts to Discord");
  await ui.getByTestId("rule-connection").selectOption({ label: "Ops Discord (Discord)" });
  await ui.getByTestId("rule-no-target").getByText("Discord channel").waitFor();
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "Alerts to Discord" }).waitFor();
  const rules = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`);
  const rule = rules.body.data.find((r) => r.name === "Alerts to Discord");
  assert.deepEqual(rule.target, {});

  // Out of the way of the other scenarios' events.
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/rules/${rule.id}`)).status, 204);
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/connections/${rule.connection_id}`)).status, 204);
});

scenario("a tenant connects a Microsoft Teams channel: the URL stays masked and rules need no target", async (open) => {
  const host = await open(await launchA());
  const { ui, frame } = host;
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-teams").click();
  await ui.getByTestId("teams-form").waitFor();
  // An empty URL is refused in the form, before anything is sent.
  await ui.getByTestId("teams-save").click();
  await ui.getByTestId("form-error").getByText("Paste the channel's webhook URL.").waitFor();
  await ui.getByTestId("teams-name").fill("Ops Teams");
  // A Workflows URL carries its credential in the query (`sig=`).
  await ui.getByTestId("teams-url").fill(`${env("RECEIVER_URL")}/workflows/7f3a/triggers/manual/paths/invoke?sig=teams-sig-SECRET`);
  await ui.getByTestId("teams-save").click();
  const teams = ui.locator('[data-testid=connection][data-type="teams"]').filter({ hasText: "Ops Teams" });
  await teams.getByText("Microsoft Teams via http://").waitFor();
  await teams.getByText("/********").waitFor();
  assert.ok(!(await frame.content()).includes("teams-sig-SECRET"), "the Workflows URL was shown");

  await teams.getByTestId("test-connection").click();
  await teams.locator('[data-testid=test-outcome][data-ok="true"]').waitFor();

  await ui.getByTestId("nav-overview").click();
  await ui.getByTestId("overview-connection").filter({ hasText: "Ops Teams" }).waitFor();

  await ui.getByTestId("nav-rules").click();
  await ui.getByTestId("new-rule").click();
  await ui.getByTestId("rule-name").fill("Alerts to Teams");
  await ui.getByTestId("rule-connection").selectOption({ label: "Ops Teams (Microsoft Teams)" });
  await ui.getByTestId("rule-no-target").getByText("Microsoft Teams channel").waitFor();
  await ui.getByTestId("rule-save").click();
  await ui.getByTestId("rule").filter({ hasText: "Alerts to Teams" }).waitFor();
  const rules = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`);
  const rule = rules.body.data.find((r) => r.name === "Alerts to Teams");
  assert.deepEqual(rule.target, {});
  const connection = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/connections/${rule.connection_id}`);
  assert.equal(connection.body.type, "teams");
  assert.ok(!JSON.stringify(connection.body).includes("teams-sig-SECRET"), "the API answer holds the URL");

  // Out of the way of the other scenarios' events.
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/rules/${rule.id}`)).status, 204);
  assert.equal((await fetchInFrame(frame, "DELETE", `${SWITCHYARD_URL}/v1/connections/${rule.connection_id}`)).status, 204);
});

scenario("without Slack or email on the instance, the UI offers webhooks and says what to configure", async (open) => {
  const { page, ui } = await open(env("EMBED_URL_NO_SLACK"));
  await ui.getByTestId("overview-connections").waitFor();
  assert.equal(await ui.getByTestId("connect-slack").count(), 0);
  await ui.getByTestId("nav-connections").click();
  await ui.getByTestId("add-webhook").waitFor();
  assert.equal(await ui.getByTestId("connect-slack").count(), 0);
  assert.equal(await ui.getByTestId("add-email").count(), 0);
  await ui.getByTestId("unavailable-slack").getByText("slack.client_id").waitFor();
  await ui.getByTestId("unavailable-email").getByText("email.resend.api_key").waitFor();
  await shot(page, "connections-no-slack-1280");
  await page.setViewportSize(NARROW);
  await ui.getByTestId("unavailable").waitFor();
  await shot(page, "connections-no-slack-360");
});

scenario("delivery rows show their event and line up; a retrying delivery says why Retry now waits", async (open) => {
  const host = await open(env("EMBED_URL_DELIVERIES"));
  const { page, ui, frame } = host;
  await ui.getByTestId("nav-deliveries").click();
  const rows = ui.locator("[data-testid=delivery-list] [data-testid=delivery-row]");
  await rows.nth(3).waitFor();
  assert.equal(await rows.count(), 4);
  const events = ui.locator('[data-testid=delivery-list] [data-testid=delivery-event][data-loaded="true"]');
  await events.nth(3).waitFor();
  const titles = await events.allTextContents();
  assert.deepEqual(titles.slice().sort(), ["Criticalerror_rate · 0.12", "Criticalerror_rate · 0.12", "Highapi_latency_p95 · 1840", "Highapi_latency_p95 · 1840"]);
  await assertDeliveryRowsAligned(frame, false);
  await shot(page, "deliveries-1280");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot(page, "deliveries-dark-1280");
  await page.setViewportSize(NARROW);
  await assertDeliveryRowsAligned(frame, true);
  await shot(page, "deliveries-dark-360");
  await page.emulateMedia({ colorScheme: "light" });
  await shot(page, "deliveries-360");

  // A retrying delivery: Retry now is off, and says the attempt is already queued and when.
  await ui.getByTestId("filter-retrying").click();
  await rows.first().waitFor();
  assert.equal(await rows.count(), 2);
  await rows.first().click();
  await ui.getByTestId("delivery-status").filter({ hasText: "Retrying" }).waitFor();
  const retry = ui.getByTestId("retry-delivery");
  assert.equal(await retry.isDisabled(), true);
  const hint = ui.getByTestId("retry-hint");
  const text = await hint.textContent();
  assert.match(text, /^Already queued: the next attempt is due .+ \(in \d+ (min|hr)\.?\)\. Nothing to retry until then\.$/);
  assert.ok(await hint.isVisible());
  assert.equal(await retry.getAttribute("title"), text);
  assert.equal(await retry.getAttribute("aria-describedby"), await hint.getAttribute("id"));
  await shot(page, "delivery-retrying-360");
  await page.setViewportSize(WIDE);
  await shot(page, "delivery-retrying-1280");
});

scenario("a Slack connection that needs reconnecting stands out and reconnects", async (open) => {
  const host = await open(env("EMBED_URL_REAUTH"));
  const { page, ui } = host;
  const banner = ui.getByTestId("reauth-banner");
  await banner.getByText("needs to be reconnected").waitFor();
  await ui.getByTestId("overview-connection").getByTestId("connection-status").filter({ hasText: "Needs reconnect" }).waitFor();
  await shot(page, "overview-needs-reauth-1280");
  await installSlack(page, banner.getByTestId("reconnect-slack"));
  await banner.waitFor({ state: "detached" });
  await ui.getByTestId("overview-connection").getByTestId("connection-status").filter({ hasText: "Active" }).waitFor();
});

scenario("an expired launch URL shows the expired page", async () => {
  const context = await browser.newContext({ viewport: WIDE });
  try {
    const page = await context.newPage();
    const response = await page.goto(env("EMBED_URL_EXPIRED"));
    assert.equal(response.status(), 401);
    await page.getByText("This session has expired").waitFor();
    await page.screenshot({ path: path.join(SCREENSHOT_DIR, "expired-1280.png") });
    // Framed by the host, it says the same.
    await page.goto(`${HOST_URL}/?src=${encodeURIComponent(env("EMBED_URL_EXPIRED"))}`);
    await page.frameLocator("#switchyard").getByText("This session has expired").waitFor();
  } finally {
    await context.close();
  }
});

scenario("a session of one workspace cannot read or change another's objects", async (open) => {
  const host = await open(await launchA());
  const { ui, frame } = host;
  const ruleB = env("WORKSPACE_B_RULE_ID");
  const connectionB = env("WORKSPACE_B_CONNECTION_ID");
  assert.match(await sessionToken(frame), /^ems_/);

  for (const url of [`${SWITCHYARD_URL}/v1/rules/${ruleB}`, `${SWITCHYARD_URL}/v1/connections/${connectionB}`]) {
    assert.equal((await fetchInFrame(frame, "GET", url)).status, 404, url);
    assert.equal((await fetchInFrame(frame, "PATCH", url, { name: "mine now" })).status, 404, url);
    assert.equal((await fetchInFrame(frame, "DELETE", url)).status, 404, url);
  }
  assert.equal((await fetchInFrame(frame, "POST", `${SWITCHYARD_URL}/v1/connections/${connectionB}/rotate-secret`)).status, 404);
  const mine = await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/connections`);
  assert.ok(!mine.body.data.some((c) => c.id === connectionB), "B's connection listed for A");
  // A session cannot mint sessions (that needs the real secret key).
  assert.equal((await fetchInFrame(frame, "POST", `${SWITCHYARD_URL}/v1/embed/sessions`, {})).status, 403);

  // The UI says "not found" for B's rule.
  await frame.evaluate((id) => { window.location.hash = `#/rules/${id}`; }, ruleB);
  await ui.getByTestId("view-error").getByRole("heading", { name: "Not found" }).waitFor();
});

scenario("a session that expires while open shows the expired screen", async (open) => {
  const answer = await fetch(`${SWITCHYARD_URL}/v1/embed/sessions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env("WORKSPACE_A_SECRET_KEY")}`, "Content-Type": "application/json" },
    body: JSON.stringify({ ttl_seconds: 5, allowed_origins: [HOST_URL] }),
  });
  assert.equal(answer.status, 201);
  const { url } = await answer.json();
  const host = await open(url);
  const { page, ui, frame } = host;
  await page.evaluate(() => {
    window.messages = [];
    window.addEventListener("message", (event) => window.messages.push(event.data));
  });
  await ui.getByTestId("nav-deliveries").waitFor();
  await ui.getByTestId("session-expired").waitFor({ timeout: 15000 });
  await ui.getByText("Your session has expired").waitFor();
  await shot(page, "session-expired-in-app-1280");
  assert.equal(await frame.evaluate(() => sessionStorage.getItem("switchyard.embed.session")), null);
  const messages = await page.evaluate(() => window.messages);
  // Only to the host, and the last word on the session is that it ended.
  const sessionNews = messages.filter((m) => m.type.startsWith("switchyard:session-"));
  assert.deepEqual(sessionNews.at(-1), { type: "switchyard:session-expired" });
});

/**
 * The host page of the helper (`/embed/host.js`) on the host's origin,
 * mounting a session of `ttl` seconds. Console lines of every frame are
 * kept, since a foreign message is reported there.
 */
async function openHelper({ ttl = 1800, theme = "light" } = {}) {
  const context = await browser.newContext({ viewport: WIDE, colorScheme: "light", locale: "en-US" });
  context.setDefaultTimeout(20000);
  const page = await context.newPage();
  const problems = [];
  const consoleLines = [];
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("console", (message) => {
    consoleLines.push(message.text());
    if (message.type() === "error" && /Content Security Policy/i.test(message.text())) problems.push(`CSP: ${message.text()}`);
  });
  const query = new URLSearchParams({ switchyard: SWITCHYARD_URL, ttl: String(ttl), theme });
  await page.goto(`${HOST_URL}/helper?${query}`);
  const ui = page.frameLocator("#mount iframe");
  await ui.getByTestId("view").waitFor();
  const frame = await (await page.locator("#mount iframe").elementHandle()).contentFrame();
  return { context, page, ui, frame, problems, consoleLines };
}

/** Waits until the host page has seen a message matching `match`; returns it. */
async function seen(page, match, timeout = 20000) {
  const handle = await page.waitForFunction(
    (match) => window.seen.find((m) => m.type === match.type && Object.entries(match.data || {}).every(([k, v]) => m.data[k] === v)),
    match,
    { timeout, polling: 100 },
  );
  return handle.jsonValue();
}

const SWITCHYARD_ORIGIN = new URL(SWITCHYARD_URL).origin;

test("the host helper: ready, resize, theme and navigation, foreign messages ignored", { timeout: 120000 }, async () => {
  const host = await openHelper();
  const { page, ui, frame } = host;
  try {
    // ready and resize come from Switchyard's origin.
    assert.equal((await seen(page, { type: "switchyard:ready" })).origin, SWITCHYARD_ORIGIN);
    assert.equal((await seen(page, { type: "switchyard:resize" })).origin, SWITCHYARD_ORIGIN);
    // The iframe takes the content's height (no scrollbar, no blank).
    const frameHeight = () => page.evaluate(() => document.querySelector("#mount iframe").getBoundingClientRect().height);
    const contentHeight = () => frame.evaluate(() => Math.ceil(document.getElementById("app").getBoundingClientRect().height));
    const deadline = Date.now() + 15000;
    while ((await frameHeight()) !== (await contentHeight())) {
      assert.ok(Date.now() < deadline, `the frame is ${await frameHeight()} px, its content ${await contentHeight()} px`);
      await page.waitForTimeout(100);
    }
    assert.notEqual(await frameHeight(), 600, "the frame kept the helper's initial height");

    // init with dark switches the theme.
    await frame.waitForFunction(() => document.documentElement.dataset.theme === "light");
    const lightBg = await frame.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await page.evaluate(() => window.mounted.setTheme("dark"));
    await frame.waitForFunction(() => document.documentElement.dataset.theme === "dark");
    const darkBg = await frame.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.notEqual(darkBg, lightBg);

    // navigate, host → frame and frame → host.
    await page.evaluate(() => window.mounted.navigate("rules"));
    await frame.waitForFunction(() => window.location.hash === "#/rules");
    await seen(page, { type: "switchyard:navigate", data: { route: "rules" } });
    // A destination connected in the frame is announced to the host.
    await page.evaluate(() => window.mounted.navigate("connections"));
    await ui.getByTestId("add-webhook").click();
    await ui.getByTestId("webhook-name").fill("Host badge endpoint");
    await ui.getByTestId("webhook-url").fill(env("RECEIVER_URL"));
    await ui.getByTestId("webhook-save").click();
    const changed = await seen(page, { type: "switchyard:connection-changed" });
    assert.equal(changed.origin, SWITCHYARD_ORIGIN);
    assert.equal(changed.data.connection.type, "webhook");
    assert.equal(changed.data.connection.status, "active");
    assert.match(changed.data.connection.id, /^con_/);
    await ui.getByTestId("nav-deliveries").click();
    assert.equal((await seen(page, { type: "switchyard:navigate", data: { route: "deliveries" } })).origin, SWITCHYARD_ORIGIN);

    // A page of an origin the session does not allow is ignored (and logged).
    const foreign = `${HOST_URL.replace("127.0.0.1", "localhost")}/foreign`;
    await page.evaluate((src) => {
      const iframe = document.createElement("iframe");
      iframe.src = src;
      document.body.append(iframe);
    }, foreign);
    const foreignOrigin = new URL(foreign).origin;
    const reported = Date.now() + 15000;
    while (!host.consoleLines.some((line) => line.includes(`ignored switchyard:navigate from ${foreignOrigin}`))) {
      assert.ok(Date.now() < reported, `no console report of the foreign message: ${host.consoleLines.join(" | ")}`);
      await page.waitForTimeout(100);
    }
    assert.equal(await frame.evaluate(() => window.location.hash), "#/deliveries");
    assert.equal(await frame.evaluate(() => document.documentElement.dataset.theme), "dark");
    await page.locator("#mount iframe").screenshot({ path: path.join(SCREENSHOT_DIR, "host-helper-dark-1280.png") });
  } finally {
    await close(host);
  }
});

test("the host helper renews a 70 s session through onTokenNeeded and the form keeps its text", { timeout: 120000 }, async () => {
  const host = await openHelper({ ttl: 70 });
  const { page, ui, frame } = host;
  try {
    await seen(page, { type: "switchyard:ready" });
    await page.evaluate(() => window.mounted.navigate("rules/new"));
    await ui.getByTestId("rule-name").fill("Half-written rule");
    const before = await sessionToken(frame);
    const expiresBefore = await frame.evaluate(() => JSON.parse(sessionStorage.getItem("switchyard.embed.session")).expires_at);
    // min(60 s, ttl / 2): the warning comes 35 s in, well before the end.
    const expiring = await seen(page, { type: "switchyard:session-expiring" }, 60000);
    assert.equal(Date.parse(expiring.data.expires_at), expiresBefore);
    await frame.waitForFunction((old) => JSON.parse(sessionStorage.getItem("switchyard.embed.session")).session !== old, before, { timeout: 20000 });
    assert.equal(await page.evaluate(() => window.renewals), 1);
    const expiresAfter = await frame.evaluate(() => JSON.parse(sessionStorage.getItem("switchyard.embed.session")).expires_at);
    assert.ok(expiresAfter > expiresBefore, "the renewed session ends later");
    assert.ok(Date.now() < expiresBefore, "renewed before the first session ended");
    // No reload: the form still holds what the tenant typed, and the new session works.
    assert.equal(await ui.getByTestId("rule-name").inputValue(), "Half-written rule");
    assert.equal((await fetchInFrame(frame, "GET", `${SWITCHYARD_URL}/v1/rules`)).status, 200);
    assert.equal(await page.evaluate(() => window.seen.filter((m) => m.type === "switchyard:session-expired").length), 0);
  } finally {
    await close(host);
  }
});
