// A deploy: SIGTERM to server B while 50 official clients with automatic
// reconnect are on it, behind a load balancer that sends each connection to
// B while it accepts, else to A.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatServer, Client, Proxy, redisChannels, unique, until } from '../lib/harness.mjs';

const CLIENTS = 50;

let a;
let b;
let balancer;
// Redis's channels before B starts.
let before_b;
const clients = [];

before(async () => {
  a = await ChatServer.start();
  before_b = await redisChannels();
  b = await ChatServer.start();
  balancer = await Proxy.start([b, a]);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.stop()));
  await balancer?.stop();
  await Promise.allSettled([a?.stop(), b?.stop()]);
});

test('SIGTERM drains B: every client is told to reconnect, lands on A, and B leaves Redis clean', async () => {
  const sender = await Client.connect(a, { user: unique('sender') });
  clients.push(sender);
  const reasons = [];
  const reconnected = [];
  for (let i = 0; i < CLIENTS; i += 1) {
    const client = await Client.connect({ url: balancer.url }, { user: unique('c'), reconnect: true });
    client.connection.onreconnecting((error) => reasons.push(String(error)));
    client.reconnectedTo = new Promise((resolve) => client.connection.onreconnected(resolve));
    clients.push(client);
    reconnected.push(client);
  }
  const onB = reconnected.map((c) => c.id);

  // Traffic from A, all along.
  let sending = true;
  let n = 0;
  const traffic = (async () => {
    while (sending) {
      n += 1;
      await sender.invoke('Broadcast', `tick-${n}`).catch(() => {});
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  await until(() => reconnected.every((c) => c.messages.length > 0), 'traffic to reach B');

  const stoppedAt = Date.now();
  const exit = b.terminate();
  const ids = await Promise.all(reconnected.map((c) => c.reconnectedTo));
  // Each client hears a broadcast sent after its reconnect.
  const mark = n;
  await until(
    () => reconnected.every((c) => c.messages.some((m) => Number(m.text.slice(5)) > mark)),
    'broadcasts again on every client',
    20_000,
  );
  const back = Date.now() - stoppedAt;
  const code = await exit;
  const exited = Date.now() - stoppedAt;
  sending = false;
  await traffic;
  console.log(`drain: all ${CLIENTS} clients receiving again ${back} ms after SIGTERM; B exited after ${exited} ms`);

  assert.equal(code, 0, 'B exits 0');
  assert.equal(reasons.length, CLIENTS);
  for (const reason of reasons) {
    assert.match(reason, /shutting down/, 'a Close message, not a dropped socket');
  }
  for (const id of ids) {
    assert.ok(!onB.includes(id), 'a new connection');
  }
  // On A now: A knows them.
  const me = await reconnected[0].invoke('WhoAmI');
  assert.equal(me.connectionId, ids[0]);

  // None of B's channels is left in Redis (its own, its connections'):
  // what is new since before B started belongs to the clients on A.
  const now = await redisChannels();
  const users = [sender, ...reconnected].map((c) => c.user);
  const onA = [sender.id, ...ids];
  for (const channel of now) {
    if (before_b.has(channel)) {
      continue;
    }
    assert.ok(!onB.some((id) => channel.includes(id)), `${channel} of B is still subscribed`);
    assert.ok(
      onA.some((id) => channel.includes(id)) || users.some((u) => channel.endsWith(`:${u}`)),
      `${channel} belongs to no client on A`,
    );
  }
});
