// The switchboard chat page: a small SignalR client (negotiate, the JSON hub
// protocol, and the three transports: WebSockets, Server-Sent Events, long
// polling) written against the browser's WebSocket, EventSource and fetch.
// No libraries.
"use strict";

const HUB = "/hubs/chat";
const RS = "\x1e"; // ends every JSON record
const KEEP_ALIVE_MS = 15000; // send a Ping after this long without sending
const SERVER_TIMEOUT_MS = 30000; // give up after this long without hearing

const $ = (id) => document.getElementById(id);

// The open transport, once the handshake is done or pending:
// { name, send(text), close(), isOpen() }.
let socket = null;
let me = null; // { connectionId, user } from WhoAmI
let room = null; // the joined room; messages go there when set
let nextInvocationId = 1;
const pending = new Map(); // invocationId -> { resolve, reject }
let lastSent = 0;
let lastReceived = 0;

function notice(text, isError) {
  $("notice").textContent = text || "";
  $("notice").className = isError ? "meta error" : "meta";
}

function setConnected(connected) {
  $("status").textContent = connected ? "connected" : socket ? "connecting" : "disconnected";
  $("status").className = connected ? "connected" : "";
  for (const id of ["join", "leave", "send"]) $(id).disabled = !connected;
  if (!connected) {
    me = null;
    $("me").textContent = "\u2013";
    $("me-user").textContent = "\u2013";
  }
}

function setRoom(name) {
  room = name;
  $("current-room").textContent = name ? `room ${name}` : "everyone";
}

function addMessage(from, text) {
  const item = document.createElement("li");
  item.textContent = `${from}: ${text}`;
  $("messages").appendChild(item);
  item.scrollIntoView({ block: "nearest" });
}

// Sends one hub message as a JSON record.
function sendRecord(message) {
  if (!socket || !socket.isOpen()) throw new Error("not connected");
  socket.send(JSON.stringify(message) + RS);
  lastSent = Date.now();
}

// Invokes a hub method and resolves with its result (a Completion).
function invoke(target, ...args) {
  return new Promise((resolve, reject) => {
    const invocationId = String(nextInvocationId++);
    pending.set(invocationId, { resolve, reject });
    try {
      sendRecord({ type: 1, invocationId, target, arguments: args });
    } catch (e) {
      pending.delete(invocationId);
      reject(e);
    }
  });
}

// Answers the server's `ask(question)`, a client-result invocation.
function answer(question) {
  const name = (me && (me.user || me.connectionId)) || "someone";
  notice(`answered a question: ${question}`);
  return `${name} heard "${question}"`;
}

function onMessage(message) {
  switch (message.type) {
    case 1: { // Invocation
      const { target, invocationId } = message;
      const args = message.arguments || [];
      if (target === "message") {
        addMessage(args[0], args[1]);
      } else if (target === "ask") {
        if (invocationId) sendRecord({ type: 3, invocationId, result: answer(args[0]) });
      } else if (invocationId) {
        sendRecord({ type: 3, invocationId, error: `No client method with the name '${target}' found.` });
      }
      break;
    }
    case 3: { // Completion
      const call = pending.get(message.invocationId);
      if (!call) break;
      pending.delete(message.invocationId);
      if (message.error) call.reject(new Error(message.error));
      else call.resolve(message.result);
      break;
    }
    case 7: // Close
      notice(message.error ? `closed by the server: ${message.error}` : "closed by the server", !!message.error);
      socket.close();
      break;
    default: // Ping (6) needs no answer; stream messages are not used here
      break;
  }
}

// Handles the text the server sent on `transport`: the handshake answer,
// then hub records.
function receiver(transport) {
  let buffer = "";
  let handshakeDone = false;
  return (text) => {
    if (transport !== socket) return;
    lastReceived = Date.now();
    buffer += text;
    let end;
    while ((end = buffer.indexOf(RS)) >= 0) {
      const record = JSON.parse(buffer.slice(0, end));
      buffer = buffer.slice(end + 1);
      if (handshakeDone) {
        onMessage(record);
        continue;
      }
      handshakeDone = true;
      if (record.error) {
        notice(`handshake refused: ${record.error}`, true);
        transport.close();
        return;
      }
      whoAmI();
    }
  };
}

// Called once when `transport` ends, whoever ends it.
function closed(transport) {
  if (transport !== socket) return;
  socket = null;
  for (const call of pending.values()) call.reject(new Error("connection closed"));
  pending.clear();
  setRoom(null);
  setConnected(false);
}

// Sends the handshake once `transport` is open.
function opened(transport) {
  transport.send(JSON.stringify({ protocol: "json", version: 1 }) + RS);
  lastSent = lastReceived = Date.now();
}

// The WebSocket transport. Resolves once open; rejects if it cannot open.
function openWebSocket(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, "ws"));
    const transport = {
      name: "WebSockets",
      send: (text) => ws.send(text),
      close: () => ws.close(),
      isOpen: () => ws.readyState === WebSocket.OPEN,
    };
    let open = false;
    ws.onopen = () => {
      open = true;
      resolve(transport);
    };
    ws.onmessage = (event) => {
      if (typeof event.data === "string") transport.receive(event.data);
    };
    ws.onclose = () => (open ? closed(transport) : reject(new Error("the WebSocket did not open")));
  });
}

// Client-to-server messages of the HTTP transports: one POST at a time, in order.
function poster(url) {
  let queue = Promise.resolve();
  return (text) => {
    queue = queue.then(() => fetch(url, { method: "POST", body: text })).then((response) => {
      if (!response.ok) throw new Error(`send failed: ${response.status}`);
    });
    queue.catch(() => {});
  };
}

// The Server-Sent Events transport.
function openEventStream(url) {
  return new Promise((resolve, reject) => {
    const events = new EventSource(url);
    let open = false;
    const transport = {
      name: "ServerSentEvents",
      send: poster(url),
      close: () => {
        events.close();
        closed(transport);
      },
      isOpen: () => open && events.readyState !== EventSource.CLOSED,
    };
    events.onopen = () => {
      open = true;
      resolve(transport);
    };
    events.onmessage = (event) => transport.receive(event.data);
    events.onerror = () => {
      events.close();
      if (open) closed(transport);
      else reject(new Error("the event stream did not open"));
    };
  });
}

// The long-polling transport: one poll after another until the server
// answers 204 or an error.
async function openLongPolling(url) {
  const first = await fetch(url);
  if (first.status !== 200) throw new Error(`long polling refused: ${first.status}`);
  let open = true;
  const transport = {
    name: "LongPolling",
    send: poster(url),
    close: () => {
      if (!open) return;
      open = false;
      fetch(url, { method: "DELETE" }).catch(() => {});
      closed(transport);
    },
    isOpen: () => open,
  };
  (async () => {
    while (open) {
      let response;
      try {
        response = await fetch(url);
      } catch {
        break;
      }
      if (response.status !== 200) break;
      const text = await response.text();
      if (text && transport.receive) transport.receive(text);
    }
    open = false;
    closed(transport);
  })();
  return transport;
}

const TRANSPORTS = {
  WebSockets: openWebSocket,
  ServerSentEvents: openEventStream,
  LongPolling: openLongPolling,
};

// Opens the chosen transport, or (auto) the first of the server's that opens.
async function openTransport(url, negotiation, choice) {
  const offered = (negotiation.availableTransports || []).map((t) => t.transport);
  const candidates = choice === "auto" ? offered : [choice];
  let lastError = new Error("the server offers no transport this page knows");
  for (const name of candidates) {
    if (!TRANSPORTS[name]) continue;
    if (!offered.includes(name)) {
      lastError = new Error(`the server does not offer ${name}`);
      continue;
    }
    try {
      return await TRANSPORTS[name](url);
    } catch (e) {
      lastError = e;
    }
  }
  throw lastError;
}

async function whoAmI() {
  try {
    me = await invoke("WhoAmI");
    $("me").textContent = me.connectionId;
    $("me-user").textContent = me.user === null ? "(anonymous)" : me.user;
    setConnected(true);
  } catch (e) {
    notice(e.message, true);
  }
}

async function connect() {
  if (socket) {
    const old = socket;
    socket = null;
    old.close();
  }
  setRoom(null);
  notice("");
  const user = $("user").value.trim();
  // The hub URL's query (the demo identity) goes on every request.
  const query = user ? `user=${encodeURIComponent(user)}&` : "";
  $("status").textContent = "connecting";
  try {
    const response = await fetch(`${HUB}/negotiate?${query}negotiateVersion=1`, { method: "POST" });
    if (!response.ok) throw new Error(`negotiate failed: ${response.status} ${await response.text()}`);
    const negotiation = await response.json();
    if (negotiation.error) throw new Error(negotiation.error);
    const token = encodeURIComponent(negotiation.connectionToken);
    const url = `${location.protocol}//${location.host}${HUB}?${query}id=${token}`;
    const transport = await openTransport(url, negotiation, $("transport").value);
    transport.receive = receiver(transport);
    socket = transport;
    $("transport-used").textContent = transport.name;
    opened(transport);
  } catch (e) {
    setConnected(false);
    notice(e.message, true);
  }
}

async function send() {
  const text = $("text").value.trim();
  if (!text) return;
  try {
    if (room) await invoke("SendGroup", room, text);
    else await invoke("Broadcast", text);
    $("text").value = "";
  } catch (e) {
    notice(e.message, true);
  }
}

async function join() {
  const name = $("room").value.trim();
  if (!name) return;
  try {
    if (room && room !== name) await invoke("Leave", room);
    await invoke("Join", name);
    setRoom(name);
  } catch (e) {
    notice(e.message, true);
  }
}

async function leave() {
  if (!room) return;
  try {
    await invoke("Leave", room);
    setRoom(null);
  } catch (e) {
    notice(e.message, true);
  }
}

// Keep-alive both ways: Ping when quiet, give up when the server is silent.
setInterval(() => {
  if (!socket || !socket.isOpen()) return;
  const now = Date.now();
  if (now - lastReceived > SERVER_TIMEOUT_MS) {
    notice("the server stopped answering", true);
    socket.close();
  } else if (now - lastSent >= KEEP_ALIVE_MS) {
    sendRecord({ type: 6 });
  }
}, 1000);

$("connect").addEventListener("click", connect);
$("send").addEventListener("click", send);
$("join").addEventListener("click", join);
$("leave").addEventListener("click", leave);
$("text").addEventListener("keydown", (e) => { if (e.key === "Enter") send(); });
$("room").addEventListener("keydown", (e) => { if (e.key === "Enter") join(); });
$("user").addEventListener("keydown", (e) => { if (e.key === "Enter") connect(); });

// `/?user=alice&transport=LongPolling` fills in the name and the transport.
const params = new URLSearchParams(location.search);
$("user").value = params.get("user") || "";
if (TRANSPORTS[params.get("transport")]) $("transport").value = params.get("transport");
