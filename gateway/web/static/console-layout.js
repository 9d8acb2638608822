/* The agent console's page: every element, labelled in the console's language. console.js
   fills them in and wires them up. */
import { alertsOn } from "./console-alerts.js";
import { h } from "./dom.js";
import { LANGUAGES, lang, t } from "./console-i18n.js";

/** Builds the page into #console; `picker` is the transfer picker (console-transfer.js). */
export function buildLayout(picker) {
  const app = document.getElementById("console");
  const tokenInput = h("input", { id: "cg-token", type: "password", autocomplete: "current-password", required: true });
  const signInError = h("p", { class: "error", role: "alert", hidden: true });
  const signIn = h("form", { class: "signin", "aria-labelledby": "cg-signin-title" },
    h("h1", { id: "cg-signin-title", text: t("title") }),
    h("label", { for: "cg-token", text: t("token") }), tokenInput, signInError,
    h("button", { type: "submit", class: "primary", text: t("signIn") }));

  const whoami = h("span", { class: "whoami" });
  const presence = h("select", { id: "cg-presence" },
    h("option", { value: "available", text: t("available") }), h("option", { value: "away", text: t("away") }));
  const presenceReason = h("span", { class: "reason", role: "status" });
  const connection = h("span", { class: "connection", role: "status" });
  const alerts = h("input", { id: "cg-alerts", type: "checkbox", checked: alertsOn() });
  const language = h("select", { id: "cg-lang" },
    ...Object.entries(LANGUAGES).map(([value, text]) => h("option", { value, text, selected: value === lang })));
  const signOut = h("button", { type: "button", text: t("signOut") });
  const header = h("header", { class: "top" }, h("h1", { text: t("title") }), whoami,
    h("label", { for: "cg-presence", text: t("status") }), presence, presenceReason, connection,
    h("span", { class: "alerts" }, alerts, h("label", { for: "cg-alerts", text: t("alerts") })),
    h("label", { for: "cg-lang", text: t("language") }), language, signOut);

  const offerList = h("ul", { class: "offers", "aria-label": t("offers") });
  const convList = h("ul", { class: "conversations", "aria-label": t("conversations") });
  const notice = h("p", { class: "notice", role: "status" });
  const sidebar = h("nav", { class: "side", "aria-label": t("work") },
    h("h2", { text: t("offers") }), h("p", { class: "hint", text: t("shortcuts") }), offerList,
    h("h2", { text: t("conversations") }), convList, notice);

  const card = h("div", { class: "card" });
  const log = h("ol", { class: "log" });
  const logRegion = h("div", { class: "log-region", role: "log", "aria-label": t("messages"), "aria-live": "polite" }, log);
  const pendingLog = h("ol", { class: "pending", "aria-label": t("notYetSent") });
  const typing = h("p", { class: "typing", hidden: true, text: t("customerTyping") });
  const reply = h("textarea", { id: "cg-reply", rows: "3", placeholder: t("replyPlaceholder") });
  const fileInput = h("input", { id: "cg-file", type: "file", hidden: true, multiple: true });
  const attach = h("button", { type: "button", class: "attach", text: t("attach"), onclick: () => fileInput.click() });
  const canned = h("select", { id: "cg-canned", "aria-label": t("cannedLabel"), hidden: true });
  const compose = h("form", { class: "compose" }, h("label", { for: "cg-reply", class: "visually-hidden", text: t("reply") }),
    reply, h("div", { class: "compose-buttons" }, h("button", { type: "submit", class: "primary", text: t("send") }), attach,
      fileInput, canned));
  const disposition = h("select", { id: "cg-disposition" });
  const closeForm = h("form", { class: "close" }, h("label", { for: "cg-disposition", text: t("disposition") }), disposition,
    h("button", { type: "submit", text: t("closeConversation") }));
  const ended = h("p", { class: "ended", hidden: true });
  const dismiss = h("button", { type: "button", text: t("removeFromList"), hidden: true });
  const empty = h("p", { class: "empty", text: t("noSelection") });
  const main = h("main", { class: "main", "aria-label": t("conversation") }, empty, card, logRegion, pendingLog, typing,
    compose, h("div", { class: "actions" }, closeForm, picker.form), ended, dismiss);
  const desk = h("div", { class: "desk", hidden: true }, header, h("div", { class: "panes" }, sidebar, main));
  app.append(signIn, desk);
  return { tokenInput, signInError, signIn, whoami, presence, presenceReason, connection, alerts, language, signOut, header, offerList, convList, notice, sidebar, card, log, logRegion, pendingLog, typing, reply, fileInput, attach, canned, compose, disposition, closeForm, ended, dismiss, empty, main, desk };
}
