/* The transfer picker: the queues and the other agents (with presence) from the gateway's
   `directory` frame (docs/protocol.md, "Transfer"), asked for again whenever the picker opens. */
import { h } from "./dom.js";
import { t } from "./console-i18n.js";

export function transferPicker(send) {
  const target = h("select", { id: "cg-transfer-target", "aria-label": t("transferTo"), required: true });
  const note = h("input", { id: "cg-transfer-note", "aria-label": t("transferNote"), placeholder: t("notePlaceholder") });
  const form = h("form", { class: "transfer" }, target, note, h("button", { type: "submit", text: t("transfer") }));
  let directory = { queues: [], agents: [] };

  function render() {
    const keep = target.value;
    target.replaceChildren(h("option", { value: "", text: t("pickTarget") }));
    const queues = h("optgroup", { label: t("queues") });
    for (const q of directory.queues) {
      queues.append(h("option", { value: `to_queue:${q.name}`, text: q.description ? `${q.name} – ${q.description}` : q.name }));
    }
    const agents = h("optgroup", { label: t("agents") });
    for (const a of directory.agents) {
      agents.append(h("option", { value: `to_agent:${a.id}`, disabled: a.status !== "available",
        text: `${a.name} (${t("agentStatus")[a.status] || a.status})` }));
    }
    target.append(queues, agents);
    if ([...target.options].some((o) => o.value === keep && !o.disabled)) target.value = keep;
  }

  const refresh = () => send({ type: "directory" });
  target.addEventListener("focus", refresh);
  target.addEventListener("pointerdown", refresh);
  render();

  return {
    form, refresh,
    update(frame) { directory = { queues: frame.queues || [], agents: frame.agents || [] }; render(); },
    /** The transfer frame for a conversation, or null when nothing is picked. */
    frame(conversationId) {
      const [kind, id] = target.value.split(/:(.*)/s);
      if (!id) return null;
      const frame = { type: "transfer", conversation_id: conversationId, [kind]: id };
      if (note.value.trim()) frame.note = note.value.trim();
      return frame;
    },
    clear() { target.value = ""; note.value = ""; },
  };
}
