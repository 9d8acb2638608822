/* contactgate agent console, served at /console (docs/pages.md, "Agent console").

   It speaks the /agent/ws contract of docs/protocol.md ("Agent desk"). The agent's token is typed
   into the sign-in form, kept in sessionStorage (this tab only) and sent in the `auth` frame,
   never in a URL. The conversations shown, the last seq of each and the replies not yet
   acknowledged are kept in sessionStorage too: a dropped connection (or a reload) is reopened
   with backoff and resumed with `auth.resume`, replies are sent again with their client ids
   (the gateway stores each id once), and events are kept by seq, so nothing is lost or doubled.

   A new offer calls window.contactgateConsole.onOffer(offer) when a page sets it and dispatches
   a `contactgate:offer` CustomEvent on document; the opt-in sound and notification are in
   console-alerts.js. Plain JavaScript modules, no build step, no inline script or style (the
   page's CSP allows neither): console-i18n.js (words), dom.js (shared with the board), console-files.js
   (downloads and uploads), console-transfer.js (the picker), console-socket.js (the connection),
   console-offers.js (offer cards and their shortcuts), console-compose.js (replies and files), console-conversation.js (a conversation's
   events), console-layout.js (the page's elements). */
import { announceOffer, setAlerts } from "./console-alerts.js";
import { composer } from "./console-compose.js";
import { h } from "./dom.js";
import { eventItem, renderConversation } from "./console-conversation.js";
import { chooseLanguage, lang, t } from "./console-i18n.js";
import { buildLayout } from "./console-layout.js";
import { customerCard, offerShortcuts, renderOffers } from "./console-offers.js";
import { deskSocket } from "./console-socket.js";
import { transferPicker } from "./console-transfer.js";

const KEY = "contactgate:console";
const api = (window.contactgateConsole = window.contactgateConsole || { onOffer: null });
document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
document.title = `contactgate: ${t("title")}`;

// ---- state ------------------------------------------------------------------------------------
let token = sessionStorage.getItem(`${KEY}:token`);
let wanted = sessionStorage.getItem(`${KEY}:status`) || "available";
// id -> {id, channel, queue, customer, events, last, unread, pending, ended, note, readSent, readByCustomer}
let convs = {};
try { convs = JSON.parse(sessionStorage.getItem(`${KEY}:state`) || "{}").convs || {}; } catch (e) { convs = {}; }
const offers = new Map(); // id -> {conversation, deadline, events}
let me = null;            // ready.agent
let dispositions = [];
let requireDisposition = false;
let selected = sessionStorage.getItem(`${KEY}:selected`);
let wrapUntil = null;
const typingTimers = {};

function save() {
  sessionStorage.setItem(`${KEY}:state`, JSON.stringify({ convs }));
  if (selected) sessionStorage.setItem(`${KEY}:selected`, selected);
  else sessionStorage.removeItem(`${KEY}:selected`);
}

const socket = deskSocket({
  token: () => token,
  auth: () => {
    const resume = {};
    for (const conv of Object.values(convs)) if (!conv.ended) resume[conv.id] = conv.last || 0;
    return { type: "auth", token, status: wanted, resume };
  },
  onFrame,
  onState: (state) => { connection.textContent = { connecting: t("connecting"), offline: t("offline"), lost: t("lost") }[state] || ""; },
  onClosed,
});
const send = socket.send;

// ---- the page (console-layout.js) -------------------------------------------------------------
const picker = transferPicker(send);
const {
  tokenInput, signInError, signIn, whoami, presence, presenceReason, connection,
  alerts, language, signOut, offerList, convList, notice, card, canned,
  log, logRegion, pendingLog, typing, reply, fileInput, compose,
  disposition, closeForm, ended, dismiss, empty, desk,
} = buildLayout(picker);

// ---- rendering --------------------------------------------------------------------------------
const offersView = () => renderOffers(offerList, offers, (c, e) => eventItem(c, e, me, () => token), send);

function renderList() {
  convList.replaceChildren();
  const ids = Object.keys(convs);
  if (!ids.length) convList.append(h("li", { class: "none", text: t("noConversations") }));
  for (const id of ids) {
    const conv = convs[id];
    const button = h("button", { type: "button", class: "pick", "aria-current": id === selected ? "true" : null,
      onclick: () => select(id) },
      h("span", { class: "name", text: (conv.customer && conv.customer.name) || t("customer") }),
      h("span", { class: "meta", text: conv.ended ? t("ended") : conv.channel || "" }));
    if (conv.unread) button.append(h("span", { class: "unread", "aria-label": t("unread", { n: conv.unread }), text: String(conv.unread) }));
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
    ? [h("dt", { text: t("online") }), h("dd", { text: t("leftChat") })] : [], send));
  renderConversation(log, pendingLog, conv, me, () => token);
  typing.hidden = !conv.typing || !!conv.ended;
  compose.hidden = closeForm.parentElement.hidden = !!conv.ended;
  ended.hidden = dismiss.hidden = !conv.ended;
  ended.textContent = conv.note || t("conversationEnded");
  logRegion.scrollTop = logRegion.scrollHeight;
  markRead(conv);
}

// Tell the customer how far the agent has read: the selected conversation, while the tab shows.
function markRead(conv) {
  if (!conv || conv.ended || document.hidden || conv.id !== selected) return;
  const last = conv.events.reduce((m, e) => (e.kind === "message" && e.author !== "agent" ? Math.max(m, e.seq) : m), 0);
  if (last > (conv.readSent || 0) && send({ type: "read", conversation_id: conv.id, seq: last })) {
    conv.readSent = last;
    save();
  }
}
document.addEventListener("visibilitychange", () => markRead(selected && convs[selected]));

function renderDispositions() {
  disposition.replaceChildren();
  if (!requireDisposition || !dispositions.length) disposition.append(h("option", { value: "", text: t("none") }));
  for (const d of dispositions) disposition.append(h("option", { value: d, text: d.replace(/_/g, " ") }));
}

function render() { offersView(); renderList(); renderMain(); }

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
  for (const el of offerList.querySelectorAll(".countdown")) el.textContent = t("secondsToAccept", { n: secondsLeft(Number(el.dataset.deadline)) });
  if (wrapUntil) {
    const left = Math.ceil((wrapUntil - Date.now()) / 1000);
    if (left <= 0) { wrapUntil = null; presenceReason.textContent = ""; }
    else presenceReason.textContent = t("wrapUp", { n: left });
  }
}, 1000);

function secondsLeft(deadline) { return Math.max(0, Math.ceil((deadline - Date.now()) / 1000)); }

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
  if (frame.suggestions) e.suggestions = frame.suggestions;
  if (frame.type === "delivery_failed") e.text = frame.reason;
  return e;
}

function conversationEvent(frame) {
  const id = frame.conversation_id;
  const offer = offers.get(id);
  if (offer) {
    if (!offer.events.some((e) => e.seq === frame.seq)) offer.events.push(eventOf(frame));
    if (frame.type === "closed") { offers.delete(id); setNotice(t("customerLeftOffer")); }
    offersView();
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
    conv.note = frame.closed_by === (me && me.id) ? t("youClosed")
      : frame.closed_by === "customer" ? t("customerClosed") : t("conversationEnded");
  }
  if (frame.type === "transferred") {
    conv.ended = true;
    conv.note = t("transferredTo", { to: frame.to_agent || frame.to_queue });
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
  offersView();
  const detail = { id: c.id, customer: c.customer, channel: c.channel, queue: c.queue, timeout: c.timeout };
  try { if (typeof api.onOffer === "function") api.onOffer(detail); } catch (e) { /* the page's hook */ }
  document.dispatchEvent(new CustomEvent("contactgate:offer", { detail }));
  announceOffer(detail);
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
    offersView();
    select(id);
    return;
  }
  const conv = convs[id];
  if (conv && addEvent(conv, { seq: frame.seq, kind: "assigned" })) save();
}

function resend(id, p) {
  const frame = { type: "message", conversation_id: id, id: p.id, text: p.text || "" };
  if (p.files) frame.attachments = p.files.map((f) => f.id);
  return send(frame);
}

function onReady(frame) {
  me = frame.agent;
  dispositions = frame.dispositions || [];
  box.setCanned(frame.canned || []);
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
    if (!listed.has(conv.id) && !conv.ended) { conv.ended = true; conv.note = t("noLongerYours"); }
  }
  save();
  render();
  picker.refresh();
  for (const id of listed) for (const p of convs[id].pending) if (!p.uploading) resend(id, p);
}

function onAck(frame) {
  const conv = convs[frame.conversation_id];
  if (!conv) return;
  const pending = conv.pending.find((p) => p.id === frame.id);
  if (pending) {
    addEvent(conv, { seq: frame.seq, kind: "message", author: "agent", text: pending.text, id: frame.id,
      attachments: pending.files });
  }
  conv.pending = conv.pending.filter((p) => p.id !== frame.id);
  save();
  if (frame.conversation_id === selected) renderMain();
}

function onTyping(frame) {
  const conv = convs[frame.conversation_id];
  if (!conv) return;
  conv.typing = frame.active !== false;
  clearTimeout(typingTimers[conv.id]);
  if (conv.typing) typingTimers[conv.id] = setTimeout(() => { conv.typing = false; if (conv.id === selected) renderMain(); }, 6000);
  if (conv.id === selected) renderMain();
}

function onError(frame) {
  if (frame.code === "rate_limited" && frame.id && convs[frame.conversation_id]) {
    const p = convs[frame.conversation_id].pending.find((x) => x.id === frame.id);
    if (p) setTimeout(() => resend(frame.conversation_id, p), (frame.retry_after || 1) * 1000);
    return;
  }
  setNotice(frame.message || frame.code);
}

function onFrame(frame) {
  const conv = convs[frame.conversation_id];
  switch (frame.type) {
    case "ready": return onReady(frame);
    case "offer": return onOffer(frame);
    case "offer_withdrawn":
      offers.delete(frame.conversation_id);
      offersView();
      return setNotice(t("offerWithdrawn", { reason: String(frame.reason).replace(/_/g, " ") }));
    case "assigned": return onAssigned(frame);
    case "message": case "notice": case "closed": case "transferred": case "delivery_failed":
      return conversationEvent(frame);
    case "ack": return onAck(frame);
    case "typing": return onTyping(frame);
    case "read":
      if (conv && frame.seq > (conv.readByCustomer || 0)) {
        conv.readByCustomer = frame.seq;
        save();
        if (conv.id === selected) renderMain();
      }
      return;
    case "directory": return picker.update(frame);
    case "customer_merged": case "customer_unmerged": case "customers_merged": case "customer":
      // The customer 360 changed (a link, a merge, an unmerge) or was asked for.
      if (conv && frame.customer) { conv.customer = frame.customer; save(); if (conv.id === selected) renderMain(); }
      if (frame.type === "customers_merged") setNotice(t("customersLinked"));
      return;
    case "customer_presence":
      if (conv) { conv.customerConnected = frame.connected; if (conv.id === selected) renderMain(); }
      return;
    case "presence":
      presence.value = frame.status;
      wanted = frame.status;
      sessionStorage.setItem(`${KEY}:status`, wanted);
      presenceReason.textContent = frame.reason ? t("setAway", { reason: frame.reason }) : "";
      return;
    case "wrap_up":
      wrapUntil = Date.parse(frame.until);
      return;
    case "error": return onError(frame);
    default:
  }
}

// A closed socket: false stops the reconnecting (signed out, or another window took over).
function onClosed(code, reason) {
  offers.clear();
  offersView();
  if (code === 4401) { signedOut(reason === "invalid token" ? t("refused") : reason); return false; }
  if (code === 4409) { connection.textContent = t("replaced"); return false; }
  return true;
}

function signedOut(message) {
  token = null;
  sessionStorage.removeItem(`${KEY}:token`);
  socket.drop();
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
  socket.connect();
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
alerts.addEventListener("change", () => setAlerts(alerts.checked));
language.addEventListener("change", () => chooseLanguage(language.value));
offerShortcuts(offers, send);

const box = composer({ reply, fileInput, canned, form: compose, current: () => selected && convs[selected], send, resend, save,
  changed: (conv) => { if (conv.id === selected) renderMain(); }, token: () => token, failed: setNotice });
closeForm.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!selected) return;
  const frame = { type: "close", conversation_id: selected };
  if (disposition.value) frame.disposition = disposition.value;
  send(frame);
});
picker.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const frame = selected && picker.frame(selected);
  if (frame && send(frame)) picker.clear();
});
dismiss.addEventListener("click", () => {
  delete convs[selected];
  selected = null;
  save();
  render();
});

for (const conv of Object.values(convs)) {
  conv.pending = (conv.pending || []).filter((p) => !p.uploading); // an upload cut by a reload is gone
  conv.typing = false;
}
render();
// A reload with a token shows the kept conversations at once, while the socket resumes.
if (token) { signIn.hidden = true; desk.hidden = false; socket.connect(); } else tokenInput.focus();
