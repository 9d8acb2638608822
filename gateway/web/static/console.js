/* contactgate agent console, served at /console (docs/pages.md, "Agent console").

   It speaks the /agent/ws contract of docs/protocol.md ("Agent desk"). The agent's token is typed
   into the sign-in form, kept in sessionStorage (this tab only) and sent in the `auth` frame,
   never in a URL. The conversations shown, the last seq of each and the replies not yet
   acknowledged are kept in sessionStorage too: a dropped connection (or a reload) is reopened
   with backoff and resumed with `auth.resume`, replies are sent again with their client ids
   (the gateway stores each id once), and events are kept by seq, so nothing is lost or doubled.

   A new offer calls window.contactgateConsole.onOffer(offer) when a page sets it and dispatches
   a `contactgate:offer` CustomEvent on document (for a sound or a desktop notification).
   Plain JavaScript, no build step, no inline script or style (the page's CSP allows neither). */
(() => {
  "use strict";
  const KEY = "contactgate:console";
  const api = (window.contactgateConsole = window.contactgateConsole || { onOffer: null });

  // ---- state ------------------------------------------------------------------------------------
  let token = sessionStorage.getItem(`${KEY}:token`);
  let wanted = sessionStorage.getItem(`${KEY}:status`) || "available";
  let convs = {};           // id -> {id, channel, queue, customer, events, last, unread, pending, ended, note}
  try { convs = JSON.parse(sessionStorage.getItem(`${KEY}:state`) || "{}").convs || {}; } catch (e) { convs = {}; }
  const offers = new Map(); // id -> {conversation, deadline, events}
  let me = null;            // ready.agent
  let dispositions = [];
  let requireDisposition = false;
  let selected = sessionStorage.getItem(`${KEY}:selected`);
  let ws = null;
  let ready = false;
  let retries = 0;
  let retryTimer = null;
  let wrapUntil = null;
  const typingTimers = {};
  let lastTypingSent = 0;

  function save() {
    sessionStorage.setItem(`${KEY}:state`, JSON.stringify({ convs }));
    if (selected) sessionStorage.setItem(`${KEY}:selected`, selected);
    else sessionStorage.removeItem(`${KEY}:selected`);
  }

  function newId() {
    return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  }

  // ---- DOM --------------------------------------------------------------------------------------
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") el.textContent = v;
      else if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) el.append(c);
    return el;
  }

  const app = document.getElementById("console");
  const tokenInput = h("input", { id: "cg-token", type: "password", autocomplete: "current-password", required: true });
  const signInError = h("p", { class: "error", role: "alert", hidden: true });
  const signIn = h("form", { class: "signin", "aria-labelledby": "cg-signin-title" },
    h("h1", { id: "cg-signin-title", text: "Agent console" }),
    h("label", { for: "cg-token", text: "Agent token" }), tokenInput, signInError,
    h("button", { type: "submit", class: "primary", text: "Sign in" }));

  const whoami = h("span", { class: "whoami" });
  const presence = h("select", { id: "cg-presence" },
    h("option", { value: "available", text: "Available" }), h("option", { value: "away", text: "Away" }));
  const presenceReason = h("span", { class: "reason", role: "status" });
  const connection = h("span", { class: "connection", role: "status" });
  const signOut = h("button", { type: "button", text: "Sign out" });
  const header = h("header", { class: "top" }, h("h1", { text: "Agent console" }), whoami,
    h("label", { for: "cg-presence", text: "Status" }), presence, presenceReason, connection, signOut);

  const offerList = h("ul", { class: "offers", "aria-label": "Offers" });
  const convList = h("ul", { class: "conversations", "aria-label": "Conversations" });
  const notice = h("p", { class: "notice", role: "status" });
  const sidebar = h("nav", { class: "side", "aria-label": "Work" },
    h("h2", { text: "Offers" }), offerList, h("h2", { text: "Conversations" }), convList, notice);

  const card = h("div", { class: "card" });
  const log = h("ol", { class: "log" });
  const logRegion = h("div", { class: "log-region", role: "log", "aria-label": "Messages", "aria-live": "polite" }, log);
  const pendingLog = h("ol", { class: "pending", "aria-label": "Not yet sent" });
  const typing = h("p", { class: "typing", hidden: true, text: "The customer is typing…" });
  const reply = h("textarea", { id: "cg-reply", rows: "3", placeholder: "Reply… (Enter sends, Shift+Enter for a new line)" });
  const compose = h("form", { class: "compose" }, h("label", { for: "cg-reply", class: "visually-hidden", text: "Reply" }),
    reply, h("button", { type: "submit", class: "primary", text: "Send" }));
  const disposition = h("select", { id: "cg-disposition" });
  const closeForm = h("form", { class: "close" }, h("label", { for: "cg-disposition", text: "Disposition" }), disposition,
    h("button", { type: "submit", text: "Close conversation" }));
  const transferKind = h("select", { id: "cg-transfer-kind", "aria-label": "Transfer to" },
    h("option", { value: "to_queue", text: "Queue" }), h("option", { value: "to_agent", text: "Agent" }));
  const transferTarget = h("input", { id: "cg-transfer-target", "aria-label": "Queue or agent id", required: true });
  const transferNote = h("input", { id: "cg-transfer-note", "aria-label": "Note for the next agent", placeholder: "Note" });
  const transferForm = h("form", { class: "transfer" }, transferKind, transferTarget, transferNote,
    h("button", { type: "submit", text: "Transfer" }));
  const ended = h("p", { class: "ended", hidden: true });
  const dismiss = h("button", { type: "button", text: "Remove from the list", hidden: true });
  const empty = h("p", { class: "empty", text: "No conversation selected." });
  const main = h("main", { class: "main", "aria-label": "Conversation" }, empty, card, logRegion, pendingLog, typing,
    compose, h("div", { class: "actions" }, closeForm, transferForm), ended, dismiss);
  const desk = h("div", { class: "desk", hidden: true }, header, h("div", { class: "panes" }, sidebar, main));
  app.append(signIn, desk);

  // ---- rendering --------------------------------------------------------------------------------
  const AUTHOR = { customer: "Customer", bot: "Assistant", system: "Notice" };

  function authorName(conv, event) {
    if (event.author === "customer") return (conv.customer && conv.customer.name) || AUTHOR.customer;
    if (event.author === "agent") return event.agentName || (me && me.name) || "Agent";
    return AUTHOR[event.author] || event.author || "";
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // A download needs the token in an Authorization header: fetched, then offered as a blob: link.
  function fileButton(file) {
    const button = h("button", { type: "button", class: "file", text: `Download ${file.name} (${size(file.size || 0)})` });
    button.addEventListener("click", async () => {
      try {
        const answer = await fetch(new URL(`api/attachments/${encodeURIComponent(file.id)}`, location.href),
          { headers: { Authorization: `Bearer ${token}` }, credentials: "omit" });
        if (!answer.ok) throw new Error(String(answer.status));
        const a = h("a", { href: URL.createObjectURL(await answer.blob()), download: file.name, text: file.name });
        button.replaceWith(a);
        a.click();
        a.focus();
      } catch (e) {
        button.textContent = `Could not download ${file.name}`;
      }
    });
    return button;
  }

  function eventItem(conv, event) {
    if (event.kind === "closed") return h("li", { class: "event", text: "The conversation was closed." });
    if (event.kind === "transferred") return h("li", { class: "event", text: "You transferred the conversation." });
    if (event.kind === "assigned") return null;
    if (event.kind === "delivery_failed") return h("li", { class: "event error", text: `Not delivered: ${event.text}` });
    const item = h("li", { class: `msg ${event.author}`, "data-seq": String(event.seq) },
      h("span", { class: "who", text: authorName(conv, event) }),
      h("span", { class: "text", text: event.text || "" }));
    for (const file of event.attachments || []) item.append(fileButton(file));
    return item;
  }

  function customerCard(c, extra) {
    const customer = c.customer || {};
    return h("dl", { class: "customer-card" },
      h("dt", { text: "Customer" }), h("dd", { class: "name", text: customer.name || "Unknown" }),
      h("dt", { text: "Tier" }), h("dd", { class: "tier", text: customer.tier || "–" }),
      h("dt", { text: "Channel" }), h("dd", { class: "channel", text: c.channel || "–" }),
      h("dt", { text: "Queue" }), h("dd", { class: "queue", text: c.queue || "–" }), ...(extra || []),
      ...customer360(c.id, customer));
  }

  // The customer 360 and link suggestions (docs/customers.md): identities, earlier conversations
  // on every channel, and a "Link" button per suggestion (merge_customers). Agents only.
  function customer360(conversationId, customer) {
    const out = [];
    const ids = (customer.identities || []).filter((i) => i.kind !== "webchat");  // a token hash says nothing
    if (ids.length) out.push(h("dt", { text: "Identities" }), h("dd", { class: "identities" },
      ...ids.map((i) => h("span", { class: i.verified ? "verified" : "claimed",
        text: `${i.kind} ${i.address}${i.verified ? "" : " (claimed)"} `}))));
    const past = customer.conversations || [];
    if (past.length) out.push(h("dt", { text: "History" }), h("dd", { class: "history" },
      h("ol", {}, ...past.map((p) => h("li", { text: `${p.channel} · ${p.state}${p.disposition ? " · " + p.disposition : ""}` +
        ` · ${(p.created_at || "").slice(0, 10)}${p.first_line ? " — " + p.first_line : ""}` })))));
    for (const s of customer.suggestions || []) out.push(h("dt", { text: "Suggestion" }), h("dd", { class: "suggestion" },
      h("span", { text: `Says ${s.address}: ${s.name || s.customer_id}, ${s.conversations} earlier conversation(s). ` }),
      h("button", { type: "button", text: "Link", onclick: () => send({ type: "merge_customers",
        conversation_id: conversationId, customer_id: s.customer_id }) })));
    return out;
  }

  function renderOffers() {
    offerList.replaceChildren();
    if (!offers.size) offerList.append(h("li", { class: "none", text: "No offers." }));
    for (const [id, offer] of offers) {
      const c = offer.conversation;
      const transcript = h("ol", { class: "transcript" });
      for (const e of offer.events) { const item = eventItem(c, e); if (item) transcript.append(item); }
      const extra = c.transferred_from ? [h("dt", { text: "From" }), h("dd", { text: c.transferred_from.name }),
        h("dt", { text: "Note" }), h("dd", { text: c.note || "–" })] : [];
      offerList.append(h("li", { class: "offer", "data-id": id },
        customerCard(c, extra),
        h("details", {}, h("summary", { text: `Transcript (${offer.events.length})` }), transcript),
        h("p", { class: "countdown", "data-deadline": String(offer.deadline), text: countdown(offer.deadline) }),
        h("button", { type: "button", class: "primary", text: "Accept", onclick: () => send({ type: "accept", conversation_id: id }) }),
        h("button", { type: "button", text: "Decline", onclick: () => send({ type: "decline", conversation_id: id }) })));
    }
  }

  function countdown(deadline) {
    return `${Math.max(0, Math.ceil((deadline - Date.now()) / 1000))} s to accept`;
  }

  function renderList() {
    convList.replaceChildren();
    const ids = Object.keys(convs);
    if (!ids.length) convList.append(h("li", { class: "none", text: "No conversations." }));
    for (const id of ids) {
      const conv = convs[id];
      const button = h("button", { type: "button", class: "pick", "aria-current": id === selected ? "true" : null,
        onclick: () => select(id) },
        h("span", { class: "name", text: (conv.customer && conv.customer.name) || "Customer" }),
        h("span", { class: "meta", text: conv.ended ? "ended" : conv.channel || "" }));
      if (conv.unread) button.append(h("span", { class: "unread", "aria-label": `${conv.unread} unread`, text: String(conv.unread) }));
      convList.append(h("li", {}, button));
    }
  }

  function renderMain() {
    const conv = selected && convs[selected];
    empty.hidden = !!conv;
    for (const el of [card, logRegion, compose, closeForm.parentElement]) el.hidden = !conv;
    pendingLog.hidden = !conv || !conv.pending.length;
    if (!conv) { typing.hidden = true; ended.hidden = true; dismiss.hidden = true; return; }
    card.replaceChildren(customerCard(conv, conv.customerConnected === false
      ? [h("dt", { text: "Online" }), h("dd", { text: "left the chat" })] : []));
    log.replaceChildren();
    for (const e of conv.events) { const item = eventItem(conv, e); if (item) log.append(item); }
    pendingLog.replaceChildren(...conv.pending.map((p) => h("li", { class: "msg agent sending" },
      h("span", { class: "who", text: "sending" }), h("span", { class: "text", text: p.text }))));
    typing.hidden = !conv.typing || !!conv.ended;
    compose.hidden = closeForm.parentElement.hidden = !!conv.ended;
    ended.hidden = dismiss.hidden = !conv.ended;
    ended.textContent = conv.note || "This conversation has ended.";
    logRegion.scrollTop = logRegion.scrollHeight;
  }

  function renderDispositions() {
    disposition.replaceChildren();
    if (!requireDisposition || !dispositions.length) disposition.append(h("option", { value: "", text: "(none)" }));
    for (const d of dispositions) disposition.append(h("option", { value: d, text: d.replace(/_/g, " ") }));
  }

  function render() { renderOffers(); renderList(); renderMain(); }

  function setNotice(text) { notice.textContent = text || ""; }

  function select(id) {
    selected = id;
    if (convs[id]) convs[id].unread = 0;
    save();
    renderList();
    renderMain();
    if (convs[id] && !convs[id].ended) reply.focus();
  }

  setInterval(() => {
    for (const el of offerList.querySelectorAll(".countdown")) el.textContent = countdown(Number(el.dataset.deadline));
    if (wrapUntil) {
      const left = Math.ceil((wrapUntil - Date.now()) / 1000);
      if (left <= 0) { wrapUntil = null; presenceReason.textContent = ""; }
      else presenceReason.textContent = `Wrap-up: ${left} s`;
    }
  }, 1000);

  // ---- conversation events ----------------------------------------------------------------------
  function addEvent(conv, event) {
    if (typeof event.seq !== "number" || conv.events.some((e) => e.seq === event.seq)) return false;
    const at = conv.events.findIndex((e) => e.seq > event.seq);
    if (at < 0) conv.events.push(event); else conv.events.splice(at, 0, event);
    conv.last = Math.max(conv.last || 0, event.seq);
    if (event.author === "agent" && event.id) conv.pending = conv.pending.filter((p) => p.id !== event.id);
    return true;
  }

  function eventOf(frame) {
    const e = { seq: frame.seq, kind: frame.type, author: frame.author, text: frame.text, at: frame.at };
    if (frame.id) e.id = frame.id;
    if (frame.attachments) e.attachments = frame.attachments;
    if (frame.type === "delivery_failed") e.text = frame.reason;
    return e;
  }

  function conversationEvent(frame) {
    const id = frame.conversation_id;
    const offer = offers.get(id);
    if (offer) {
      if (!offer.events.some((e) => e.seq === frame.seq)) offer.events.push(eventOf(frame));
      if (frame.type === "closed") { offers.delete(id); setNotice("The customer left before the offer was taken."); }
      renderOffers();
      return;
    }
    const conv = convs[id];
    if (!conv) return;
    if (!addEvent(conv, eventOf(frame))) return;
    if (frame.type === "message" && frame.author === "customer") {
      conv.typing = false;
      if (id !== selected || document.hidden) conv.unread = (conv.unread || 0) + 1;
    }
    if (frame.type === "closed") {
      conv.ended = true;
      conv.note = frame.closed_by === (me && me.id) ? "You closed this conversation."
        : frame.closed_by === "customer" ? "The customer closed this conversation." : "This conversation has ended.";
    }
    if (frame.type === "transferred") {
      conv.ended = true;
      conv.note = `Transferred to ${frame.to_agent || frame.to_queue}.`;
    }
    save();
    renderList();
    if (id === selected) renderMain();
  }

  function onOffer(frame) {
    const c = frame.conversation;
    const offer = { conversation: c, deadline: Date.now() + (c.timeout || 30) * 1000,
      events: (c.transcript || []).map((e) => ({ ...e, kind: "message" })), seq: c.seq };
    offers.set(c.id, offer);
    renderOffers();
    const detail = { id: c.id, customer: c.customer, channel: c.channel, queue: c.queue, timeout: c.timeout };
    try { if (typeof api.onOffer === "function") api.onOffer(detail); } catch (e) { /* the page's hook */ }
    document.dispatchEvent(new CustomEvent("contactgate:offer", { detail }));
  }

  function onAssigned(frame) {
    const id = frame.conversation_id;
    const offer = offers.get(id);
    if (offer) {
      offers.delete(id);
      const c = offer.conversation;
      const conv = convs[id] || { id, events: [], last: 0, unread: 0, pending: [] };
      Object.assign(conv, { channel: c.channel, queue: c.queue, customer: c.customer, ended: false, note: null,
        customerConnected: c.customer_connected });
      convs[id] = conv;
      for (const e of offer.events) addEvent(conv, e);
      conv.last = Math.max(conv.last, offer.seq || 0, frame.seq || 0);
      addEvent(conv, { seq: frame.seq, kind: "assigned" });
      save();
      renderOffers();
      select(id);
      return;
    }
    const conv = convs[id];
    if (conv && addEvent(conv, { seq: frame.seq, kind: "assigned" })) save();
  }

  function onReady(frame) {
    ready = true;
    retries = 0;
    me = frame.agent;
    dispositions = frame.dispositions || [];
    requireDisposition = !!frame.require_disposition;
    renderDispositions();
    whoami.textContent = me.name;
    signIn.hidden = true;
    desk.hidden = false;
    connection.textContent = "";
    offers.clear();
    const listed = new Set(frame.conversations || []);
    for (const id of listed) {
      if (!convs[id]) convs[id] = { id, events: [], last: 0, unread: 0, pending: [] };
      convs[id].ended = false;
    }
    for (const conv of Object.values(convs)) {
      // Neither listed nor ended: it went back to its queue while we were away. A replayed
      // `closed` after this frame says so instead, when the customer ended it.
      if (!listed.has(conv.id) && !conv.ended) { conv.ended = true; conv.note = "This conversation is no longer yours."; }
    }
    save();
    render();
    for (const id of listed) for (const p of convs[id].pending) send({ type: "message", conversation_id: id, id: p.id, text: p.text });
  }

  function onFrame(frame) {
    switch (frame.type) {
      case "ready": return onReady(frame);
      case "offer": return onOffer(frame);
      case "offer_withdrawn":
        offers.delete(frame.conversation_id);
        renderOffers();
        return setNotice(`An offer was withdrawn (${String(frame.reason).replace(/_/g, " ")}).`);
      case "assigned": return onAssigned(frame);
      case "message": case "notice": case "closed": case "transferred": case "delivery_failed":
        return conversationEvent(frame);
      case "ack": {
        const conv = convs[frame.conversation_id];
        if (!conv) return;
        const pending = conv.pending.find((p) => p.id === frame.id);
        if (pending) addEvent(conv, { seq: frame.seq, kind: "message", author: "agent", text: pending.text, id: frame.id });
        conv.pending = conv.pending.filter((p) => p.id !== frame.id);
        save();
        if (frame.conversation_id === selected) renderMain();
        return;
      }
      case "typing": {
        const conv = convs[frame.conversation_id];
        if (!conv) return;
        conv.typing = frame.active !== false;
        clearTimeout(typingTimers[conv.id]);
        if (conv.typing) typingTimers[conv.id] = setTimeout(() => { conv.typing = false; if (conv.id === selected) renderMain(); }, 6000);
        if (conv.id === selected) renderMain();
        return;
      }
      case "customer_merged": case "customer_unmerged": case "customers_merged": case "customer": {
        const conv = convs[frame.conversation_id];
        if (conv && frame.customer) { conv.customer = frame.customer; save(); if (conv.id === selected) renderMain(); }
        if (frame.type === "customers_merged") setNotice("Customers linked.");
        return;
      }
      case "customer_presence": {
        const conv = convs[frame.conversation_id];
        if (conv) { conv.customerConnected = frame.connected; if (conv.id === selected) renderMain(); }
        return;
      }
      case "presence":
        presence.value = frame.status;
        wanted = frame.status;
        sessionStorage.setItem(`${KEY}:status`, wanted);
        presenceReason.textContent = frame.reason ? `Set away: ${frame.reason}` : "";
        return;
      case "wrap_up":
        wrapUntil = Date.parse(frame.until);
        return;
      case "error":
        if (frame.code === "rate_limited" && frame.id && convs[frame.conversation_id]) {
          const p = convs[frame.conversation_id].pending.find((x) => x.id === frame.id);
          if (p) setTimeout(() => send({ type: "message", conversation_id: frame.conversation_id, id: p.id, text: p.text }),
            (frame.retry_after || 1) * 1000);
          return;
        }
        return setNotice(frame.message || frame.code);
      default:
    }
  }

  // ---- connection -------------------------------------------------------------------------------
  function send(frame) {
    if (ws && ready && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (!token || ws) return;
    if (!navigator.onLine) { connection.textContent = "Offline. Reconnecting when the network is back…"; return; }
    const url = new URL("agent/ws", location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href);
    ws = socket;
    ready = false;
    connection.textContent = "Connecting…";
    socket.addEventListener("open", () => {
      const resume = {};
      for (const conv of Object.values(convs)) if (!conv.ended) resume[conv.id] = conv.last || 0;
      socket.send(JSON.stringify({ type: "auth", token, status: wanted, resume }));
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame && typeof frame.type === "string") onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (ws !== socket) return;
      ws = null;
      ready = false;
      offers.clear();
      renderOffers();
      if (event.code === 4401) return signedOut(event.reason === "invalid token" ? "The gateway refused this token." : event.reason);
      if (event.code === 4409) { connection.textContent = "Signed in in another window. Reload to use this one."; return; }
      connection.textContent = navigator.onLine ? "Connection lost. Reconnecting…" : "Offline. Reconnecting when the network is back…";
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

  window.addEventListener("offline", () => {
    // The browser says the network is gone: do not wait for the socket to notice.
    if (ws) { const socket = ws; ws = null; ready = false; socket.close(); }
    clearTimeout(retryTimer);
    offers.clear();
    renderOffers();
    connection.textContent = "Offline. Reconnecting when the network is back…";
  });
  window.addEventListener("online", () => { retries = 0; connect(); });

  function signedOut(message) {
    token = null;
    sessionStorage.removeItem(`${KEY}:token`);
    if (ws) { const socket = ws; ws = null; socket.close(); }
    clearTimeout(retryTimer);
    desk.hidden = true;
    signIn.hidden = false;
    signInError.hidden = !message;
    signInError.textContent = message || "";
    tokenInput.focus();
  }

  // ---- controls ---------------------------------------------------------------------------------
  signIn.addEventListener("submit", (event) => {
    event.preventDefault();
    token = tokenInput.value.trim();
    if (!token) return;
    tokenInput.value = "";
    sessionStorage.setItem(`${KEY}:token`, token);
    connect();
  });
  signOut.addEventListener("click", () => {
    convs = {};
    selected = null;
    sessionStorage.removeItem(`${KEY}:state`);
    signedOut("");
  });
  presence.addEventListener("change", () => {
    wanted = presence.value;
    sessionStorage.setItem(`${KEY}:status`, wanted);
    if (wanted === "available") presenceReason.textContent = "";
    send({ type: "presence", status: wanted });
  });

  function sendReply() {
    const conv = selected && convs[selected];
    const text = reply.value.trim();
    if (!conv || conv.ended || !text) return;
    const p = { id: newId(), text };
    conv.pending.push(p);
    save();
    reply.value = "";
    if (lastTypingSent) { send({ type: "typing", conversation_id: conv.id, active: false }); lastTypingSent = 0; }
    send({ type: "message", conversation_id: conv.id, id: p.id, text });
    renderMain();
  }
  compose.addEventListener("submit", (event) => { event.preventDefault(); sendReply(); });
  reply.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); sendReply(); }
  });
  reply.addEventListener("input", () => {
    if (!selected || !reply.value.trim()) return;
    if (Date.now() - lastTypingSent > 3000 && send({ type: "typing", conversation_id: selected, active: true })) lastTypingSent = Date.now();
  });
  closeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!selected) return;
    const frame = { type: "close", conversation_id: selected };
    if (disposition.value) frame.disposition = disposition.value;
    send(frame);
  });
  transferForm.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!selected || !transferTarget.value.trim()) return;
    const frame = { type: "transfer", conversation_id: selected, [transferKind.value]: transferTarget.value.trim() };
    if (transferNote.value.trim()) frame.note = transferNote.value.trim();
    if (send(frame)) { transferTarget.value = ""; transferNote.value = ""; }
  });
  dismiss.addEventListener("click", () => {
    delete convs[selected];
    selected = null;
    save();
    render();
  });

  for (const conv of Object.values(convs)) { conv.pending = conv.pending || []; conv.typing = false; }
  render();
  // A reload with a token shows the kept conversations at once, while the socket resumes.
  if (token) { signIn.hidden = true; desk.hidden = false; connect(); } else tokenInput.focus();
})();
