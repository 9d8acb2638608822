/* Files in the agent console: downloads (a button that fetches with the token and hands the
   browser a blob: link, so the token is never in a URL) and uploads (POST /api/attachments,
   docs/api.md, then the id goes into the next message frame). */
import { h, size } from "./dom.js";
import { t } from "./console-i18n.js";

export function fileButton(file, token) {
  const button = h("button", { type: "button", class: "file", text: t("download", { name: file.name, size: size(file.size || 0) }) });
  button.addEventListener("click", async () => {
    try {
      const answer = await fetch(new URL(`api/attachments/${encodeURIComponent(file.id)}`, location.href),
        { headers: { Authorization: `Bearer ${token()}` }, credentials: "omit" });
      if (!answer.ok) throw new Error(String(answer.status));
      const a = h("a", { href: URL.createObjectURL(await answer.blob()), download: file.name, text: file.name });
      button.replaceWith(a);
      a.click();
      a.focus();
    } catch (e) {
      button.textContent = t("couldNotDownload", { name: file.name });
    }
  });
  return button;
}

/** Upload one file for a conversation; resolves to its summary ({id, name, content_type, size,
    sha256}) or rejects with the gateway's reason. */
export async function upload(file, conversationId, token) {
  const url = new URL("api/attachments", location.href);
  url.searchParams.set("conversation_id", conversationId);
  url.searchParams.set("name", file.name);
  const answer = await fetch(url, { method: "POST", body: file, credentials: "omit",
    headers: { Authorization: `Bearer ${token()}`, "Content-Type": file.type || "application/octet-stream" } });
  let body = null;
  try { body = await answer.json(); } catch (e) { body = null; }
  if (!answer.ok) throw new Error((body && (body.message || body.error)) || `HTTP ${answer.status}`);
  return body;
}
