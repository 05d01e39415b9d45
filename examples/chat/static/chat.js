// The chat page: a WebSocket to talk, an EventSource to watch read-only.
//
// Everything that comes from the network or from a user reaches the page through
// textContent (never innerHTML), so a message cannot become markup.
"use strict";

const NICK = /^[\p{L}\p{N}_][\p{L}\p{N}_.-]{0,23}$/u;
const ROOM = /^[a-z0-9][a-z0-9-]{0,31}$/;
// Close codes after which reconnecting cannot help: the server refused what we sent.
const REFUSED = new Set([1003, 1007, 1008, 1009]);

const $ = (id) => document.getElementById(id);

const chat = {
  mode: null, // "talk" (WebSocket) or "watch" (EventSource)
  room: "",
  nick: "",
  socket: null,
  source: null,
  // The id of the last room event seen: a reconnect resumes after it. The server sends
  // each event once (no need to filter duplicates, which ids could not tell apart anyway:
  // a memory:// server that restarts counts from 1 again).
  lastId: null,
  retries: 0,
  timer: null,
};

function setStatus(text, state) {
  const status = $("status");
  status.textContent = text;
  status.dataset.state = state;
}

function showLobby(error) {
  stop();
  $("chat").hidden = true;
  $("lobby").hidden = false;
  const box = $("join-error");
  box.textContent = error || "";
  box.hidden = !error;
  document.title = "microasgi chat";
}

function showRoom() {
  $("lobby").hidden = true;
  $("chat").hidden = false;
  $("room-name").textContent = chat.room;
  $("whoami").textContent = chat.mode === "talk" ? `as ${chat.nick}` : "read-only";
  $("say-form").hidden = chat.mode !== "talk";
  document.body.classList.toggle("watching", chat.mode === "watch");
  $("log").replaceChildren();
  $("members").replaceChildren();
  $("member-count").textContent = "";
  chat.lastId = null;
  chat.retries = 0;
  document.title = `#${chat.room} · microasgi chat`;
  if (chat.mode === "talk") $("text").focus();
}

function stop() {
  clearTimeout(chat.timer);
  const { socket, source } = chat;
  chat.socket = chat.source = null;
  if (socket) socket.close(1000, "Left the room");
  if (source) source.close();
}

// -- talking: the WebSocket -----------------------------------------------------------

function connect() {
  const url = new URL(`ws/${encodeURIComponent(chat.room)}`, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("nick", chat.nick);
  if (chat.lastId) url.searchParams.set("last_id", chat.lastId);
  const socket = new WebSocket(url);
  chat.socket = socket;
  setStatus(chat.retries ? "reconnecting…" : "connecting…", "connecting");
  socket.onopen = () => {
    chat.retries = 0;
    setStatus("connected", "online");
  };
  socket.onmessage = (message) => receive(JSON.parse(message.data));
  socket.onclose = (close) => {
    if (chat.socket !== socket) return; // we left on purpose
    chat.socket = null;
    if (REFUSED.has(close.code)) {
      showLobby(close.reason || `The server refused the connection (${close.code}).`);
      return;
    }
    // Back off: 0.5 s, 1 s, 2 s… up to 10 s, with jitter so clients do not come back at once.
    const delay = Math.min(10000, 500 * 2 ** chat.retries) * (0.75 + Math.random() / 2);
    chat.retries += 1;
    const why = close.reason ? `${close.reason}. ` : "";
    setStatus(`${why}Reconnecting in ${Math.ceil(delay / 1000)} s…`, "offline");
    chat.timer = setTimeout(connect, delay);
  };
}

function say(event) {
  event.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !chat.socket || chat.socket.readyState !== WebSocket.OPEN) return;
  chat.socket.send(JSON.stringify({ type: "message", text }));
  input.value = "";
}

// -- watching: server-sent events -----------------------------------------------------

function watch() {
  // EventSource reconnects by itself and sends Last-Event-ID, so the stream resumes
  // after the last event it delivered.
  const source = new EventSource(`rooms/${encodeURIComponent(chat.room)}/events`);
  chat.source = source;
  setStatus("connecting…", "connecting");
  source.onopen = () => setStatus("watching", "online");
  source.onmessage = (message) => receive(JSON.parse(message.data));
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      showLobby("The server refused the event stream.");
    } else {
      setStatus("reconnecting…", "offline");
    }
  };
}

// -- what the server sends --------------------------------------------------------------

function receive(data) {
  if (data.type === "members") {
    showMembers(data.members);
  } else if (data.type === "error") {
    addLine("notice", [text(data.detail)]);
  } else if (data.type === "message" || data.type === "join" || data.type === "leave") {
    if (data.id) chat.lastId = data.id;
    showEvent(data);
  }
}

function text(content, className) {
  const span = document.createElement("span");
  span.textContent = content;
  if (className) span.className = className;
  return span;
}

function nickLabel(nick) {
  const label = text(nick, "nick");
  // A stable colour per nickname (set through the CSSOM, which the page's CSP allows).
  let hash = 0;
  for (const char of nick) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  label.style.setProperty("--hue", String(hash % 360));
  return label;
}

function showEvent(data) {
  const time = document.createElement("time");
  time.dateTime = data.time;
  time.textContent = new Date(data.time).toLocaleTimeString([], {
    hour: "2-digit",
    minute: "2-digit",
  });
  if (data.type === "message") {
    addLine("message", [time, nickLabel(data.nick), text(data.text, "text")]);
  } else {
    const what = document.createElement("span");
    what.append(nickLabel(data.nick), data.type === "join" ? " joined" : " left");
    addLine(data.type, [time, what]);
  }
}

function addLine(className, parts) {
  const log = $("log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 40;
  const item = document.createElement("li");
  item.className = className;
  item.append(...parts);
  log.append(item);
  if (stick) item.scrollIntoView({ block: "end" });
}

function showMembers(members) {
  const list = $("members");
  list.replaceChildren(
    ...members.map((nick) => {
      const item = document.createElement("li");
      item.append(nickLabel(nick));
      if (nick === chat.nick && chat.mode === "talk") item.append(text(" (you)", "you"));
      return item;
    }),
  );
  $("member-count").textContent = `(${members.length})`;
}

// -- the lobby ----------------------------------------------------------------------------

function enter(mode) {
  const nick = $("nick").value.trim();
  const room = $("room").value.trim().toLowerCase();
  let error = "";
  if (mode === "talk" && !NICK.test(nick)) {
    error = "Nickname: 1 to 24 letters, digits, '_', '.' or '-', not starting with '.' or '-'.";
  } else if (!ROOM.test(room)) {
    error = "Room: 1 to 32 lowercase letters, digits or '-', not starting with '-'.";
  }
  if (error) {
    showLobby(error);
    return;
  }
  if (mode === "talk") localStorage.setItem("chat.nick", nick);
  history.replaceState(null, "", `?room=${encodeURIComponent(room)}`);
  Object.assign(chat, { mode, room, nick });
  showRoom();
  if (mode === "talk") connect();
  else watch();
}

document.addEventListener("DOMContentLoaded", () => {
  $("nick").value = localStorage.getItem("chat.nick") || "";
  const room = new URLSearchParams(location.search).get("room");
  if (room) $("room").value = room;
  $("join-form").addEventListener("submit", (event) => {
    event.preventDefault();
    enter("talk");
  });
  $("watch").addEventListener("click", () => enter("watch"));
  $("say-form").addEventListener("submit", say);
  $("leave").addEventListener("click", () => showLobby());
  ($("nick").value ? $("room") : $("nick")).focus();
});
