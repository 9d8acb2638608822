/* The agent console's words, in English and Chinese (docs/pages.md, "Agent console").

   The language is the browser's (any zh-… is Chinese, anything else English) unless the agent
   picked one in the header: that choice is kept in localStorage for this gateway. */
const STRINGS = {
  en: {
    title: "Agent console", token: "Agent token", signIn: "Sign in", status: "Status", available: "Available",
    away: "Away", signOut: "Sign out", language: "Language", offers: "Offers", conversations: "Conversations",
    work: "Work", messages: "Messages", notYetSent: "Not yet sent", customerTyping: "The customer is typing…",
    reply: "Reply", replyPlaceholder: "Reply… (Enter sends, Shift+Enter for a new line)", send: "Send",
    disposition: "Disposition", closeConversation: "Close conversation", transferTo: "Transfer to",
    transferNote: "Note for the next agent", notePlaceholder: "Note", transfer: "Transfer",
    pickTarget: "Choose a queue or an agent", queues: "Queues", agents: "Agents",
    agentStatus: { available: "available", away: "away", offline: "offline", wrap_up: "in wrap-up" },
    removeFromList: "Remove from the list", noSelection: "No conversation selected.", conversation: "Conversation",
    customer: "Customer", assistant: "Assistant", notice: "Notice", agent: "Agent",
    download: "Download {name} ({size})", couldNotDownload: "Could not download {name}",
    suggestedAnswers: "Suggested answers",
    identities: "Identities", claimed: "claimed", history: "History", linkSuggestion: "Link?", link: "Link",
    saysIs: "Says {address}: {who}, {n} earlier conversation(s).", customersLinked: "Customers linked.",
    closedEvent: "The conversation was closed.", youTransferred: "You transferred the conversation.",
    notDelivered: "Not delivered: {text}", tier: "Tier", channel: "Channel", queue: "Queue", unknown: "Unknown",
    noOffers: "No offers.", from: "From", note: "Note", transcript: "Transcript ({n})",
    secondsToAccept: "{n} s to accept", accept: "Accept", decline: "Decline",
    shortcuts: "Alt+A accepts, Alt+D declines the first offer.", noConversations: "No conversations.",
    ended: "ended", unread: "{n} unread", online: "Online", leftChat: "left the chat", none: "(none)",
    conversationEnded: "This conversation has ended.", wrapUp: "Wrap-up: {n} s",
    customerLeftOffer: "The customer left before the offer was taken.", youClosed: "You closed this conversation.",
    customerClosed: "The customer closed this conversation.", transferredTo: "Transferred to {to}.",
    noLongerYours: "This conversation is no longer yours.", offerWithdrawn: "An offer was withdrawn ({reason}).",
    setAway: "Set away: {reason}", connecting: "Connecting…",
    offline: "Offline. Reconnecting when the network is back…", lost: "Connection lost. Reconnecting…",
    replaced: "Signed in in another window. Reload to use this one.", refused: "The gateway refused this token.",
    sending: "sending", read: "Read", alerts: "Sound and notification for new offers",
    newOffer: "New offer: {name}", newOfferBody: "{channel}, queue {queue}", attach: "Attach a file",
    uploading: "Uploading {name}…", uploadFailed: "Could not send {name}: {reason}",
    cannedLabel: "Insert a canned answer", canned: "Canned answers…",
  },
  zh: {
    title: "坐席工作台", token: "坐席令牌", signIn: "登录", status: "状态", available: "空闲",
    away: "离开", signOut: "退出登录", language: "语言", offers: "待接会话", conversations: "会话",
    work: "工作区", messages: "消息", notYetSent: "尚未发送", customerTyping: "客户正在输入…",
    reply: "回复", replyPlaceholder: "回复…(Enter 发送,Shift+Enter 换行)", send: "发送",
    disposition: "处理结果", closeConversation: "结束会话", transferTo: "转接给",
    transferNote: "给下一位坐席的备注", notePlaceholder: "备注", transfer: "转接",
    pickTarget: "选择队列或坐席", queues: "队列", agents: "坐席",
    agentStatus: { available: "空闲", away: "离开", offline: "离线", wrap_up: "话后处理中" },
    removeFromList: "从列表中移除", noSelection: "未选择会话。", conversation: "会话",
    customer: "客户", assistant: "智能助手", notice: "提示", agent: "坐席",
    download: "下载 {name}({size})", couldNotDownload: "无法下载 {name}",
    suggestedAnswers: "推荐回答",
    identities: "身份", claimed: "自称", history: "历史", linkSuggestion: "关联?", link: "关联",
    saysIs: "自称 {address}:{who},之前有 {n} 个会话。", customersLinked: "已关联客户。",
    closedEvent: "会话已结束。", youTransferred: "您已转接此会话。",
    notDelivered: "未送达:{text}", tier: "等级", channel: "渠道", queue: "队列", unknown: "未知",
    noOffers: "暂无待接会话。", from: "转自", note: "备注", transcript: "聊天记录({n})",
    secondsToAccept: "{n} 秒内接受", accept: "接受", decline: "拒绝",
    shortcuts: "Alt+A 接受、Alt+D 拒绝第一个待接会话。", noConversations: "暂无会话。",
    ended: "已结束", unread: "{n} 条未读", online: "在线", leftChat: "已离开聊天", none: "(无)",
    conversationEnded: "此会话已结束。", wrapUp: "话后处理:{n} 秒",
    customerLeftOffer: "客户在会话被接起前离开了。", youClosed: "您结束了此会话。",
    customerClosed: "客户结束了此会话。", transferredTo: "已转接给 {to}。",
    noLongerYours: "此会话已不再由您处理。", offerWithdrawn: "一个待接会话已撤回({reason})。",
    setAway: "已设为离开:{reason}", connecting: "正在连接…",
    offline: "网络已断开,恢复后自动重连…", lost: "连接已断开,正在重连…",
    replaced: "您已在另一个窗口登录。刷新页面以使用此窗口。", refused: "网关拒绝了此令牌。",
    sending: "发送中", read: "已读", alerts: "新会话提示音和通知",
    newOffer: "新的待接会话:{name}", newOfferBody: "{channel},队列 {queue}", attach: "发送文件",
    uploading: "正在上传 {name}…", uploadFailed: "无法发送 {name}:{reason}",
    cannedLabel: "插入常用回复", canned: "常用回复…",
  },
};

const KEY = "contactgate:console:lang";

function chosen() {
  try { const kept = localStorage.getItem(KEY); if (kept && STRINGS[kept]) return kept; } catch (e) { /* private mode */ }
  return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
}

export const LANGUAGES = { en: "English", zh: "中文" };
export const lang = chosen();

/** The text for `key` in the console's language, with {name} placeholders filled from `vars`. */
export function t(key, vars) {
  const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  if (typeof text !== "string") return text;
  return text.replace(/\{(\w+)\}/g, (all, name) => (vars && name in vars ? String(vars[name]) : all));
}

/** Keep the agent's pick; the page reloads in it (the desk resumes from sessionStorage). */
export function chooseLanguage(value) {
  try { localStorage.setItem(KEY, value); } catch (e) { /* private mode: this tab only */ }
  location.reload();
}
