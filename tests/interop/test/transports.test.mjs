// The official @microsoft/signalr client over Server-Sent Events and long
// polling, against two switchboard chat servers sharing one Redis; a client
// that takes what negotiate offers when WebSockets (and Server-Sent Events)
// are switched off; and one that falls back by itself when a proxy in front
// of the server refuses them.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatServer, Proxy, signalR, twoServers, unique } from '../lib/harness.mjs';

const servers = twoServers({ before, after });
const { connect } = servers;

/** The name of the transport a connected client ended up on. */
function transportOf(client) {
  return client.connection.connection.transport?.constructor?.name;
}

const TRANSPORTS = [
  ['ServerSentEvents', signalR.HttpTransportType.ServerSentEvents, ['json']],
  ['LongPolling', signalR.HttpTransportType.LongPolling, ['json', 'messagepack']],
];

for (const [name, transport, protocols] of TRANSPORTS) {
  for (const protocol of protocols) {
    describe(`${name} with ${protocol}`, () => {
      const options = (user) => ({ user: unique(user), protocol, transport });

      test('broadcast, group, user and connection messages cross servers', async () => {
        const a = await connect(servers.a, options('a'));
        const b = await connect(servers.b, options('b'));
        assert.match(transportOf(a), new RegExp(name));
        const all = unique('all');
        await a.invoke('Broadcast', all);
        await b.receive(all);
        await a.receive(all);

        const group = unique('room');
        await b.invoke('Join', group);
        const inGroup = unique('group');
        await a.invoke('SendGroup', group, inGroup);
        await b.receive(inGroup);
        await a.receiveNothing(inGroup);

        const toUser = unique('user');
        await a.invoke('SendUser', b.user, toUser);
        await b.receive(toUser);

        const toConnection = unique('connection');
        await b.invoke('SendConnection', a.id, toConnection);
        await a.receive(toConnection);
      });

      test('invocation results and client results', async () => {
        const a = await connect(servers.a, options('a'));
        const b = await connect(servers.b, options('b'));
        const me = await a.invoke('WhoAmI');
        assert.equal(me.connectionId, a.id);
        const question = unique('question');
        const answer = await a.invoke('AskClient', b.id, question);
        assert.equal(answer, `answer to ${question}`);
      });

      test('a server-to-client stream', async () => {
        const a = await connect(servers.a, options('a'));
        const items = await new Promise((resolve, reject) => {
          const got = [];
          a.connection.stream('Count', 50).subscribe({
            next: (item) => got.push(item),
            complete: () => resolve(got),
            error: reject,
          });
        });
        assert.deepEqual(items, Array.from({ length: 50 }, (_, i) => i + 1));
      });

      test('a burst of 200 messages arrives complete and in order', async () => {
        const a = await connect(servers.a, options('a'));
        const b = await connect(servers.b, options('b'));
        const prefix = unique('burst');
        const sends = [];
        for (let i = 0; i < 200; i += 1) {
          sends.push(a.send('SendConnection', b.id, `${prefix}-${i}`));
        }
        await Promise.all(sends);
        await b.receive(`${prefix}-199`, 20_000);
        const got = b.messages.filter((m) => m.text.startsWith(`${prefix}-`)).map((m) => m.text);
        assert.deepEqual(got, Array.from({ length: 200 }, (_, i) => `${prefix}-${i}`));
      });

      test('stop() ends the connection on the server', async () => {
        const a = await connect(servers.a, options('a'));
        const b = await connect(servers.b, options('b'));
        await b.stop();
        // Once the server has unregistered it, addressing it fails at once.
        const deadline = Date.now() + 10_000;
        for (;;) {
          try {
            await a.invoke('AddToGroup', b.id, unique('room'));
          } catch (e) {
            assert.match(String(e), /does not exist/);
            break;
          }
          assert.ok(Date.now() < deadline, 'the stopped connection still exists');
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      });
    });
  }
}

describe('fallback', () => {
  test('a client takes the transport negotiate offers: Server-Sent Events, then long polling', async () => {
    const noWebSockets = await ChatServer.start(0, ['--no-websockets']);
    const noStreams = await ChatServer.start(0, ['--no-websockets', '--no-sse']);
    try {
      const sse = await connect(noWebSockets, { user: unique('a'), transport: null });
      assert.match(transportOf(sse), /ServerSentEvents/);
      const polling = await connect(noStreams, { user: unique('b'), transport: null });
      assert.match(transportOf(polling), /LongPolling/);
      const text = unique('fallback');
      await sse.invoke('SendConnection', polling.id, text);
      await polling.receive(text);
      await sse.stop();
      await polling.stop();
    } finally {
      await Promise.allSettled([noWebSockets.stop(), noStreams.stop()]);
    }
  });

  // The server offers every transport; a proxy between it and the client
  // refuses some, and the client has to find that out by trying.
  const REFUSALS = [
    ['WebSocket upgrades', { refuseWebSockets: true }, /ServerSentEvents/],
    ['WebSocket upgrades and event streams', { refuseWebSockets: true, refuseEventStreams: true }, /LongPolling/],
  ];
  for (const [refused, refusals, expected] of REFUSALS) {
    test(`behind a proxy refusing ${refused}, a client falls back by itself`, async () => {
      const proxy = await Proxy.start(servers.a, refusals);
      try {
        const a = await connect(proxy, { user: unique('a'), transport: null });
        assert.match(transportOf(a), expected);
        // It got there by being refused, not by being offered less.
        assert.ok(proxy.refusedUpgrades >= 1, 'the proxy saw no WebSocket upgrade');
        if (refusals.refuseEventStreams) {
          assert.ok(proxy.refusedEventStreams >= 1, 'the proxy saw no event stream');
        } else {
          assert.equal(proxy.refusedEventStreams, 0);
        }

        const b = await connect(servers.b, { user: unique('b') });
        const all = unique('all');
        await a.invoke('Broadcast', all);
        await b.receive(all);
        await a.receive(all);
        const toA = unique('connection');
        await b.invoke('SendConnection', a.id, toA);
        await a.receive(toA);
        const question = unique('question');
        assert.equal(await b.invoke('AskClient', a.id, question), `answer to ${question}`);
        await a.stop();
      } finally {
        await proxy.stop();
      }
    });
  }
});
