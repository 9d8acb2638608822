/* The customer 360 on an offer or a conversation (docs/customers.md): the customer's identities
   (verified, or claimed: typed in, unproven), earlier conversations on every channel, and the
   link suggestions, each with a "Link" button (merge_customers). Agents only: the customer never
   sees any of it. */
import { h } from "./dom.js";
import { t } from "./console-i18n.js";

/** More <dt>/<dd> pairs for the customer card; `send` sends an agent frame. */
export function customer360(conversationId, customer, send) {
  const out = [];
  const ids = (customer.identities || []).filter((i) => i.kind !== "webchat");  // a token hash says nothing
  if (ids.length) out.push(h("dt", { text: t("identities") }), h("dd", { class: "identities" },
    ...ids.map((i) => h("span", { class: i.verified ? "verified" : "claimed",
      text: `${i.kind} ${i.address}${i.verified ? "" : ` (${t("claimed")})`} ` }))));
  const past = customer.conversations || [];
  if (past.length) out.push(h("dt", { text: t("history") }), h("dd", { class: "history" },
    h("ol", {}, ...past.map((p) => h("li", { text: `${p.channel} · ${p.state}${p.disposition ? " · " + p.disposition : ""}` +
      ` · ${(p.created_at || "").slice(0, 10)}${p.first_line ? " — " + p.first_line : ""}` })))));
  for (const s of customer.link_suggestions || []) out.push(h("dt", { text: t("linkSuggestion") }), h("dd", { class: "link-suggestion" },
    h("span", { text: t("saysIs", { address: s.address, who: s.name || s.customer_id, n: s.conversations }) + " " }),
    h("button", { type: "button", text: t("link"), onclick: () => send({ type: "merge_customers",
      conversation_id: conversationId, customer_id: s.customer_id }) })));
  return out;
}
