// Client-to-server streams with the official client: `Sum` takes an
// uploaded stream of integers.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { PROTOCOLS, signalR, twoServers, unique } from '../lib/harness.mjs';

const servers = twoServers({ before, after });
const { connect } = servers;

for (const protocol of PROTOCOLS) {
  describe(`upload streams with ${protocol}`, () => {
    test('Sum of 1..=100 uploaded as a stream is 5050', async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const numbers = new signalR.Subject();
      const sum = a.invoke('Sum', numbers);
      for (let i = 1; i <= 100; i += 1) {
        numbers.next(i);
      }
      numbers.complete();
      assert.equal(await sum, 5050);
    });

    test("the client's stream error reaches the method", async () => {
      const a = await connect(servers.a, { user: unique('a'), protocol });
      const numbers = new signalR.Subject();
      const sum = a.invoke('Sum', numbers);
      numbers.next(1);
      numbers.error(new Error('sensor unplugged'));
      await assert.rejects(sum, /sensor unplugged/);
      // The connection goes on.
      const again = new signalR.Subject();
      const next = a.invoke('Sum', again);
      again.next(2);
      again.complete();
      assert.equal(await next, 2);
    });
  });
}
