// Talking to the api: the token (sessionStorage, sent as a bearer header, never in a URL),
// JSON requests, and the live event stream read with fetch() (EventSource cannot send headers).

const TOKEN = "inferno.token";

export class Unauthorized extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN),
  set: (value) => sessionStorage.setItem(TOKEN, value),
  clear: () => sessionStorage.removeItem(TOKEN),
};

function headers(extra = {}) {
  const out = { Accept: "application/json", "X-Inferno-Actor": "dashboard", ...extra };
  const bearer = token.get();
  if (bearer) out.Authorization = `Bearer ${bearer}`;
  return out;
}

async function answer(response) {
  if (response.status === 401) throw new Unauthorized("the api wants a valid token");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.error || response.statusText);
  return body;
}

export async function get(path) {
  return answer(await fetch(path, { headers: headers(), cache: "no-store" }));
}

export async function post(path, body) {
  const init = {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify(body),
  };
  return answer(await fetch(path, init));
}

// One SSE message: its fields, with data lines joined.
function parse(block) {
  const message = {};
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const at = line.indexOf(":");
    const name = at < 0 ? line : line.slice(0, at);
    const value = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
    message[name] = name === "data" && message.data !== undefined ? `${message.data}\n${value}` : value;
  }
  return message;
}

// Follows /api/v1/events/stream for ever: `onOpen(cursor)` when a connection starts, `onEntry`
// for each stored entry, `onState` with "live" / "reconnecting"; resumes with Last-Event-ID.
export async function follow({ onOpen, onEntry, onState, onUnauthorized }) {
  let last = null;
  for (;;) {
    try {
      const extra = { Accept: "text/event-stream" };
      if (last) extra["Last-Event-ID"] = last;
      const response = await fetch("/api/v1/events/stream?heartbeat=10", { headers: headers(extra) });
      if (response.status === 401) {
        onUnauthorized();
        return;
      }
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let opened = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = parse(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message.id) last = message.id;
          if (!opened && message.id) {
            opened = true;
            onState("live");
            await onOpen(last);
          }
          if (message.data) onEntry(JSON.parse(message.data));
        }
      }
    } catch (error) {
      console.warn("event stream:", error);
    }
    onState("reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}
