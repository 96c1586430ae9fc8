// The dashboard page: signs in for a token, then speaks the SignalR JSON hub
// protocol over a WebSocket (the token rides in the access_token query
// parameter, as browsers cannot set headers on a WebSocket), and draws the
// samples every server pushes. No libraries.
"use strict";

const HUB = "/hubs/dashboard";
const RS = "\x1e"; // ends every JSON record
const KEEP_ALIVE_MS = 15000;
const WINDOW_MS = 60000; // how much history the chart shows
const COLOURS = ["#2856d8", "#d8572a", "#1b9e77", "#9b59b6", "#e6a800", "#555"];

const $ = (id) => document.getElementById(id);
const series = new Map(); // server -> { colour, points: [{ at, value }], connections }
let socket = null;
let keepAlive = null;
window.dashboardSamples = 0; // read by the browser test

function notice(text, isError) {
  $("notice").textContent = text || "";
  $("notice").className = isError ? "meta error" : "meta";
}

function setStatus(text, connected) {
  $("status").textContent = text;
  $("status").className = connected ? "connected" : "";
  $("login").disabled = connected || text === "connecting";
}

async function signIn(user) {
  const response = await fetch("/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user }),
  });
  if (!response.ok) throw new Error(`sign-in refused: ${(await response.text()).trim()}`);
  return (await response.json()).token;
}

function send(message) {
  socket.send(JSON.stringify(message) + RS);
}

function onRecord(record, state) {
  if (!state.handshaken) {
    state.handshaken = true;
    if (record.error) throw new Error(`handshake refused: ${record.error}`);
    send({ type: 1, invocationId: "watch", target: "Watch", arguments: [] });
    return;
  }
  switch (record.type) {
    case 1:
      if (record.target === "sample") addSample(record.arguments[0]);
      break;
    case 3:
      if (record.invocationId === "watch") {
        if (record.error) throw new Error(record.error);
        $("me").textContent = record.result.user;
        setStatus("connected", true);
      }
      break;
    case 7:
      notice(record.error ? `closed by the server: ${record.error}` : "closed by the server", !!record.error);
      break;
    default:
      break; // pings
  }
}

function connect(token) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}${HUB}?access_token=${encodeURIComponent(token)}`;
  const state = { handshaken: false, buffer: "" };
  socket = new WebSocket(url);
  setStatus("connecting", false);
  socket.onopen = () => {
    socket.send(JSON.stringify({ protocol: "json", version: 1 }) + RS);
    keepAlive = setInterval(() => send({ type: 6 }), KEEP_ALIVE_MS);
  };
  socket.onmessage = (event) => {
    state.buffer += event.data;
    let end;
    while ((end = state.buffer.indexOf(RS)) >= 0) {
      const text = state.buffer.slice(0, end);
      state.buffer = state.buffer.slice(end + 1);
      try {
        onRecord(JSON.parse(text), state);
      } catch (error) {
        notice(error.message, true);
        socket.close();
      }
    }
  };
  socket.onclose = () => {
    clearInterval(keepAlive);
    socket = null;
    setStatus("disconnected", false);
  };
}

function addSample(sample) {
  window.dashboardSamples += 1;
  let line = series.get(sample.server);
  if (!line) {
    line = { colour: COLOURS[series.size % COLOURS.length], points: [] };
    series.set(sample.server, line);
  }
  line.connections = sample.connections;
  line.points.push({ at: sample.at, value: sample.deliveredPerSecond });
  const oldest = Date.now() - WINDOW_MS;
  while (line.points.length > 0 && line.points[0].at < oldest) line.points.shift();
  if (sample.watchers !== null && sample.watchers !== undefined) {
    $("watchers").textContent = String(sample.watchers);
  }
  drawLegend();
  draw();
}

function drawLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  for (const [server, line] of series) {
    const item = document.createElement("li");
    item.dataset.server = server;
    item.style.setProperty("--colour", line.colour);
    item.textContent = `${server} (${line.connections} connections)`;
    legend.appendChild(item);
  }
}

function draw() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  const pad = 32;
  ctx.clearRect(0, 0, width, height);
  let top = 1;
  for (const line of series.values()) for (const p of line.points) top = Math.max(top, p.value);
  top = Math.max(4, Math.ceil((top * 1.2) / 4) * 4); // four even steps
  ctx.strokeStyle = "#dde1e8";
  ctx.fillStyle = "#5b6475";
  ctx.font = "11px system-ui, sans-serif";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad + ((height - 2 * pad) * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad, y);
    ctx.lineTo(width - 8, y);
    ctx.stroke();
    ctx.fillText(String(Math.round((top * (4 - i)) / 4)), 4, y + 4);
  }
  const now = Date.now();
  const x = (at) => pad + ((width - pad - 8) * (at - (now - WINDOW_MS))) / WINDOW_MS;
  const y = (value) => height - pad - ((height - 2 * pad) * value) / top;
  ctx.lineWidth = 2;
  for (const line of series.values()) {
    ctx.strokeStyle = line.colour;
    ctx.beginPath();
    line.points.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.at), y(p.value)) : ctx.lineTo(x(p.at), y(p.value))));
    ctx.stroke();
    for (const p of line.points) {
      ctx.fillStyle = line.colour;
      ctx.fillRect(x(p.at) - 2, y(p.value) - 2, 4, 4);
    }
  }
}

$("login").addEventListener("click", async () => {
  const user = $("user").value.trim();
  if (!user) {
    notice("type a name first", true);
    return;
  }
  notice("");
  try {
    connect(await signIn(user));
  } catch (error) {
    notice(error.message, true);
    setStatus("signed out", false);
  }
});
