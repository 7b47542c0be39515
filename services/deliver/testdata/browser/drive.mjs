// Drives the inbox page in headless Chromium for browser_test.go:
//   node drive.mjs PAGE_URL TITLE
// It prints one JSON line per step on stdout and waits for a line on stdin
// where the test has work to do:
//   {"step":"connected"}             the stream is open and caught up (the
//                                    test now makes a delivery happen)
//   {"step":"message", ...}          the message titled TITLE is rendered
//   {"step":"read"}                  clicking it marked it read
//   {"step":"reloaded", "messages"}  a fresh page's stream is caught up
// Page errors, console errors and failed requests go to stderr; any of them
// fails the run.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";

const [url, title] = process.argv.slice(2);
const lines = readline.createInterface({ input: process.stdin });
const stdin = lines[Symbol.asyncIterator]();
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const problems = [];

const profile = mkdtempSync(path.join(tmpdir(), "whisper-chromium-"));
// A fresh profile every run: nothing cached, nothing remembered.
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console: ${m.text()}`); });
  page.on("response", (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`); });
  page.on("requestfailed", (r) => {
    // The stream is cut when the page goes away: that is not a failure.
    if (!r.url().includes("StreamInApp")) problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`);
  });
  const connected = async () => {
    await page.waitForSelector('#status[data-state="connected"], #status[data-state="error"]', { timeout: 30_000 });
    const state = await page.getAttribute("#status", "data-state");
    if (state !== "connected") throw new Error(`stream: ${await page.textContent("#status")}`);
  };

  await page.goto(url);
  await connected();
  say({ step: "connected" });
  await stdin.next();

  const item = page.locator("#messages li", { has: page.locator(".title", { hasText: title }) });
  await item.waitFor({ timeout: 30_000 });
  say({
    step: "message",
    deliveryId: await item.getAttribute("data-delivery-id"),
    title: await item.locator(".title").textContent(),
    body: await item.locator(".body").textContent(),
    count: await page.locator("#messages li").count(),
  });

  await item.click();
  await page.waitForSelector('#messages li[data-read="true"], #messages li[data-error]', { timeout: 30_000 });
  const error = await item.getAttribute("data-error");
  if (error) throw new Error(`mark read: ${error}`);
  say({ step: "read" });
  await stdin.next();

  await page.reload();
  await connected();
  say({ step: "reloaded", messages: await page.locator("#messages li").count() });
} finally {
  lines.close(); // else stdin keeps node running
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
if (problems.length > 0) {
  for (const p of problems) process.stderr.write(p + "\n");
  process.exit(1);
}
