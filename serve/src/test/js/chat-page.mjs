// The chat page at / in headless Chromium: node chat-page.mjs BASE_URL CHROMIUM_PATH
// Types a message, waits for the streamed reply, checks the sampling settings reach the server.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [base, exe, key] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "crucible-chromium-"));
const browser = await chromium.launchPersistentContext(profile, { executablePath: exe, headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"] });
try {
  const page = await browser.newPage();
  const bodies = [];
  page.on("request", r => { if (r.url().endsWith("/v1/chat/completions")) bodies.push(JSON.parse(r.postData())); });
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  await page.goto(base + "/");
  await page.fill("#api_key", key);
  await page.waitForSelector("#model:not(:empty)", { timeout: 10000 });
  await page.fill("#max_tokens", "8");
  await page.fill("#temperature", "0.7");
  await page.fill("#seed", "5");
  await page.fill("#prompt", "hello there");
  await page.click("#send");
  await page.waitForSelector(".assistant[data-done=true]", { timeout: 20000 });
  const reply = await page.textContent(".assistant");
  const finish = await page.getAttribute(".assistant", "data-finish");
  assert.ok(["length", "stop"].includes(finish), "finish " + finish);
  if (finish === "length") assert.ok(reply.length > 0, "empty reply");
  assert.match(await page.textContent("#status"), /reply \d+ tokens/);
  assert.equal(bodies.length, 1);
  assert.equal(bodies[0].stream, true);
  assert.equal(bodies[0].max_tokens, 8);
  assert.equal(bodies[0].temperature, 0.7);
  assert.equal(bodies[0].seed, 5);
  assert.equal(await page.textContent(".user"), "hello there");
  // A second turn sends the history; a server error shows as an error bubble.
  await page.fill("#temperature", "7");
  await page.fill("#prompt", "again");
  await page.click("#send");
  await page.waitForSelector(".error", { timeout: 10000 });
  assert.match(await page.textContent(".error"), /400/);
  assert.deepEqual(errors, []);
  console.log("chat page: all checks passed; reply " + JSON.stringify(reply));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
