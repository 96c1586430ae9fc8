// Shared helpers for the interop tests: chat servers as child processes,
// clients built with the official SignalR client, and waiting helpers.

import { spawn } from 'node:child_process';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { Transform } from 'node:stream';
import * as signalR from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

export const PROTOCOLS = ['json', 'messagepack'];
const TIMEOUT_MS = 10_000;

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run these tests with \`cargo xtask test\``);
  }
  return value;
}

/** A chat server process on the shared Redis. */
export class ChatServer {
  /**
   * `args`: more command-line arguments, such as `['--no-websockets']`.
   * `binary`: the environment variable naming the example to run (the chat
   * example by default); `env`: more environment for it.
   */
  static async start(port = 0, args = [], { binary = 'SWITCHBOARD_CHAT_BIN', env = {} } = {}) {
    const server = new ChatServer();
    server.args = args;
    server.binary = binary;
    server.env = env;
    await server.#spawn(port);
    return server;
  }

  async #spawn(port) {
    const binary = required(this.binary);
    const redis = required('SWITCHBOARD_REDIS_URL');
    this.process = spawn(binary, ['--port', String(port), '--redis', redis, ...this.args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn', ...this.env },
    });
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => resolve(code ?? signal)));
    const lines = createInterface({ input: this.process.stdout });
    this.url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('chat server did not start')), TIMEOUT_MS);
      lines.on('line', (line) => {
        const match = /listening on (http:\/\/\S+)/.exec(line);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
      this.process.once('exit', (code) => reject(new Error(`chat server exited with ${code}`)));
    });
    this.port = Number(new URL(this.url).port);
  }

  /** Sends SIGTERM (a deploy's stop) and waits for the exit; returns the exit code. */
  async terminate() {
    this.process.kill('SIGTERM');
    return this.exited;
  }

  /** Kills the process and waits for it to end. */
  async stop() {
    if (this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGKILL');
    }
    await this.exited;
  }

  /** Kills the process and starts a new one on the same port. */
  async restart() {
    await this.stop();
    await this.#spawn(this.port);
  }
}

/** A connected chat client that records every `message(from, text)` it receives. */
export class Client {
  /**
   * `transport`: a `signalR.HttpTransportType` (WebSockets by default), or
   * `null` to let the client pick as it would on its own.
   */
  static async connect(server, { user, protocol = 'json', skipNegotiation = false, reconnect = false, stateful = false, path = '/hubs/chat', transport = signalR.HttpTransportType.WebSockets } = {}) {
    const client = new Client();
    const query = user === undefined ? '' : `?user=${encodeURIComponent(user)}`;
    let builder = new signalR.HubConnectionBuilder()
      .withUrl(`${server.url}${path}${query}`, {
        skipNegotiation,
        ...(transport === null ? {} : { transport }),
      })
      .configureLogging(signalR.LogLevel.None);
    if (protocol === 'messagepack') {
      builder = builder.withHubProtocol(new MessagePackHubProtocol());
    }
    if (reconnect) {
      builder = builder.withAutomaticReconnect([0, 100, 250, 500, 1000, 1000, 1000, 1000, 1000, 1000]);
    }
    if (stateful) {
      builder = builder.withStatefulReconnect();
    }
    client.connection = builder.build();
    client.messages = [];
    client.waiters = [];
    client.connection.on('message', (from, text) => {
      client.messages.push({ from, text });
      client.#wake();
    });
    client.answer = (question) => `answer to ${question}`;
    client.connection.on('ask', (question) => client.answer(question));
    await client.connection.start();
    const me = await client.connection.invoke('WhoAmI');
    client.id = me.connectionId;
    client.user = me.user;
    return client;
  }

  #wake() {
    for (const waiter of this.waiters.splice(0)) {
      waiter();
    }
  }

  /** Waits for a message whose text is `text`; returns it. */
  async receive(text, timeoutMs = TIMEOUT_MS) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.find((m) => m.text === text);
      if (found) {
        return found;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new Error(`${this.id} did not receive "${text}"; got ${JSON.stringify(this.messages)}`);
      }
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  /** Asserts that no message with `text` arrives within a short while. */
  async receiveNothing(text, waitMs = 500) {
    await new Promise((resolve) => setTimeout(resolve, waitMs));
    const found = this.messages.find((m) => m.text === text);
    if (found) {
      throw new Error(`${this.id} unexpectedly received ${JSON.stringify(found)}`);
    }
  }

  invoke(method, ...args) {
    return this.connection.invoke(method, ...args);
  }

  send(method, ...args) {
    return this.connection.send(method, ...args);
  }

  stop() {
    return this.connection.stop();
  }
}

/**
 * Two chat servers on the shared Redis for the tests of one file, started
 * in `before` and stopped, with every client `connect` made, in `after`:
 * `{ a, b, connect(server, options) }`.
 */
export function twoServers({ before, after }) {
  const servers = { a: null, b: null, clients: [] };
  servers.connect = async (server, options) => {
    const client = await Client.connect(server, options);
    servers.clients.push(client);
    return client;
  };
  before(async () => {
    servers.a = await ChatServer.start();
    servers.b = await ChatServer.start();
  });
  after(async () => {
    await Promise.allSettled(servers.clients.map((c) => c.stop()));
    await Promise.allSettled([servers.a?.stop(), servers.b?.stop()]);
  });
  return servers;
}

/** The answer of a proxy that refuses a request. */
const FORBIDDEN = 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n';

/** The longest request head a `RequestFilter` buffers. */
const MAX_HEAD_BYTES = 64 * 1024;

/**
 * Reads a request head (`METHOD target HTTP/1.1`, then header lines) as
 * `{ method, header(name) }`; `header` joins repeated headers with commas
 * and gives '' for a missing one.
 */
function parseRequestHead(text) {
  const [requestLine, ...lines] = text.split('\r\n');
  const headers = new Map();
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) {
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
    }
  }
  return {
    method: requestLine.split(' ')[0],
    header: (name) => headers.get(name) ?? '',
  };
}

/**
 * The client-to-server bytes of one connection, read as a sequence of
 * HTTP/1.1 requests. Each request head goes to `refuses(request)`; a refused
 * request and everything after it is dropped, and `onRefuse()` is called;
 * the bytes of the others pass unchanged, bodies counted by Content-Length.
 * After an upgrade (or a chunked body, which no client here sends) the rest
 * passes without being read.
 */
class RequestFilter extends Transform {
  constructor(refuses, onRefuse) {
    super();
    this.refuses = refuses;
    this.onRefuse = onRefuse;
    this.head = Buffer.alloc(0);
    this.bodyLeft = 0;
    this.raw = false;
    this.refused = false;
  }

  _transform(chunk, _encoding, done) {
    let data = chunk;
    while (data.length > 0 && !this.refused) {
      if (this.raw) {
        this.push(data);
        break;
      }
      if (this.bodyLeft > 0) {
        const body = data.subarray(0, this.bodyLeft);
        this.push(body);
        this.bodyLeft -= body.length;
        data = data.subarray(body.length);
        continue;
      }
      this.head = Buffer.concat([this.head, data]);
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (this.head.length > MAX_HEAD_BYTES) {
          // Not HTTP as this filter knows it: pass it on untouched.
          this.raw = true;
          data = this.head;
          this.head = Buffer.alloc(0);
          continue;
        }
        break;
      }
      const head = this.head.subarray(0, end + 4);
      data = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
      const request = parseRequestHead(head.toString('latin1'));
      if (this.refuses(request)) {
        this.refused = true;
        this.onRefuse();
        break;
      }
      this.push(head);
      if (request.header('upgrade') || /chunked/i.test(request.header('transfer-encoding'))) {
        this.raw = true;
      } else {
        this.bodyLeft = Number.parseInt(request.header('content-length'), 10) || 0;
      }
    }
    done();
  }
}

/**
 * A TCP proxy in front of a server, standing in for the network between a
 * client and it: `cut()` drops every connection at once, without a
 * WebSocket close frame on either side, and while `hold()` is on, new
 * connections are accepted but reach the server only at `release()`.
 *
 * It can also stand in for a proxy that lets only plain HTTP requests
 * through: with `refuseWebSockets`, a GET asking for a WebSocket upgrade is
 * answered 403 by the proxy itself, and with `refuseEventStreams`, so is a
 * GET that accepts `text/event-stream`; every request on a connection is
 * looked at, and `refusedUpgrades` and `refusedEventStreams` count the
 * refusals.
 */
export class Proxy {
  /**
   * `server`: one server, or several: each connection goes to the first
   * that accepts it (a load balancer in front of a fleet).
   */
  static async start(server, { refuseWebSockets = false, refuseEventStreams = false } = {}) {
    const proxy = new Proxy();
    proxy.targets = (Array.isArray(server) ? server : [server]).map((s) => s.port);
    proxy.pairs = new Set();
    proxy.held = null;
    proxy.refuseWebSockets = refuseWebSockets;
    proxy.refuseEventStreams = refuseEventStreams;
    proxy.refusedUpgrades = 0;
    proxy.refusedEventStreams = 0;
    proxy.server = net.createServer((socket) => {
      socket.on('error', () => socket.destroy());
      if (proxy.held) {
        proxy.held.push(socket);
      } else {
        proxy.#forward(socket);
      }
    });
    await new Promise((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
    proxy.port = proxy.server.address().port;
    proxy.url = `http://127.0.0.1:${proxy.port}`;
    return proxy;
  }

  #forward(socket, index = 0) {
    const upstream = net.connect(this.targets[index], '127.0.0.1');
    upstream.once('error', (e) => {
      if (upstream.connected) {
        return;
      }
      // Not accepting: the next server, if any.
      if (e.code === 'ECONNREFUSED' && index + 1 < this.targets.length) {
        this.#forward(socket, index + 1);
      } else {
        socket.destroy();
      }
    });
    upstream.once('connect', () => {
      upstream.connected = true;
      this.#pipe(socket, upstream);
    });
  }

  #pipe(socket, upstream) {
    const pair = { socket, upstream };
    this.pairs.add(pair);
    const end = () => {
      this.pairs.delete(pair);
      socket.destroy();
      upstream.destroy();
    };
    socket.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    upstream.pipe(socket);
    if (!this.refuseWebSockets && !this.refuseEventStreams) {
      socket.pipe(upstream);
      return;
    }
    const filter = new RequestFilter(
      (request) => this.#refuses(request),
      () => {
        // The server has answered every earlier request (clients here
        // send one at a time), so the 403 is the next thing the client
        // reads; the server side goes when the client has closed.
        upstream.unpipe(socket);
        socket.unpipe(filter);
        socket.end(FORBIDDEN);
      },
    );
    socket.pipe(filter).pipe(upstream);
  }

  /** Whether to answer `request` (a parsed head) with a 403; counts it. */
  #refuses(request) {
    if (request.method !== 'GET') {
      return false;
    }
    if (this.refuseWebSockets && /\bwebsocket\b/i.test(request.header('upgrade'))) {
      this.refusedUpgrades += 1;
      return true;
    }
    if (this.refuseEventStreams && /\btext\/event-stream\b/i.test(request.header('accept'))) {
      this.refusedEventStreams += 1;
      return true;
    }
    return false;
  }

  /** Drops every open connection, both ways, without a close handshake. */
  cut() {
    for (const { socket, upstream } of this.pairs) {
      socket.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  /** New connections wait (their bytes buffered) until `release()`. */
  hold() {
    this.held ??= [];
  }

  /** Forwards the held connections, and new ones from now on. */
  release() {
    const held = this.held ?? [];
    this.held = null;
    for (const socket of held) {
      if (!socket.destroyed) {
        this.#forward(socket);
      }
    }
  }

  /** How many connections wait in `hold()`. */
  get waiting() {
    return this.held?.filter((socket) => !socket.destroyed).length ?? 0;
  }

  async stop() {
    this.release();
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * The pub/sub channels Redis knows now (on a cluster, the shard channels of
 * every node), with `redis-cli`.
 */
export async function redisChannels() {
  const url = required('SWITCHBOARD_REDIS_URL');
  const parsed = new URL(url.replace(/^rediss?(-cluster)?:/, 'http:'));
  const cluster = url.includes('-cluster');
  const nodes = [parsed.host, ...parsed.searchParams.getAll('node')];
  const { execFileSync } = await import('node:child_process');
  const channels = new Set();
  for (const node of nodes) {
    const [host, port] = node.split(':');
    const command = cluster ? ['PUBSUB', 'SHARDCHANNELS', '*'] : ['PUBSUB', 'CHANNELS', '*'];
    const out = execFileSync('redis-cli', ['-h', host, '-p', port, ...command], { encoding: 'utf8' });
    for (const line of out.split('\n')) {
      if (line.trim()) {
        channels.add(line.trim());
      }
    }
  }
  return channels;
}

/** Waits until `condition()` holds, failing after `timeoutMs`. */
export async function until(condition, what, timeoutMs = TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A text no other test uses. */
let counter = 0;
export function unique(prefix) {
  counter += 1;
  return `${prefix}-${process.pid}-${counter}-${Math.random().toString(36).slice(2, 8)}`;
}

export { signalR };
