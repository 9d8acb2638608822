/* Offer cards in the agent console: the customer card, the transcript (folded), a countdown to
   the offer's timeout, Accept and Decline, and their keyboard shortcuts (Alt+A, Alt+D: the
   first offer in the list). */
import { customer360 } from "./console-customer.js";
import { h } from "./dom.js";
import { t } from "./console-i18n.js";

/** The customer card of an offer or a conversation, with the customer 360; `extra` are more
    <dt>/<dd> pairs; `send` sends an agent frame (the 360's "Link"). */
export function customerCard(c, extra, send) {
  const customer = c.customer || {};
  return h("dl", { class: "customer-card" },
    h("dt", { text: t("customer") }), h("dd", { class: "name", text: customer.name || t("unknown") }),
    h("dt", { text: t("tier") }), h("dd", { class: "tier", text: customer.tier || "–" }),
    h("dt", { text: t("channel") }), h("dd", { class: "channel", text: c.channel || "–" }),
    h("dt", { text: t("queue") }), h("dd", { class: "queue", text: c.queue || "–" }), ...(extra || []),
    ...customer360(c.id, customer, send));
}

function secondsLeft(deadline) { return Math.max(0, Math.ceil((deadline - Date.now()) / 1000)); }

export function renderOffers(list, offers, eventItem, send) {
  list.replaceChildren();
  if (!offers.size) list.append(h("li", { class: "none", text: t("noOffers") }));
  let first = true;
  for (const [id, offer] of offers) {
    const c = offer.conversation;
    const transcript = h("ol", { class: "transcript" });
    for (const e of offer.events) { const item = eventItem(c, e); if (item) transcript.append(item); }
    const extra = c.transferred_from ? [h("dt", { text: t("from") }), h("dd", { text: c.transferred_from.name }),
      h("dt", { text: t("note") }), h("dd", { text: c.note || "–" })] : [];
    list.append(h("li", { class: "offer", "data-id": id },
      customerCard(c, extra, send),
      h("details", {}, h("summary", { text: t("transcript", { n: offer.events.length }) }), transcript),
      h("p", { class: "countdown", "data-deadline": String(offer.deadline), text: t("secondsToAccept", { n: secondsLeft(offer.deadline) }) }),
      h("button", { type: "button", class: "primary", text: t("accept"), "aria-keyshortcuts": first ? "Alt+A" : null,
        onclick: () => send({ type: "accept", conversation_id: id }) }),
      h("button", { type: "button", text: t("decline"), "aria-keyshortcuts": first ? "Alt+D" : null,
        onclick: () => send({ type: "decline", conversation_id: id }) })));
    first = false;
  }
}

/** Alt+A accepts and Alt+D declines the first offer, wherever the focus is. */
export function offerShortcuts(offers, send) {
  document.addEventListener("keydown", (event) => {
    if (!event.altKey || event.ctrlKey || event.metaKey || !offers.size) return;
    const type = { KeyA: "accept", KeyD: "decline" }[event.code];
    if (!type) return;
    event.preventDefault();
    send({ type, conversation_id: offers.keys().next().value });
  });
}
