// The switchboard chat page: a small SignalR client (negotiate, WebSocket,
// JSON hub protocol) written against the browser's WebSocket. No libraries.
"use strict";

const HUB = "/hubs/chat";
const RS = "\x1e"; // ends every JSON record
const KEEP_ALIVE_MS = 15000; // send a Ping after this long without sending
const SERVER_TIMEOUT_MS = 30000; // give up after this long without hearing

const $ = (id) => document.getElementById(id);

let socket = null; // the open WebSocket, once the handshake is done or pending
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
  if (!socket || socket.readyState !== WebSocket.OPEN) throw new Error("not connected");
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

function openSocket(url) {
  const ws = new WebSocket(url);
  socket = ws;
  let buffer = "";
  let handshakeDone = false;

  ws.onopen = () => {
    ws.send(JSON.stringify({ protocol: "json", version: 1 }) + RS);
    lastSent = lastReceived = Date.now();
  };

  ws.onmessage = (event) => {
    if (ws !== socket || typeof event.data !== "string") return;
    lastReceived = Date.now();
    buffer += event.data;
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
        ws.close();
        return;
      }
      whoAmI();
    }
  };

  ws.onclose = () => {
    if (ws !== socket) return;
    socket = null;
    for (const call of pending.values()) call.reject(new Error("connection closed"));
    pending.clear();
    setRoom(null);
    setConnected(false);
  };
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
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const token = encodeURIComponent(negotiation.connectionToken);
    openSocket(`${scheme}//${location.host}${HUB}?${query}id=${token}`);
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
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
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

// `/?user=alice` fills in the name.
$("user").value = new URLSearchParams(location.search).get("user") || "";
