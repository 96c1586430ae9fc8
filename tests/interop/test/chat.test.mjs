// The official @microsoft/signalr client (JSON and MessagePack) against two
// switchboard chat servers sharing one Redis.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Client, PROTOCOLS, twoServers, unique } from '../lib/harness.mjs';

const servers = twoServers({ before, after });
const { connect } = servers;

for (const protocol of PROTOCOLS) {
  describe(`${protocol} protocol`, () => {
    test('send and receive across servers', async () => {
      const alice = await connect(servers.a, { user: unique('alice'), protocol });
      const bob = await connect(servers.b, { user: unique('bob'), protocol });
      const text = unique('hello');
      await alice.invoke('Broadcast', text);
      const got = await bob.receive(text);
      assert.equal(got.from, alice.user);
      await alice.receive(text);
    });

    test('BroadcastOthers skips the caller', async () => {
      const alice = await connect(servers.a, { user: unique('alice'), protocol });
      const bob = await connect(servers.b, { user: unique('bob'), protocol });
      const text = unique('others');
      await alice.invoke('BroadcastOthers', text);
      await bob.receive(text);
      await alice.receiveNothing(text);
    });

    test('group messages reach members on both servers only', async () => {
      const group = unique('room');
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const b = await connect(servers.b, { user: unique('b'), protocol });
      const outsider = await connect(servers.b, { user: unique('c'), protocol });
      await a.invoke('Join', group);
      await b.invoke('Join', group);
      const text = unique('group');
      await outsider.invoke('SendGroup', group, text);
      await a.receive(text);
      await b.receive(text);
      await outsider.receiveNothing(text);

      const others = unique('group-others');
      await a.invoke('SendGroupOthers', group, others);
      await b.receive(others);
      await a.receiveNothing(others);

      await b.invoke('Leave', group);
      const afterLeave = unique('after-leave');
      await a.invoke('SendGroup', group, afterLeave);
      await a.receive(afterLeave);
      await b.receiveNothing(afterLeave);
    });

    test('user messages reach every connection of the user', async () => {
      const user = unique('dora');
      const first = await connect(servers.a, { user, protocol });
      const second = await connect(servers.b, { user, protocol });
      const sender = await connect(servers.a, { user: unique('sender'), protocol });
      const text = unique('to-user');
      await sender.invoke('SendUser', user, text);
      await first.receive(text);
      await second.receive(text);
    });

    test('user messages still arrive after one of the connections disconnects', async () => {
      const user = unique('erin');
      const leaving = await connect(servers.b, { user, protocol });
      const staying = await connect(servers.b, { user, protocol });
      const sender = await connect(servers.a, { user: unique('sender'), protocol });
      await leaving.stop();
      const text = unique('after-disconnect');
      await sender.invoke('SendUser', user, text);
      await staying.receive(text);
    });

    test('group and user names with pattern characters are literal', async () => {
      const star = await connect(servers.b, { user: '*', protocol });
      const plain = await connect(servers.b, { user: unique('plain'), protocol });
      const sender = await connect(servers.a, { user: unique('sender'), protocol });
      await star.invoke('Join', '*');
      await plain.invoke('Join', 'a?b');
      await plain.invoke('Join', 'x:y');

      const toPlain = unique('pattern');
      await sender.invoke('SendGroup', 'a?b', toPlain);
      await plain.receive(toPlain);
      await star.receiveNothing(toPlain, 200);

      const toStarGroup = unique('star-group');
      await sender.invoke('SendGroup', '*', toStarGroup);
      await star.receive(toStarGroup);
      await plain.receiveNothing(toStarGroup, 200);

      const toStarUser = unique('star-user');
      await sender.invoke('SendUser', '*', toStarUser);
      await star.receive(toStarUser);
      await plain.receiveNothing(toStarUser, 200);

      const toColon = unique('colon');
      await sender.invoke('SendGroup', 'x:y', toColon);
      await plain.receive(toColon);
    });

    test('SendConnection reaches a connection on the other server', async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const b = await connect(servers.b, { user: unique('b'), protocol });
      const text = unique('direct');
      await a.invoke('SendConnection', b.id, text);
      const got = await b.receive(text);
      assert.equal(got.from, a.user);
    });

    test('AddToGroup and RemoveFromGroup for a connection on the other server', async () => {
      const group = unique('remote-group');
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const b = await connect(servers.b, { user: unique('b'), protocol });
      await a.invoke('AddToGroup', b.id, group);
      const text = unique('added');
      await a.invoke('SendGroup', group, text);
      await b.receive(text);

      await a.invoke('RemoveFromGroup', b.id, group);
      const removed = unique('removed');
      await a.invoke('SendGroup', group, removed);
      await b.receiveNothing(removed);

      await assert.rejects(a.invoke('AddToGroup', 'no-such-connection', group), /does not exist/);
      await assert.rejects(a.invoke('RemoveFromGroup', 'no-such-connection', group), /does not exist/);
    });

    test('AskClient gets the answer of a client on the other server', async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const b = await connect(servers.b, { user: unique('b'), protocol });
      assert.equal(await a.invoke('AskClient', b.id, 'ping?'), 'answer to ping?');

      b.answer = () => {
        throw new Error('no idea');
      };
      await assert.rejects(a.invoke('AskClient', b.id, 'fail?'), /no idea/);

      await assert.rejects(a.invoke('AskClient', 'no-such-connection', 'anyone?'), /does not exist/);
    });

    test('AskClient fails with "disconnected" when the target leaves first', async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const b = await connect(servers.b, { user: unique('b'), protocol });
      let asked;
      const wasAsked = new Promise((resolve) => {
        asked = resolve;
      });
      b.answer = () => {
        asked();
        return new Promise(() => {});
      };
      const pending = a.invoke('AskClient', b.id, 'wait?');
      await wasAsked;
      await b.stop();
      await assert.rejects(pending, /disconnected/);
    });

    test('Count streams 1..=n', async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const items = [];
      await new Promise((resolve, reject) => {
        a.connection.stream('Count', 5).subscribe({
          next: (item) => items.push(item),
          complete: resolve,
          error: reject,
        });
      });
      assert.deepEqual(items.map(Number), [1, 2, 3, 4, 5]);

      // A long stream is paced by the client rather than overflowing its queue.
      let count = 0;
      let last = 0;
      await new Promise((resolve, reject) => {
        a.connection.stream('Count', 20000).subscribe({
          next: (item) => {
            count += 1;
            last = Number(item);
          },
          complete: resolve,
          error: reject,
        });
      });
      assert.equal(count, 20000);
      assert.equal(last, 20000);
    });
  });
}

describe('transport', () => {
  test('negotiate answers version 1 with a token distinct from the id', async () => {
    const response = await fetch(`${servers.a.url}/hubs/chat/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(response.status, 200);
    const body = await response.json();
    assert.equal(body.negotiateVersion, 1);
    assert.ok(body.connectionId);
    assert.ok(body.connectionToken);
    assert.notEqual(body.connectionId, body.connectionToken);
    const websockets = body.availableTransports.find((t) => t.transport === 'WebSockets');
    assert.deepEqual([...websockets.transferFormats].sort(), ['Binary', 'Text']);
  });

  test('skipNegotiation connects straight over WebSockets', async () => {
    for (const protocol of PROTOCOLS) {
      const client = await connect(servers.b, { user: unique('skip'), protocol, skipNegotiation: true });
      assert.ok(client.id);
      const text = unique('skip');
      await client.invoke('Broadcast', text);
      await client.receive(text);
    }
  });

  test('an unknown hub path is 404', async () => {
    const response = await fetch(`${servers.a.url}/hubs/nope/negotiate?negotiateVersion=1`, { method: 'POST' });
    assert.equal(response.status, 404);
    await assert.rejects(Client.connect(servers.a, { user: 'x', path: '/hubs/nope' }));
  });

  test('the client reconnects by itself after its server restarts', async () => {
    const a = await connect(servers.a, { user: unique('a') });
    const b = await connect(servers.b, { user: unique('b'), reconnect: true });
    const reconnected = new Promise((resolve) => b.connection.onreconnected(resolve));
    await servers.b.restart();
    await reconnected;
    const text = unique('after-restart');
    await a.invoke('Broadcast', text);
    await b.receive(text);
  });
});
