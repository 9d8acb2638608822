/* The agent console's reply box: Enter sends, Shift+Enter is a new line, typing is sent at most
   every 3 s; "Attach a file" uploads first (POST /api/attachments), then sends the file's id in a
   message of its own. Every reply is a pending entry with a client id until its ack. The canned
   replies (desk.canned, from `ready`) are inserted into the box, to edit or send. */
import { h, newId } from "./dom.js";
import { upload } from "./console-files.js";
import { t } from "./console-i18n.js";

/** `current()`: the selected conversation; `resend(id, pending)` sends a pending reply;
    `changed(conv)` re-renders it; `failed(text)` shows a refusal. */
export function composer({ reply, fileInput, canned, form, current, send, resend, save, changed, token, failed }) {
  let lastTypingSent = 0;

  function sendReply() {
    const conv = current();
    const text = reply.value.trim();
    if (!conv || conv.ended || !text) return;
    const p = { id: newId(), text };
    conv.pending.push(p);
    save();
    reply.value = "";
    if (lastTypingSent) { send({ type: "typing", conversation_id: conv.id, active: false }); lastTypingSent = 0; }
    resend(conv.id, p);
    changed(conv);
  }

  async function sendFile(conv, file) {
    const p = { id: newId(), text: "", uploading: file.name };
    conv.pending.push(p);
    changed(conv);
    try {
      const summary = await upload(file, conv.id, token);
      p.files = [summary];
      delete p.uploading;
      save();
      resend(conv.id, p);
    } catch (e) {
      conv.pending = conv.pending.filter((x) => x !== p);
      failed(t("uploadFailed", { name: file.name, reason: e.message }));
    }
    changed(conv);
  }

  fileInput.addEventListener("change", () => {
    const conv = current();
    const files = [...fileInput.files];
    fileInput.value = "";
    if (conv && !conv.ended) for (const file of files) sendFile(conv, file);
  });
  form.addEventListener("submit", (event) => { event.preventDefault(); sendReply(); });
  reply.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); sendReply(); }
  });
  canned.addEventListener("change", () => {
    const text = canned.value;
    canned.value = "";
    if (!text) return;
    const start = reply.selectionStart ?? reply.value.length;
    const end = reply.selectionEnd ?? start;
    reply.value = reply.value.slice(0, start) + text + reply.value.slice(end);
    reply.focus();
    reply.setSelectionRange(start + text.length, start + text.length);
  });

  reply.addEventListener("input", () => {
    const conv = current();
    if (!conv || !reply.value.trim()) return;
    if (Date.now() - lastTypingSent > 3000 && send({ type: "typing", conversation_id: conv.id, active: true })) lastTypingSent = Date.now();
  });

  return {
    /** The replies of `ready.canned` ([{title, text}]); none hides the picker. */
    setCanned(replies) {
      canned.replaceChildren(h("option", { value: "", text: t("canned") }),
        ...replies.map((r) => h("option", { value: r.text, text: r.title })));
      canned.hidden = !replies.length;
    },
  };
}
