// Stateful reconnect with the official client (`withStatefulReconnect()`):
// its socket to server B is dropped, without a close frame, while server A
// sends to it; and an outage longer than the reconnect window.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatServer, PROTOCOLS, Proxy, twoServers, unique, until } from '../lib/harness.mjs';

const servers = twoServers({ before, after });
const { connect } = servers;

// On a Redis Cluster, channels on different shards reach a server through
// different connections, so messages to a connection, a group and a user
// keep their order per address, not among each other.
const onCluster = (process.env.SWITCHBOARD_REDIS_URL ?? '').includes('cluster');

/** The three ways server A addresses the client in the gap. */
const KINDS = ['connection', 'group', 'user'];

for (const protocol of PROTOCOLS) {
  describe(`stateful reconnect with ${protocol}`, () => {
    test('a dropped socket resumes the connection; every message of the gap arrives once, in order', async () => {
      const proxy = await Proxy.start(servers.b);
      try {
        const a = await connect(servers.a, { user: unique('a'), protocol });
        const b = await connect({ url: proxy.url }, { user: unique('b'), protocol, stateful: true });
        let closed = false;
        b.connection.onclose(() => {
          closed = true;
        });
        const group = unique('room');
        await b.invoke('Join', group);

        proxy.hold();
        proxy.cut();
        // The client tries again at once; its new socket waits in the proxy.
        await until(() => proxy.waiting > 0, 'the client to reconnect');
        const prefix = unique('gap');
        const sent = [];
        for (let i = 0; i < 20; i += 1) {
          const kind = KINDS[i % 3];
          const text = `${prefix}-${kind}-${i}`;
          sent.push(text);
          if (kind === 'connection') {
            await a.invoke('SendConnection', b.id, text);
          } else if (kind === 'group') {
            await a.invoke('SendGroup', group, text);
          } else {
            await a.invoke('SendUser', b.user, text);
          }
        }
        proxy.release();

        const arrived = () => b.messages.map((m) => m.text).filter((t) => t.startsWith(prefix));
        await until(() => sent.every((t) => arrived().includes(t)), 'every message of the gap', 20_000);
        // A duplicate would come right behind: give it the chance.
        const after = unique('after');
        await a.invoke('SendConnection', b.id, after);
        await b.receive(after);
        const got = arrived();
        for (const text of sent) {
          assert.equal(got.filter((t) => t === text).length, 1, `${text} arrived once`);
        }
        for (const kind of KINDS) {
          const ofKind = (texts) => texts.filter((t) => t.includes(`-${kind}-`));
          assert.deepEqual(ofKind(got), ofKind(sent), `messages to the ${kind} in order`);
        }
        if (!onCluster) {
          assert.deepEqual(got, sent);
        }

        // Still the same connection, never closed, its group intact.
        assert.equal(closed, false);
        assert.equal(b.connection.state, 'Connected');
        const me = await b.invoke('WhoAmI');
        assert.equal(me.connectionId, b.id);
        const inGroup = unique('group');
        await a.invoke('SendGroup', group, inGroup);
        await b.receive(inGroup);
        // And what the client sends after the reconnect still arrives.
        const back = unique('back');
        await b.invoke('SendConnection', a.id, back);
        await a.receive(back);
      } finally {
        await proxy.stop();
      }
    });
  });
}

describe('stateful reconnect past the window', () => {
  test('an outage longer than the window ends the connection cleanly; the client starts a new one', async () => {
    const c = await ChatServer.start(0, ['--reconnect-window-ms', '1000']);
    const proxy = await Proxy.start(c);
    try {
      const a = await connect(servers.a, { user: unique('a') });
      const b = await connect({ url: proxy.url }, { user: unique('b'), stateful: true, reconnect: true });
      const oldId = b.id;
      const reconnected = new Promise((resolve) => b.connection.onreconnected(resolve));

      proxy.hold();
      proxy.cut();
      await until(() => proxy.waiting > 0, 'the client to reconnect');
      // Past the window the server lets the connection go, everywhere.
      await until(async () => {
        try {
          await a.invoke('AddToGroup', oldId, unique('room'));
          return false;
        } catch (e) {
          assert.match(String(e), /does not exist/);
          return true;
        }
      }, 'the old connection to be disconnected', 20_000);
      proxy.release();

      // The held reconnect finds its token gone; automatic reconnect then
      // opens a new connection.
      const newId = await reconnected;
      assert.notEqual(newId, oldId);
      const text = unique('new');
      await a.invoke('SendConnection', newId, text);
      await b.receive(text);
    } finally {
      await proxy.stop();
      await c.stop();
    }
  });
});
