/* The agent console's connection to /agent/ws: auth with resume, reconnect with backoff
   (0.5 s doubling to 15 s, with jitter), and the browser's offline event closing it at once. */

export function deskSocket({ token, auth, onFrame, onState, onClosed }) {
  let ws = null;
  let ready = false;
  let retries = 0;
  let retryTimer = null;

  function connect() {
    clearTimeout(retryTimer);
    if (!token() || ws) return;
    if (!navigator.onLine) { onState("offline"); return; }
    const url = new URL("agent/ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href);
    ws = socket;
    ready = false;
    onState("connecting");
    socket.addEventListener("open", () => socket.send(JSON.stringify(auth())));
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (!frame || typeof frame.type !== "string") return;
      if (frame.type === "ready") { ready = true; retries = 0; }
      onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (ws !== socket) return;
      ws = null;
      ready = false;
      if (onClosed(event.code, event.reason) === false) return; // signed out or replaced: no retry
      onState(navigator.onLine ? "lost" : "offline");
      if (event.code === 4429) retries = Math.max(retries, 5);
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    clearTimeout(retryTimer);
    const delay = Math.min(15000, 500 * 2 ** retries) * (0.75 + Math.random() / 2);
    retries += 1;
    retryTimer = setTimeout(connect, delay);
  }

  function drop() {
    clearTimeout(retryTimer);
    if (ws) { const socket = ws; ws = null; ready = false; socket.close(); }
  }

  window.addEventListener("offline", () => {
    // The browser says the network is gone: do not wait for the socket to notice.
    drop();
    onClosed(0, "offline");
    onState("offline");
  });
  window.addEventListener("online", () => { retries = 0; connect(); });

  return {
    connect, drop,
    send(frame) {
      if (ws && ready && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); return true; }
      return false;
    },
  };
}
