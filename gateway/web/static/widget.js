/* contactgate chat widget: one tag embeds it on any site.

     <script src="https://gateway.example/widget.js" data-channel="webchat" async></script>

   Attributes: data-channel (the web chat channel's name, default "webchat"), data-lang ("en" or
   "zh"; default: the browser's language), data-prechat ("name,email", "name", "email" or "" for
   none; default: the channel's `prechat` key). docs/pages.md has the rest.

   It speaks the /webchat/ws contract of docs/protocol.md: the token is kept in localStorage, a
   dropped connection is reopened with backoff and resumed from the last seq seen, and messages
   typed meanwhile wait in localStorage with their client ids and are sent again on reconnect
   (the gateway stores each id once). Everything lives in a shadow root and in this closure: no
   global names, no styles leak in or out, no requests to anyone but the gateway. */
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script || !script.src) return;
  const base = new URL("./", script.src);
  const channel = script.dataset.channel || "webchat";
  // A signed identity from the site's login (docs/customers.md): data-user-id, data-user-email
  // and data-user-hash (HMAC-SHA256 the site computed on its server), passed in the first hello.
  function signedIdentity() {
    const d = script.dataset;
    if (!d.userHash) return {};
    const signed = { user_hash: d.userHash };
    if (d.userId) signed.user_id = d.userId;
    if (d.userEmail) signed.email = d.userEmail;
    return signed;
  }
  const storageKey = `contactgate:${base.origin}:${channel}`;

  const TEXTS = {
    en: {
      open: "Chat with us", title: "Customer service", close: "Minimise chat", end: "End chat",
      endConfirm: "End this conversation?", send: "Send", label: "Your message",
      placeholder: "Type a message…", you: "You", bot: "Assistant", system: "Notice", agent: "Agent",
      connecting: "Connecting…", offline: "You are offline. Messages will be sent when the connection is back.",
      reconnecting: "Connection lost. Reconnecting…", sending: "sending",
      queued: (p, w) => `You are number ${p} in line. Estimated wait: ${w}.`,
      waitNone: "less than a minute", waitMinutes: (m) => (m === 1 ? "about 1 minute" : `about ${m} minutes`),
      assigned: (n) => `${n} joined the conversation.`, withAgent: (n) => `You are chatting with ${n}`,
      typing: (n) => `${n} is typing…`, ended: "The conversation has ended.", again: "Start a new chat",
      unread: (n) => `${n} unread`, download: (f, s) => `Download ${f} (${s})`, failed: (f) => `Could not download ${f}`,
      prechat: "Before we start, tell us who you are.", name: "Name", email: "Email", start: "Start chat",
      read: "Read", choices: "Suggestions", attach: "Attach a file", uploadFailed: (f, why) => `Could not send ${f}: ${why}`,
      tooLarge: (s) => `files up to ${s} are accepted`, rating: "Your rating", score: (n) => `${n} of 5`,
      comment: "Comment (optional)", sendRating: "Submit rating",
      rated: (n) => `You rated this conversation ${n} of 5.`,
      verifyAsk: "Verify your email", verifyPrompt: "We sent a 6-digit code to your email. Enter it here.",
      verifyCode: "Verification code", verifySubmit: "Verify",
      verified: "Your email is verified.", verifyWrong: (n) => `That code is not right. Tries left: ${n}.`,
      verifyExpired: "That code has expired. Ask for a new one.", verifyNone: "No code is waiting. Ask for a new one.",
      verifyLimit: "No more codes can be sent in this chat.", verifyDigits: "The code is 6 digits.",
    },
    zh: {
      open: "在线咨询", title: "客户服务", close: "收起聊天窗口", end: "结束对话",
      endConfirm: "确定结束本次对话吗?", send: "发送", label: "您的消息",
      placeholder: "请输入消息…", you: "我", bot: "智能助手", system: "提示", agent: "客服",
      connecting: "正在连接…", offline: "网络已断开。恢复连接后将自动发送消息。",
      reconnecting: "连接已断开,正在重新连接…", sending: "发送中",
      queued: (p, w) => `您当前排在第 ${p} 位。预计等待:${w}。`,
      waitNone: "不到 1 分钟", waitMinutes: (m) => `约 ${m} 分钟`,
      assigned: (n) => `${n} 已加入对话。`, withAgent: (n) => `正在与 ${n} 对话`,
      typing: (n) => `${n} 正在输入…`, ended: "对话已结束。", again: "开始新的对话",
      unread: (n) => `${n} 条未读`, download: (f, s) => `下载 ${f}(${s})`, failed: (f) => `无法下载 ${f}`,
      prechat: "开始之前,请告诉我们您的信息。", name: "姓名", email: "邮箱", start: "开始对话",
      read: "已读", choices: "建议", attach: "上传文件", uploadFailed: (f, why) => `无法发送 ${f}:${why}`,
      tooLarge: (s) => `仅接受不超过 ${s} 的文件`, rating: "您的评分", score: (n) => `${n} 分(满分 5 分)`,
      comment: "留言(可选)", sendRating: "提交评分",
      rated: (n) => `您给本次对话打了 ${n} 分(满分 5 分)。`,
      verifyAsk: "验证邮箱", verifyPrompt: "我们已向您的邮箱发送 6 位验证码,请在此输入。",
      verifyCode: "验证码", verifySubmit: "验证",
      verified: "您的邮箱已验证。", verifyWrong: (n) => `验证码不正确,还可以再试 ${n} 次。`,
      verifyExpired: "验证码已过期,请重新获取。", verifyNone: "没有待验证的验证码,请重新获取。",
      verifyLimit: "本次对话无法再发送验证码。", verifyDigits: "验证码为 6 位数字。",
    },
  };
  const lang = (script.dataset.lang || navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  const T = TEXTS[lang];

  // ---- state kept across reloads ------------------------------------------------------------
  // token, conversation_id, closed_seq (the seq of `closed` once seen), read_seq (the last seq
  // shown with the panel open: what is unread after a reload), outbox: [{id, text}],
  // email: "claimed" once a hello carried the pre-chat email, "verified" once a code proved it
  function load() {
    try { return JSON.parse(localStorage.getItem(storageKey)) || {}; } catch (e) { return {}; }
  }
  const saved = load();
  const state = { token: saved.token || null, conversationId: saved.conversation_id || null,
                  closedSeq: saved.closed_seq || 0, readSeq: saved.read_seq || 0, outbox: Array.isArray(saved.outbox) ? saved.outbox : [],
                  email: saved.email || null };
  function save() {
    try {
      localStorage.setItem(storageKey, JSON.stringify({ token: state.token, conversation_id: state.conversationId,
        closed_seq: state.closedSeq, read_seq: state.readSeq, outbox: state.outbox, email: state.email }));
    } catch (e) { /* private mode: the chat still works for this page */ }
  }

  // ---- DOM ----------------------------------------------------------------------------------
  const host = document.createElement("contactgate-chat");
  host.hidden = true; // until its stylesheet is in
  const root = host.attachShadow({ mode: "open" });
  const h = (tag, props = {}, ...children) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v);
    }
    el.append(...children);
    return el;
  };
  const link = h("link", { rel: "stylesheet", href: new URL("__CONTACTGATE_WIDGET_CSS__", base).href });
  link.addEventListener("load", () => { host.hidden = false; });
  const panelId = "contactgate-panel";
  const badge = h("span", { class: "badge", hidden: "" });
  const launcher = h("button", { type: "button", class: "launcher", "aria-expanded": "false", "aria-controls": panelId },
    h("span", { text: T.open }), badge);
  const agentLine = h("span", { class: "agent" });
  const titleId = "contactgate-title";
  const endButton = h("button", { type: "button", class: "end", text: T.end, hidden: "" });
  const closeButton = h("button", { type: "button", class: "minimise", "aria-label": T.close, text: "✕" });
  const status = h("p", { class: "status", role: "status", "aria-live": "polite", hidden: "" });
  const log = h("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": T.title, tabindex: "0" });
  const pending = h("div", { class: "log pending-log", role: "group", "aria-label": T.sending });
  const typing = h("p", { class: "typing", "aria-live": "polite", hidden: "" });
  const input = h("textarea", { id: "contactgate-input", rows: "1", placeholder: T.placeholder });
  const sendButton = h("button", { type: "submit", class: "primary", text: T.send });
  const fileInput = h("input", { type: "file", hidden: "", "aria-hidden": "true", tabindex: "-1" });
  const attachButton = h("button", { type: "button", class: "attach", "aria-label": T.attach, title: T.attach, text: "📎", hidden: "" });
  const compose = h("form", { class: "compose" },
    h("label", { for: "contactgate-input", class: "visually-hidden", text: T.label }), input, attachButton, fileInput, sendButton);
  const againButton = h("button", { type: "button", class: "primary", text: T.again });
  const ended = h("div", { class: "ended", hidden: "" }, h("p", { text: T.ended }), againButton);
  const prechatForm = h("form", { class: "prechat", hidden: "" });
  const verifyBox = h("div", { class: "verify", hidden: "" });
  const panel = h("section", { id: panelId, class: "panel", role: "dialog", "aria-labelledby": titleId, hidden: "" },
    h("header", {}, h("h2", { id: titleId }, h("span", { text: T.title }), agentLine), endButton, closeButton),
    status, prechatForm, log, pending, typing, verifyBox, compose, ended);
  root.append(link, panel, launcher);

  const fields = (script.dataset.prechat !== undefined ? script.dataset.prechat.split(",") : null);
  let prechatFields = fields ? fields.map((f) => f.trim()).filter((f) => f === "name" || f === "email") : null;

  // ---- connection -----------------------------------------------------------------------------
  let settings = null;      // GET /widget/<channel>.json
  let ws = null;
  let welcomed = false;
  let lastSeq = 0;          // the last seq shown on this page
  let shownConversation = null;
  let retries = 0;
  let retryTimer = null;
  let agentName = null;
  let typingTimer = null;
  let lastTypingSent = 0;
  let unread = 0;
  let isClosed = false;
  let profile = null;       // {name, email} from the pre-chat form, for the first hello
  let queueText = "";       // the latest queued/position line, shown again after a reconnect
  let readSent = 0;         // the last seq told to the gateway as read (protocol.md#read-state)
  let agentRead = 0;        // how far the agent has read
  let readTimer = null;

  async function loadSettings() {
    if (settings) return settings;
    const answer = await fetch(new URL(`widget/${encodeURIComponent(channel)}.json`, base), { credentials: "omit" });
    if (!answer.ok) throw new Error(`channel ${channel}: ${answer.status}`);
    settings = await answer.json();
    if (prechatFields === null) prechatFields = settings.prechat || [];
    attachButton.hidden = !settings.uploads;
    return settings;
  }

  function setStatus(text, kind) {
    status.textContent = text || "";
    status.hidden = !text;
    status.classList.toggle("offline", kind === "offline");
  }

  async function connect() {
    clearTimeout(retryTimer);
    if (ws || !navigator.onLine) { if (!navigator.onLine) setStatus(T.offline, "offline"); return; }
    try {
      await loadSettings();
    } catch (e) {
      scheduleReconnect();
      return;
    }
    const url = new URL(settings.path, base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url.href);
    ws = socket;
    welcomed = false;
    if (!status.textContent) setStatus(T.connecting);
    socket.addEventListener("open", () => {
      // Within this page we resume from what is shown; on a fresh page from the start of the
      // open conversation (so its history shows again), or after its `closed` for a new one.
      const seen = shownConversation ? lastSeq : state.closedSeq;
      const hello = { type: "hello", token: state.token, last_seq: seen };
      if (!state.token && profile) {
        Object.assign(hello, profile);
        if (profile.email && state.email !== "verified") { state.email = "claimed"; save(); }
      }
      if (!state.token) Object.assign(hello, signedIdentity());
      socket.send(JSON.stringify(hello));
    });
    socket.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (frame && typeof frame.type === "string") onFrame(frame);
    });
    socket.addEventListener("close", (event) => {
      if (ws !== socket) return;
      ws = null;
      welcomed = false;
      if (event.code === 4429) retries = Math.max(retries, 5);
      setStatus(navigator.onLine ? T.reconnecting : T.offline, "offline");
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
    // The browser says the network is gone: do not wait for the socket to notice.
    if (ws) { const socket = ws; ws = null; welcomed = false; socket.close(); }
    clearTimeout(retryTimer);
    setStatus(T.offline, "offline");
  }
  window.addEventListener("offline", drop);
  window.addEventListener("online", () => { retries = 0; if (state.token || !panel.hidden) connect(); });

  function sendFrame(frame) {
    if (ws && welcomed && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  // ---- frames from the gateway -----------------------------------------------------------------
  function onFrame(frame) {
    if (typeof frame.seq === "number") {
      if (frame.type !== "ack" && frame.type !== "read" && frame.seq <= lastSeq) return; // shown already
    }
    switch (frame.type) {
      case "welcome": return onWelcome(frame);
      case "message": return onMessage(frame);
      case "ack": return onAck(frame);
      case "queued": case "position": return onQueued(frame);
      case "assigned": return onAssigned(frame);
      case "typing": return onTyping(frame);
      case "closed": return onClosed(frame);
      case "read": return onRead(frame);
      case "satisfaction": return onRated(frame);
      case "verification_sent": return showVerify("code");
      case "verify_failed": return onVerifyFailed(frame);
      case "verified": return onVerified();
      case "error": return onError(frame);
      default: return undefined; // a frame type of a later version
    }
  }

  function seen(seq) {
    if (typeof seq !== "number" || seq <= lastSeq) return;
    lastSeq = seq;
    // After the end, what follows it (the rating question, its answer) belongs to it too: a new
    // chat says hello past all of it.
    if (isClosed && seq > state.closedSeq) { state.closedSeq = seq; save(); }
  }

  function onWelcome(frame) {
    welcomed = true;
    retries = 0;
    setStatus(agentName ? "" : queueText);
    if (frame.conversation_id !== shownConversation) {
      // Another conversation than the one on screen (a new one, or a fresh page): start over.
      if (shownConversation !== null || frame.conversation_id !== state.conversationId) clearLog();
      shownConversation = frame.conversation_id;
      lastSeq = 0;
      readSent = 0;
      agentRead = 0;
    }
    if (frame.conversation_id !== state.conversationId) { state.closedSeq = 0; state.readSeq = 0; }
    state.token = frame.token;
    state.conversationId = frame.conversation_id;
    save();
    setClosed(false);
    if (state.email === "claimed" && settings && settings.verify_email && verifyBox.hidden) showVerify("ask");
    for (const item of state.outbox) sendFrame(messageFrame(item));
  }

  function clearLog() {
    log.replaceChildren();
    agentName = null;
    queueText = "";
    agentLine.textContent = "";
    hideTyping();
  }

  function onMessage(frame) {
    seen(frame.seq);
    if (frame.author === "customer") retireChoices();
    if (frame.author === "customer" && confirm(frame.id)) return;
    if (frame.author === "customer" && frame.id && pending.querySelector(`[data-id="${CSS.escape(frame.id)}"]`)) {
      pending.querySelector(`[data-id="${CSS.escape(frame.id)}"]`).remove(); // an upload of ours, now stored
    }
    if (frame.author === "agent") hideTyping();
    const item = addMessage(frame.author, frame.text, frame.attachments, frame.seq, frame.author === "customer" ? frame.id : null);
    if (frame.satisfaction) item.append(ratingForm());
    else if (Array.isArray(frame.choices) && frame.choices.length && frame.author !== "customer") item.append(choiceButtons(frame.choices));
    log.scrollTop = log.scrollHeight;
    showRead();
    if (!panel.hidden) markRead();
    else if (frame.author !== "customer" && frame.seq > state.readSeq) { unread += 1; showUnread(); }
    tellRead();
  }

  function onAck(frame) {
    seen(frame.seq);
    confirm(frame.id, frame.seq);
  }

  // Our own message is stored: its bubble moves from "sending" into the conversation.
  function confirm(id, seq) {
    const index = state.outbox.findIndex((item) => item.id === id);
    if (index < 0) return false;
    const [item] = state.outbox.splice(index, 1);
    save();
    const bubble = pending.querySelector(`[data-id="${CSS.escape(id)}"]`);
    if (bubble) bubble.remove();
    addMessage("customer", item.text, null, seq, id);
    showRead();
    return true;
  }

  // ---- read state, choices, the rating --------------------------------------------------------
  // What the customer has seen: the panel is open and the page visible (protocol.md#read-state).
  function tellRead() {
    clearTimeout(readTimer);
    readTimer = setTimeout(() => {
      if (!panel.hidden && !document.hidden && lastSeq > readSent && sendFrame({ type: "read", seq: lastSeq })) readSent = lastSeq;
    }, 150); // a replay's frames come one by one: one read after them
  }
  document.addEventListener("visibilitychange", tellRead);

  function onRead(frame) {
    if (frame.by !== "agent" || frame.seq <= agentRead) return;
    agentRead = frame.seq;
    showRead();
  }

  // "Read" under the customer's last message the agent has read.
  function showRead() {
    for (const old of log.querySelectorAll(".read")) old.remove();
    const mine = [...log.querySelectorAll(".msg.customer[data-seq]")].filter((m) => Number(m.dataset.seq) <= agentRead);
    if (mine.length) mine[mine.length - 1].append(h("span", { class: "read", text: T.read }));
  }

  // The bot's buttons ("did you mean"): only on its latest message, gone once the customer writes.
  function choiceButtons(choices) {
    retireChoices();
    const group = h("div", { class: "choices", role: "group", "aria-label": T.choices });
    for (const choice of choices) {
      const label = String(choice.text || choice.value || "");
      group.append(h("button", { type: "button", text: label, onclick: () => sendMessage(label, choice.value) }));
    }
    return group;
  }

  function retireChoices() {
    for (const group of log.querySelectorAll(".choices")) for (const b of group.querySelectorAll("button")) b.disabled = true;
  }

  function ratingForm() {
    const form = h("form", { class: "rating" });
    const scores = h("div", { class: "scores", role: "radiogroup", "aria-label": T.rating });
    let picked = 0;
    const pick = (n) => {
      picked = n;
      for (const b of scores.querySelectorAll("button")) b.setAttribute("aria-checked", String(Number(b.dataset.score) === n));
      submit.disabled = false;
    };
    for (let n = 1; n <= 5; n += 1) {
      scores.append(h("button", { type: "button", role: "radio", "aria-checked": "false", "data-score": String(n),
        "aria-label": T.score(n), text: String(n), onclick: () => pick(n) }));
    }
    const comment = h("textarea", { id: "contactgate-comment", rows: "2", maxlength: "2000" });
    const submit = h("button", { type: "submit", class: "primary", text: T.sendRating });
    submit.disabled = true;
    form.append(scores, h("label", { for: "contactgate-comment", text: T.comment }), comment, submit);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!picked) return;
      const frame = { type: "satisfaction", score: picked };
      if (comment.value.trim()) frame.comment = comment.value.trim();
      if (sendFrame(frame)) submit.disabled = true;
    });
    return form;
  }

  function onRated(frame) {
    seen(frame.seq);
    const form = log.querySelector(".rating");
    const done = h("p", { class: "rated", text: T.rated(frame.score) });
    if (form) form.replaceWith(done); else log.append(done);
    log.scrollTop = log.scrollHeight;
  }

  function addMessage(author, text, attachments, seq, id) {
    const kind = ["customer", "agent", "bot", "system"].includes(author) ? author : "system";
    const who = kind === "customer" ? T.you : kind === "agent" ? (agentName || T.agent) : kind === "bot" ? T.bot : T.system;
    const item = h("div", { class: `msg ${kind}` }, h("span", { class: "who", text: who }));
    if (seq !== undefined && seq !== null) item.dataset.seq = String(seq);
    if (id) item.dataset.id = id;
    if (text) item.append(h("span", { class: "text", text }));
    if (Array.isArray(attachments) && attachments.length) {
      item.append(h("div", { class: "files" }, ...attachments.map(fileButton)));
    }
    log.append(item);
    log.scrollTop = log.scrollHeight;
    return item;
  }

  function addNotice(text) {
    log.append(h("div", { class: "notice", text }));
    log.scrollTop = log.scrollHeight;
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  // The download needs the token in an Authorization header, so the file is fetched and
  // offered as a blob: link (a plain link would have to carry the token in its URL).
  function fileButton(file) {
    const button = h("button", { type: "button", text: T.download(file.name, size(file.size || 0)) });
    button.addEventListener("click", async () => {
      try {
        const answer = await fetch(new URL(`${settings.attachments_path}/${encodeURIComponent(file.id)}`, base),
          { headers: { Authorization: `Bearer ${state.token}` }, credentials: "omit" });
        if (!answer.ok) throw new Error(String(answer.status));
        const blob = await answer.blob();
        const a = h("a", { href: URL.createObjectURL(blob), download: file.name, text: file.name });
        button.replaceWith(a);
        a.click();
        a.focus();
      } catch (e) {
        button.textContent = T.failed(file.name);
      }
    });
    return button;
  }

  function waitText(seconds) {
    if (typeof seconds !== "number" || seconds < 60) return T.waitNone;
    return T.waitMinutes(Math.round(seconds / 60));
  }

  function onQueued(frame) {
    seen(frame.seq);
    if (typeof frame.position !== "number") return;
    queueText = T.queued(frame.position, waitText(frame.estimated_wait));
    setStatus(queueText);
  }

  function onAssigned(frame) {
    seen(frame.seq);
    agentName = (frame.agent && frame.agent.name) || T.agent;
    agentLine.textContent = T.withAgent(agentName);
    queueText = "";
    setStatus("");
    addNotice(T.assigned(agentName));
  }

  function onTyping(frame) {
    if (frame.active === false) { hideTyping(); return; }
    typing.textContent = T.typing(agentName || T.agent);
    typing.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 6000); // a stop may be lost: protocol.md#typing
  }

  function hideTyping() { clearTimeout(typingTimer); typing.hidden = true; typing.textContent = ""; }

  function onClosed(frame) {
    seen(frame.seq);
    state.closedSeq = frame.seq;
    save();
    hideTyping();
    queueText = "";
    setStatus("");
    setClosed(true);
  }

  function setClosed(closed) {
    isClosed = closed;
    if (closed) hideVerify();
    compose.hidden = closed;
    ended.hidden = !closed;
    endButton.hidden = closed || !state.token;
  }

  function onError(frame) {
    if (frame.code === "invalid_token") {
      state.token = null; state.conversationId = null; state.closedSeq = 0; state.email = null; save();
      if (ws) ws.close();
      return;
    }
    if (frame.code === "rate_limited" && frame.id) {
      const item = state.outbox.find((m) => m.id === frame.id);
      if (item) setTimeout(() => sendFrame(messageFrame(item)),
        Math.max(200, (frame.retry_after || 1) * 1000));
      return;
    }
    if (VERIFY_ERRORS[frame.code]) { VERIFY_ERRORS[frame.code](); return; }
    if (frame.code === "unavailable" || frame.code === "internal") {
      // Nothing was stored: the outbox is sent again a little later.
      setTimeout(() => { for (const item of state.outbox) sendFrame(messageFrame(item)); }, 3000);
    }
  }

  // ---- verifying the pre-chat email (protocol.md#verify-an-email) ----------------------------------
  // "ask": a button that mails a code; "code": the code's form. `note` says what went wrong.
  const verifyNote = h("p", { class: "verify-note", "aria-live": "polite" });

  function showVerify(step, note) {
    if (isClosed || state.email !== "claimed") return;
    verifyBox.replaceChildren();
    if (step === "ask") {
      const ask = h("button", { type: "button", text: T.verifyAsk });
      ask.addEventListener("click", () => { if (sendFrame({ type: "verify_email" })) ask.disabled = true; });
      verifyBox.append(ask);
    } else {
      const code = h("input", { id: "contactgate-code", name: "code", inputmode: "numeric", autocomplete: "one-time-code",
        maxlength: "6" }); // checked below, so the note says what is wrong
      const form = h("form", { class: "code" },
        h("p", { text: T.verifyPrompt }),
        h("label", { for: "contactgate-code", class: "visually-hidden", text: T.verifyCode }), code,
        h("button", { type: "submit", class: "primary", text: T.verifySubmit }));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const digits = code.value.replace(/\s+/g, "");
        if (!/^[0-9]{6}$/.test(digits)) { verifyNote.textContent = T.verifyDigits; return; }
        sendFrame({ type: "verify", code: digits });
      });
      verifyBox.append(form);
      setTimeout(() => code.focus(), 0);
    }
    verifyNote.textContent = note || "";
    verifyBox.append(verifyNote);
    verifyBox.hidden = false;
  }

  function hideVerify() { verifyBox.hidden = true; verifyBox.replaceChildren(); }

  function onVerifyFailed(frame) {
    if (frame.reason === "wrong") {
      verifyNote.textContent = T.verifyWrong(frame.tries_left);
      const code = verifyBox.querySelector("input");
      if (code) { code.value = ""; code.focus(); }
      return;
    }
    showVerify("ask", frame.reason === "expired" ? T.verifyExpired : T.verifyNone);
  }

  function onVerified() {
    state.email = "verified";
    save();
    hideVerify();
    addNotice(T.verified);
  }

  const VERIFY_ERRORS = {
    too_many_codes: () => { hideVerify(); addNotice(T.verifyLimit); },
    bad_verify: () => { verifyNote.textContent = T.verifyDigits; },
    // Nothing to verify or no email channel: the gateway cannot; stop offering it.
    nothing_to_verify: () => { state.email = null; save(); hideVerify(); },
    no_email_channel: () => { hideVerify(); },
  };

  // ---- what the customer does -------------------------------------------------------------------
  function newId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function addPending(item) {
    const bubble = h("div", { class: "msg customer pending", "data-id": item.id },
      h("span", { class: "who", text: T.you, "data-sending": T.sending }), h("span", { class: "text", text: item.text }));
    pending.append(bubble);
    log.scrollTop = log.scrollHeight;
  }

  function messageFrame(item) {
    const frame = { type: "message", id: item.id, text: item.text };
    if (item.choice !== undefined) frame.choice = item.choice;
    return frame;
  }

  function sendMessage(text, choice) {
    if (!text || isClosed) return;
    const item = { id: newId(), text };
    if (choice !== undefined) item.choice = choice;
    state.outbox.push(item);
    save();
    addPending(item);
    retireChoices();
    if (lastTypingSent) { sendFrame({ type: "typing", active: false }); lastTypingSent = 0; }
    if (!sendFrame(messageFrame(item))) connect();
  }

  compose.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || isClosed) return;
    input.value = "";
    sendMessage(text);
  });

  // A file goes up over HTTP with the token (protocol.md#files) and comes back as our message.
  async function sendFile(file) {
    const item = { id: newId(), text: file.name };
    addPending(item);
    const fail = (why) => {
      const bubble = pending.querySelector(`[data-id="${CSS.escape(item.id)}"]`);
      if (bubble) bubble.remove();
      setStatus(T.uploadFailed(file.name, why), "offline");
    };
    if (settings && file.size > settings.max_bytes) { fail(T.tooLarge(size(settings.max_bytes))); return; }
    const url = new URL(settings.attachments_path, base);
    url.search = new URLSearchParams({ conversation_id: state.conversationId, id: item.id, name: file.name }).toString();
    try {
      const answer = await fetch(url, { method: "POST", body: file, credentials: "omit",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": file.type || "application/octet-stream" } });
      if (!answer.ok) {
        let body = {};
        try { body = await answer.json(); } catch (e) { body = {}; }
        fail(answer.status === 413 ? T.tooLarge(size(body.max_bytes || settings.max_bytes)) : (body.message || String(answer.status)));
      }
    } catch (e) {
      fail(T.offline);
    }
  }
  attachButton.addEventListener("click", () => fileInput.click());
  fileInput.addEventListener("change", () => {
    const files = [...fileInput.files];
    fileInput.value = "";
    if (!state.token || !state.conversationId || isClosed) return;
    for (const file of files) sendFile(file);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      compose.requestSubmit();
    }
  });
  input.addEventListener("input", () => {
    const now = Date.now();
    if (!input.value) {
      if (lastTypingSent) sendFrame({ type: "typing", active: false });
      lastTypingSent = 0;
    } else if (now - lastTypingSent > 3000 && sendFrame({ type: "typing" })) {
      lastTypingSent = now;
    }
  });

  endButton.addEventListener("click", () => {
    if (window.confirm(T.endConfirm)) sendFrame({ type: "close" });
  });
  againButton.addEventListener("click", () => {
    // A new socket says hello with the seq of `closed`: the gateway opens a new conversation.
    clearLog();
    shownConversation = null;
    if (ws) { const socket = ws; ws = null; socket.close(); }
    connect();
    input.focus();
  });

  function markRead() {
    if (lastSeq > state.readSeq) { state.readSeq = lastSeq; save(); }
    tellRead();
  }

  function showUnread() {
    badge.hidden = unread === 0;
    badge.textContent = String(unread);
    badge.setAttribute("aria-label", T.unread(unread));
  }

  async function open() {
    panel.hidden = false;
    host.classList.add("open");
    launcher.hidden = true;
    launcher.setAttribute("aria-expanded", "true");
    unread = 0;
    showUnread();
    markRead();
    if (!state.token) {
      try { await loadSettings(); } catch (e) { /* shown by connect's retries */ }
      if (prechatFields && prechatFields.length && !profile) { showPrechat(); return; }
    }
    connect();
    input.focus();
  }

  function minimise() {
    panel.hidden = true;
    host.classList.remove("open");
    launcher.hidden = false;
    launcher.setAttribute("aria-expanded", "false");
    launcher.focus();
  }

  function showPrechat() {
    const inputs = {};
    const form = prechatForm;
    form.replaceChildren(h("p", { text: T.prechat }));
    for (const field of prechatFields) {
      const id = `contactgate-prechat-${field}`;
      const control = h("input", { id, name: field, type: field === "email" ? "email" : "text", required: "",
        autocomplete: field === "email" ? "email" : "name", maxlength: "200" });
      inputs[field] = control;
      form.append(h("label", { for: id }, h("span", { text: T[field] }), control));
    }
    form.append(h("button", { type: "submit", class: "primary", text: T.start }));
    form.onsubmit = (event) => {
      event.preventDefault();
      profile = {};
      for (const [field, control] of Object.entries(inputs)) profile[field] = control.value.trim();
      form.hidden = true;
      for (const part of [log, pending, compose]) part.hidden = false;
      connect();
      input.focus();
    };
    for (const part of [log, pending, compose]) part.hidden = true;
    form.hidden = false;
    const first = Object.values(inputs)[0];
    if (first) first.focus();
  }

  launcher.addEventListener("click", open);
  closeButton.addEventListener("click", minimise);
  panel.addEventListener("keydown", (event) => { if (event.key === "Escape") minimise(); });

  for (const item of state.outbox) addPending(item);
  setClosed(false);
  endButton.hidden = true;

  function mount() {
    document.body.append(host);
    // A returning customer reconnects at once, so an agent's answer shows as unread (unless
    // the conversation ended: a new one starts only when the customer opens the chat).
    if (state.token && !state.closedSeq) connect();
  }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
