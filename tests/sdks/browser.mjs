// Drives headless Chromium through one scenario for one browser SDK:
//   node browser.mjs '{"sdk": "segment", "edge": "http://127.0.0.1:P", "writeKey": "…",
//                  "userId": "…", "traits": {…}, "unload": false}'
// The page is served from a port of its own on 127.0.0.1, a different origin from the
// edge, so the browser applies CORS. Every request the page makes is recorded; one to
// any host but 127.0.0.1 fails the run (the resolver also maps every other host away).
// Prints one JSON line: {"failure", "unloadAt" (epoch ms), "requests", "console"}.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = JSON.parse(process.argv[2]);
const chromiumPath = process.env.TRAITSTREAM_CHROMIUM || '/usr/bin/chromium';

const bundle = await esbuild.build({
  entryPoints: [path.join(here, 'page.js')],
  bundle: true,
  write: false,
  format: 'iife',
  target: 'es2020',
  logLevel: 'error',
});
const script = bundle.outputFiles[0].contents;
const html = '<!doctype html><html><head><meta charset="utf-8"><script src="/page.js"></script></head><body>traitstream</body></html>';
const server = http.createServer((req, res) => {
  if (req.url === '/page.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' });
    res.end(script);
  } else if (req.url === '/' || req.url === '/next') {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(req.url === '/' ? html : '<!doctype html><p>next');
  } else {
    res.writeHead(404);
    res.end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const page_url = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: chromiumPath,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
  ],
});
const requests = [];
const consoleLines = [];
let failure = null;
let unloadAt = null;
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  context.on('request', (request) => {
    const url = new URL(request.url());
    requests.push({ method: request.method(), url: request.url(), headers: request.headers() });
    if (url.hostname !== '127.0.0.1' && url.protocol !== 'data:' && url.protocol !== 'about:') {
      failure = failure || `the page tried to reach ${request.url()}`;
    }
  });
  page.on('console', (message) => consoleLines.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));
  await page.goto(`${page_url}/`);
  await page.evaluate(
    async ({ sdk, options, userId, traits }) => {
      const client = await window.sdk[sdk](options);
      await client.identify(userId, traits);
    },
    { sdk: args.sdk, options: { edge: args.edge, writeKey: args.writeKey, unload: args.unload }, userId: args.userId, traits: args.traits },
  );
  if (args.unload) {
    // Leaving the page: what is still queued must go out by sendBeacon or keepalive.
    unloadAt = Date.now();
    await page.goto(`${page_url}/next`);
  }
  await page.waitForTimeout(args.settleMs ?? 500);
  await context.close();
} catch (error) {
  failure = failure || String(error && error.stack ? error.stack : error);
} finally {
  await browser.close();
  server.close();
}
process.stdout.write(`${JSON.stringify({ failure, unloadAt, requests, console: consoleLines })}\n`);
process.exit(failure ? 1 : 0);
