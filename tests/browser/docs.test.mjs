// Browser test of the API reference page (/docs), run by tests/api/docs.rs
// (`cargo test --test api docs`), which starts the server and passes its
// URL in SWITCHYARD_URL.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const SWITCHYARD_URL = process.env.SWITCHYARD_URL;
assert.ok(SWITCHYARD_URL, "SWITCHYARD_URL is not set: run this through cargo test --test api docs");

let browser;

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
      // Chromium still looks up Google's hosts in the background; no test
      // reaches the internet, so every name but localhost is unknown to it.
      "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"],
  });
});

after(async () => {
  await browser?.close();
});

test("/docs renders every operation from /openapi.json, same origin only, no errors", async () => {
  const page = await browser.newPage();
  const problems = [];
  const requests = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("request", (request) => requests.push(request.url()));

  const response = await page.goto(`${SWITCHYARD_URL}/docs`);
  assert.equal(response.status(), 200);
  await page.getByRole("heading", { name: "Emit an event", exact: true }).waitFor({ timeout: 15000 });

  const document = await (await fetch(`${SWITCHYARD_URL}/openapi.json`)).json();
  const summaries = [];
  for (const item of Object.values(document.paths)) {
    for (const operation of Object.values(item)) if (operation.summary) summaries.push(operation.summary);
  }
  const headings = await page.locator("section.operation h3").allTextContents();
  for (const summary of summaries) assert.ok(headings.includes(summary), `no section for "${summary}"`);
  assert.ok(headings.includes("An event delivered to a webhook connection"), "the webhook is shown");

  // An operation shows its route, keys, parameters and answers.
  const emit = page.locator("section#emitevent");
  await assert.doesNotReject(emit.getByText("/v1/events", { exact: true }).waitFor());
  const text = await emit.textContent();
  for (const expected of ["publishableKey", "Idempotency-Key", "202", "429", "EventInput", "event"]) {
    assert.ok(text.includes(expected), `emitEvent section lacks ${expected}: ${text}`);
  }
  // The nav links to it.
  await page.locator('nav a[href="#emitevent"]').click();
  if (process.env.SCREENSHOT_DIR) {
    fs.mkdirSync(process.env.SCREENSHOT_DIR, { recursive: true });
    await page.screenshot({ path: path.join(process.env.SCREENSHOT_DIR, "docs.png") });
  }

  const origin = new URL(SWITCHYARD_URL).origin;
  const foreign = requests.filter((url) => new URL(url).origin !== origin);
  assert.deepEqual(foreign, [], "the page loads nothing from another origin");
  assert.deepEqual(problems, [], "no console errors or CSP violations");
  await page.close();
});
