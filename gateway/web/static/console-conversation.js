/* One conversation in the agent console: its events as list items (files as download buttons),
   "Read" under the last agent message the customer has shown, the replies not yet sent. */
import { h } from "./dom.js";
import { fileButton } from "./console-files.js";
import { t } from "./console-i18n.js";

const AUTHOR = { customer: t("customer"), bot: t("assistant"), system: t("notice") };

function authorName(conv, event, me) {
  if (event.author === "customer") return (conv.customer && conv.customer.name) || AUTHOR.customer;
  if (event.author === "agent") return event.agentName || (me && me.name) || t("agent");
  return AUTHOR[event.author] || event.author || "";
}

/** The list item of one event (null for those not shown); `token()` is for file downloads. */
export function eventItem(conv, event, me, token) {
  if (event.kind === "closed") return h("li", { class: "event", text: t("closedEvent") });
  if (event.kind === "transferred") return h("li", { class: "event", text: t("youTransferred") });
  if (event.kind === "assigned") return null;
  if (event.kind === "delivery_failed") return h("li", { class: "event error", text: t("notDelivered", { text: event.text }) });
  const item = h("li", { class: `msg ${event.author}`, "data-seq": String(event.seq) },
    h("span", { class: "who", text: authorName(conv, event, me) }),
    h("span", { class: "text", text: event.text || "" }));
  for (const file of event.attachments || []) item.append(fileButton(file, token));
  if (event.suggestions && event.suggestions.length) item.append(suggestionButtons(event.suggestions));
  return item;
}

// The KB's suggestions for a customer message (docs/protocol.md#kb-suggestions): a click puts
// the entry's answer into the reply box, to send as it is or edited.
function suggestionButtons(suggestions) {
  const list = h("div", { class: "suggestions", role: "group", "aria-label": t("suggestedAnswers") });
  for (const s of suggestions) {
    list.append(h("button", { type: "button", class: "suggestion", title: s.answer, text: s.question,
      onclick: () => { const reply = document.getElementById("cg-reply"); reply.value = s.answer; reply.focus(); } }));
  }
  return list;
}

// "Read" goes under the last of the agent's messages the customer has shown.
function readMarker(conv) {
  const mark = conv.readByCustomer || 0;
  const mine = conv.events.filter((e) => e.author === "agent" && e.kind === "message" && e.seq <= mark);
  return mine.length ? mine[mine.length - 1].seq : null;
}

/** Fill `log` with the conversation's events and `pendingLog` with its unsent replies. */
export function renderConversation(log, pendingLog, conv, me, token) {
  log.replaceChildren();
  const readAt = readMarker(conv);
  for (const e of conv.events) {
    const item = eventItem(conv, e, me, token);
    if (!item) continue;
    if (e.seq === readAt) item.append(h("span", { class: "read", text: t("read") }));
    log.append(item);
  }
  pendingLog.replaceChildren(...conv.pending.map((p) => h("li", { class: "msg agent sending" },
    h("span", { class: "who", text: p.uploading ? t("uploading", { name: p.uploading }) : t("sending") }),
    h("span", { class: "text", text: p.text || (p.files || []).map((f) => f.name).join(", ") }))));
}
