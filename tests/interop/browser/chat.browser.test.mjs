// The chat page in headless Chromium, opened on two servers that share one
// Redis: a message typed on server A's page appears on server B's page,
// once over each transport the page offers.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { ChatServer, unique } from '../lib/harness.mjs';

const CHROMIUM = process.env.SWITCHBOARD_CHROMIUM ?? '/usr/bin/chromium';

let serverA;
let serverB;
let browser;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}`);
  serverA = await ChatServer.start();
  serverB = await ChatServer.start();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  await Promise.allSettled([serverA?.stop(), serverB?.stop()]);
});

async function openChat(server, user, transport) {
  const page = await browser.newPage();
  page.on('pageerror', (error) => {
    throw error;
  });
  await page.goto(server.url);
  await page.fill('#user', user);
  await page.selectOption('#transport', transport);
  await page.click('#connect');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent === 'connected', null, {
    timeout: 10_000,
  });
  assert.equal(await page.textContent('#transport-used'), transport);
  return page;
}

for (const transport of ['WebSockets', 'ServerSentEvents', 'LongPolling']) {
  test(`over ${transport}, a message typed on server A appears on server B`, async () => {
    const pageA = await openChat(serverA, 'alice', transport);
    const pageB = await openChat(serverB, 'bob', transport);
    assert.notEqual(await pageA.textContent('#me'), await pageB.textContent('#me'));

    const text = unique('hello from A');
    await pageA.fill('#text', text);
    await pageA.click('#send');
    await pageB.waitForFunction(
      (expected) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === expected),
      `alice: ${text}`,
      { timeout: 10_000 },
    );

    // And in a room: only members see it.
    const lobby = unique('lobby');
    const pageC = await openChat(serverB, 'carol', transport);
    for (const page of [pageA, pageB]) {
      await page.fill('#room', lobby);
      await page.click('#join');
      await page.waitForFunction(
        (expected) => document.querySelector('#current-room')?.textContent === `room ${expected}`,
        lobby,
      );
    }
    const roomText = unique('room message');
    await pageB.fill('#text', roomText);
    await pageB.click('#send');
    await pageA.waitForFunction(
      (expected) => [...document.querySelectorAll('#messages li')].some((li) => li.textContent === expected),
      `bob: ${roomText}`,
      { timeout: 10_000 },
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    const carolSaw = await pageC.$$eval('#messages li', (items, expected) => items.some((li) => li.textContent.includes(expected)), roomText);
    assert.equal(carolSaw, false);
  });
}
