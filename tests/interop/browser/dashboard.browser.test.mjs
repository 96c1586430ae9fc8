// The dashboard page in headless Chromium, on two servers that share one
// Redis and one token secret: a page signs in on server A, and its live
// chart draws samples from both servers; a second watcher on server B is
// counted on A's page (presence across servers). Requests to the hub without
// a valid token are refused before they reach it.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { ChatServer } from '../lib/harness.mjs';

const CHROMIUM = process.env.SWITCHBOARD_CHROMIUM ?? '/usr/bin/chromium';
const WAIT = { timeout: 15_000 };

let serverA;
let serverB;
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}`);
  const options = {
    binary: 'SWITCHBOARD_DASHBOARD_BIN',
    env: { DASHBOARD_SECRET: randomBytes(32).toString('hex') },
  };
  // Samples every 200 ms, so the chart fills quickly.
  serverA = await ChatServer.start(0, ['--interval-ms', '200'], options);
  serverB = await ChatServer.start(0, ['--interval-ms', '200'], options);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  await Promise.allSettled([serverA?.stop(), serverB?.stop()]);
});

async function openDashboard(server, user) {
  const page = await browser.newPage();
  page.on('pageerror', (error) => {
    throw error;
  });
  await page.goto(server.url);
  await page.fill('#user', user);
  await page.click('#login');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected', null, WAIT);
  assert.equal(await page.textContent('#me'), user);
  return page;
}

test('the chart draws samples from every server, and watchers are counted across servers', async () => {
  const pageA = await openDashboard(serverA, 'alice');
  // Both servers' lines, A's own and B's through Redis.
  await pageA.waitForFunction(() => document.querySelectorAll('#legend li').length === 2, null, WAIT);
  await pageA.waitForFunction(() => window.dashboardSamples >= 6, null, WAIT);
  const painted = await pageA.$eval('#chart', (canvas) => {
    const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
      // Blue: the first server's line.
      if (data[i + 2] > 150 && data[i] < 100 && data[i + 3] > 0) coloured += 1;
    }
    return coloured;
  });
  assert.ok(painted > 20, `the chart drew ${painted} pixels of its first line`);

  await pageA.waitForFunction(() => document.querySelector('#watchers')?.textContent === '1', null, WAIT);
  const pageB = await openDashboard(serverB, 'bob');
  // A watcher on B is counted on A's page, and the other way round.
  await pageA.waitForFunction(() => document.querySelector('#watchers')?.textContent === '2', null, WAIT);
  await pageB.waitForFunction(() => document.querySelector('#watchers')?.textContent === '2', null, WAIT);
  await pageB.close();
  await pageA.waitForFunction(() => document.querySelector('#watchers')?.textContent === '1', null, WAIT);
});

test('the hub refuses requests without a valid token, and a token from one server works on the other', async () => {
  const negotiate = (server, token) =>
    fetch(`${server.url}/hubs/dashboard/negotiate?negotiateVersion=1`, {
      method: 'POST',
      headers: token ? { Authorization: `Bearer ${token}` } : {},
    });
  assert.equal((await negotiate(serverA)).status, 401);
  assert.equal((await negotiate(serverA, 'not-a-token')).status, 401);

  const issued = await fetch(`${serverA.url}/token`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user: 'carol' }),
  });
  assert.equal(issued.status, 200);
  const { token } = await issued.json();
  // Changing one character of the signature breaks it.
  const last = token.at(-1) === 'A' ? 'B' : 'A';
  assert.equal((await negotiate(serverA, token.slice(0, -1) + last)).status, 401);
  const response = await negotiate(serverB, token);
  assert.equal(response.status, 200);
  assert.ok((await response.json()).connectionToken);
});
