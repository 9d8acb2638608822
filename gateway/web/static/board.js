/* contactgate supervisor board, served at /board (docs/pages.md, "Supervisor board").

   Signs in with the admin token (server.admin_token), typed into the form, kept in sessionStorage
   (this tab only) and sent in the first frame of /board/ws, never in a URL or a cookie. The
   gateway pushes `history` (the charts' last hours) and `figures` (everything on the board) on
   connect, then `figures` whenever something changed and every few seconds anyway, and a `sample`
   every minute. Waits keep growing on screen between pushes. A dropped connection is reopened
   with backoff (0.5 s doubling to 15 s).

   English and Chinese (from the browser's language, or the language picker, kept in
   localStorage). Charts by uPlot (vendored, MIT). Plain JavaScript, no build step, no inline
   script or style (the page's CSP allows neither). An ES module: its one import is versioned
   when served, like the console's. */
import { h } from "./dom.js";

(() => {
  const KEY = "contactgate:board";

  const TEXT = {
    en: {
      title: "Supervisor board", token: "Admin token", signIn: "Sign in", signOut: "Sign out", language: "Language",
      badToken: "That is not the admin token.", adminOff: "The admin API is off on this gateway: set server.admin_token to use the board.",
      locked: "Too many wrong tokens from this address; try again later.",
      connecting: "Connecting…", live: "Live", offline: "Offline: reconnecting…",
      queues: "Queues", breaching: "About to breach", agents: "Agents",
      green: "On target", amber: "At risk", red: "Below target", noData: "no answers yet",
      waiting: "Waiting now", longest: "Longest wait", staffing: "Agents available / busy / away",
      level: "Answered within target", targetLabel: "Target", abandoned: "Abandoned", forecast: "Forecast, next {h}",
      levelOf: "{p} ({n} of {d})", target: "{p} within {s} (last {w})", rate: "Answer rate",
      forecastNone: "no drop expected", forecastLow: "lowest {p}", perMinute: "{r} a minute",
      chart: "Service level and waiting, last {h}", chartLevel: "Service level %", chartWaiting: "Waiting",
      chartEmpty: "No samples yet (one a minute).",
      queue: "Queue", tier: "Tier", channel: "Channel", waited: "Waiting for", state: "",
      pastTarget: "past target", offeredTo: "offered to {a}", nobodyBreaching: "Nobody is close to the target.",
      agent: "Agent", status: "Status", load: "Conversations", inState: "Time in state",
      available: "available", busy: "busy", away: "away", offline_: "offline", wrapUp: "wrap-up",
      ofCapacity: "{n} of {c}", noAgents: "No agents are configured.",
      seconds: "{s} s", minutes: "{m} min {s} s", wholeMinutes: "{m} min", hours: "{h} h {m} min", wholeHours: "{h} h",
    },
    zh: {
      title: "主管看板", token: "管理员令牌", signIn: "登录", signOut: "退出", language: "语言",
      badToken: "管理员令牌不正确。", adminOff: "此网关未开启管理 API：请设置 server.admin_token 后使用看板。",
      locked: "此地址输错令牌次数过多，请稍后再试。",
      connecting: "正在连接…", live: "实时", offline: "已断开：正在重连…",
      queues: "队列", breaching: "即将超时", agents: "坐席",
      green: "达标", amber: "有风险", red: "未达标", noData: "尚无接听",
      waiting: "当前等待", longest: "最长等待", staffing: "坐席 空闲 / 忙碌 / 离开",
      level: "目标内接听", targetLabel: "目标", abandoned: "放弃", forecast: "预测（未来 {h}）",
      levelOf: "{p}（{d} 个中 {n} 个）", target: "{s} 内接听 {p}（最近 {w}）", rate: "接听速度",
      forecastNone: "预计不会下降", forecastLow: "最低 {p}", perMinute: "每分钟 {r} 个",
      chart: "服务水平与等待数，最近 {h}", chartLevel: "服务水平 %", chartWaiting: "等待",
      chartEmpty: "尚无样本（每分钟一个）。",
      queue: "队列", tier: "等级", channel: "渠道", waited: "已等待", state: "",
      pastTarget: "已超目标", offeredTo: "已分配给 {a}", nobodyBreaching: "没有接近目标时间的会话。",
      agent: "坐席", status: "状态", load: "会话", inState: "当前状态时长",
      available: "空闲", busy: "忙碌", away: "离开", offline_: "离线", wrapUp: "话后处理",
      ofCapacity: "{n} / {c}", noAgents: "未配置坐席。",
      seconds: "{s} 秒", minutes: "{m} 分 {s} 秒", wholeMinutes: "{m} 分钟", hours: "{h} 小时 {m} 分", wholeHours: "{h} 小时",
    },
  };
  function pickLanguage() {
    const kept = localStorage.getItem(`${KEY}:lang`);
    if (kept === "en" || kept === "zh") return kept;
    return /^zh\b/i.test(navigator.language || "") ? "zh" : "en";
  }
  let lang = pickLanguage();
  function t(key, values) {
    let text = TEXT[lang][key] ?? TEXT.en[key] ?? key;
    for (const [k, v] of Object.entries(values || {})) text = text.replace(`{${k}}`, v);
    return text;
  }

  // ---- state ------------------------------------------------------------------------------------
  let token = sessionStorage.getItem(`${KEY}:token`);
  let figures = null;       // the last `figures` frame
  let receivedAt = 0;       // when it came (performance.now()), to let waits grow on screen
  let history = {};         // queue -> [[unix seconds, service level, waiting], ...]
  let historyHours = 8;
  let ws = null;
  let retries = 0;
  let retryTimer = null;
  const charts = new Map(); // queue -> {plot, element}

  // ---- DOM --------------------------------------------------------------------------------------
  // h(): dom.js, shared with the console.

  const app = document.getElementById("board");
  function languagePicker(id) {
    const select = h("select", { id },
      h("option", { value: "en", text: "English" }), h("option", { value: "zh", text: "中文" }));
    select.value = lang;
    select.addEventListener("change", () => {
      lang = select.value;
      localStorage.setItem(`${KEY}:lang`, lang);
      build();
    });
    return select;
  }

  let parts = {};
  function build() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = `contactgate: ${t("title")}`;
    for (const { plot } of charts.values()) plot.destroy();
    charts.clear();
    const tokenInput = h("input", { id: "cg-admin-token", type: "password", autocomplete: "current-password", required: true });
    const signInError = h("p", { class: "error", role: "alert", hidden: true });
    const signIn = h("form", { class: "signin", "aria-labelledby": "cg-signin-title" },
      h("h1", { id: "cg-signin-title", text: t("title") }),
      h("label", { for: "cg-admin-token", text: t("token") }), tokenInput, signInError,
      h("button", { type: "submit", class: "primary", text: t("signIn") }),
      h("label", { for: "cg-lang-signin", text: t("language") }), languagePicker("cg-lang-signin"));
    signIn.addEventListener("submit", (event) => {
      event.preventDefault();
      token = tokenInput.value.trim();
      if (!token) return;
      sessionStorage.setItem(`${KEY}:token`, token);
      tokenInput.value = "";
      showBoard();
    });
    const connection = h("span", { class: "connection", role: "status" });
    const signOut = h("button", { type: "button", text: t("signOut") });
    signOut.addEventListener("click", () => forget(""));
    const header = h("header", { class: "top" }, h("h1", { text: t("title") }), connection,
      h("span", { class: "spacer" }),
      h("label", { for: "cg-lang", text: t("language") }), languagePicker("cg-lang"), signOut);
    const queueList = h("ul", { class: "queues", "aria-label": t("queues") });
    const breachBody = h("tbody");
    const breachTable = h("table", { class: "breaching" },
      h("thead", {}, h("tr", {}, ...["queue", "tier", "channel", "waited", "state"].map((k) =>
        h("th", { scope: "col", text: t(k) })))), breachBody);
    const breachNone = h("p", { class: "none", text: t("nobodyBreaching") });
    const agentBody = h("tbody");
    const agentTable = h("table", { class: "agents" },
      h("thead", {}, h("tr", {}, ...["agent", "status", "load", "inState"].map((k) =>
        h("th", { scope: "col", text: t(k) })))), agentBody);
    const agentNone = h("p", { class: "none", text: t("noAgents") });
    const main = h("main", { class: "panes" },
      h("section", { class: "queues-pane", "aria-labelledby": "cg-queues-title" },
        h("h2", { id: "cg-queues-title", text: t("queues") }), queueList),
      h("div", { class: "side" },
        h("section", { "aria-labelledby": "cg-breach-title" },
          h("h2", { id: "cg-breach-title", text: t("breaching") }), breachTable, breachNone),
        h("section", { "aria-labelledby": "cg-agents-title" },
          h("h2", { id: "cg-agents-title", text: t("agents") }), agentTable, agentNone)));
    const desk = h("div", { class: "desk", hidden: true }, header, main);
    app.replaceChildren(signIn, desk);
    parts = { signIn, signInError, tokenInput, desk, connection, queueList, breachBody, breachTable, breachNone,
              agentBody, agentTable, agentNone };
    if (token) showBoard(false); else { signIn.hidden = false; tokenInput.focus(); }
    render();
  }

  // ---- formatting -------------------------------------------------------------------------------
  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return t("seconds", { s });
    if (s < 3600) {
      return s % 60 ? t("minutes", { m: Math.floor(s / 60), s: String(s % 60).padStart(2, "0") })
        : t("wholeMinutes", { m: s / 60 });
    }
    const m = Math.floor(s / 60) % 60;
    return m ? t("hours", { h: Math.floor(s / 3600), m: String(m).padStart(2, "0") }) : t("wholeHours", { h: Math.floor(s / 3600) });
  }
  const percent = (p) => `${Number(p).toFixed(p === 100 || p === 0 ? 0 : 1)} %`;
  function grown() { return (performance.now() - receivedAt) / 1000; }

  // ---- rendering --------------------------------------------------------------------------------
  function render() {
    if (!figures || parts.desk.hidden) return;
    renderQueues();
    renderBreaching();
    renderAgents();
  }

  function figure(label, value, cls) {
    return [h("dt", { text: label }), h("dd", { class: cls || null, text: value })];
  }

  function renderQueues() {
    const extra = grown();
    const seen = new Set();
    for (const q of figures.queues) {
      seen.add(q.queue);
      let item = parts.queueList.querySelector(`li[data-queue="${CSS.escape(q.queue)}"]`);
      if (!item) {
        item = h("li", { class: "queue", "data-queue": q.queue, "aria-labelledby": `cg-q-${q.queue}` },
          h("div", { class: "head" }, h("h3", { id: `cg-q-${q.queue}`, text: q.queue }), h("span", { class: "badge" })),
          h("dl", { class: "figures" }),
          h("figure", { class: "chart" }, h("figcaption", {}), h("div", { class: "plot", role: "img" }),
            h("p", { class: "none" })));
        parts.queueList.append(item);
      }
      item.className = `queue ${q.colour}`;
      const badge = item.querySelector(".badge");
      badge.textContent = t(q.colour);
      const target = q.service_level_target;
      const level = q.service_level === null ? t("noData")
        : t("levelOf", { p: percent(q.service_level), n: q.answered_within_target, d: q.counted });
      const waitingNow = q.waiting;
      const longest = waitingNow ? q.longest_wait + extra : 0;
      const forecast = q.forecast.lowest_service_level === null || q.forecast.lowest_service_level === q.service_level
        ? t("forecastNone") : t("forecastLow", { p: percent(q.forecast.lowest_service_level) });
      item.querySelector(".figures").replaceChildren(
        ...figure(t("waiting"), String(waitingNow), "waiting"),
        ...figure(t("longest"), duration(longest), "longest"),
        ...figure(t("staffing"), `${q.agents.available} / ${q.agents.busy} / ${q.agents.away}`, "staffing"),
        ...figure(t("level"), level, "level"),
        ...figure(t("targetLabel"), t("target", { p: `${target.percent} %`, s: duration(target.answer_within),
                                                  w: duration(target.window) }), "target"),
        ...figure(t("abandoned"), String(q.abandoned), "abandoned"),
        ...figure(t("forecast", { h: duration(q.forecast.horizon) }), forecast, "forecast"),
        ...figure(t("rate"), t("perMinute", { r: Number(q.forecast.answers_per_minute.toFixed(1)) }), "rate"));
      renderChart(item, q.queue);
    }
    for (const item of parts.queueList.querySelectorAll("li.queue")) {
      if (!seen.has(item.dataset.queue)) {
        charts.get(item.dataset.queue)?.plot.destroy();
        charts.delete(item.dataset.queue);
        item.remove();
      }
    }
  }

  function chartData(queue) {
    const points = history[queue] || [];
    return [points.map((p) => p[0]), points.map((p) => p[1]), points.map((p) => p[2])];
  }

  function renderChart(item, queue) {
    const figureEl = item.querySelector(".chart");
    const points = history[queue] || [];
    figureEl.querySelector("figcaption").textContent = t("chart", { h: duration(historyHours * 3600) });
    const plotEl = figureEl.querySelector(".plot");
    const empty = figureEl.querySelector(".none");
    empty.textContent = t("chartEmpty");
    empty.hidden = points.length > 0;
    const last = points[points.length - 1];
    plotEl.setAttribute("aria-label", last
      ? `${t("chart", { h: duration(historyHours * 3600) })}: ${last[1] === null ? t("noData") : percent(last[1])}, ${t("chartWaiting")} ${last[2]}`
      : t("chartEmpty"));
    let chart = charts.get(queue);
    if (!chart && typeof uPlot === "function") {
      const width = Math.max(200, Math.floor(figureEl.getBoundingClientRect().width) || 300);
      const plot = new uPlot({
        width, height: 150, legend: { show: false }, cursor: { show: false },
        scales: { x: { time: true, range: () => { const end = Date.now() / 1000; return [end - historyHours * 3600, end]; } },
                  level: { range: [0, 100] }, waiting: { range: (u, min, max) => [0, Math.max(4, max)] } },
        // Times of day in the page's language (uPlot's own date names are English).
        axes: [{ stroke: "#374151", values: (u, splits) => splits.map((v) => new Date(v * 1000)
                   .toLocaleTimeString(lang === "zh" ? "zh-CN" : "en-GB", { hour: "2-digit", minute: "2-digit" })) },
               { scale: "level", stroke: "#1d4ed8", size: 40 },
               { scale: "waiting", side: 1, stroke: "#92400e", size: 36, grid: { show: false } }],
        series: [{}, { label: t("chartLevel"), scale: "level", stroke: "#1d4ed8", width: 2, spanGaps: false },
                 { label: t("chartWaiting"), scale: "waiting", stroke: "#92400e", width: 2 }],
      }, chartData(queue), plotEl);
      chart = { plot, count: points.length };
      charts.set(queue, chart);
    } else if (chart && chart.count !== points.length) {
      chart.plot.setData(chartData(queue));
      chart.count = points.length;
    }
  }

  function renderBreaching() {
    const extra = grown();
    const rows = figures.breaching.map((c) => h("tr", { "data-conversation": c.conversation_id },
      h("td", { text: c.queue }), h("td", { text: c.tier || "" }), h("td", { text: c.channel }),
      h("td", { class: "waited", text: duration(c.waited + extra) }),
      h("td", { class: c.past_target || c.waited + extra > c.answer_within ? "past" : "",
                text: [c.past_target || c.waited + extra > c.answer_within ? t("pastTarget") : "",
                       c.offered_to ? t("offeredTo", { a: c.offered_to }) : ""].filter(Boolean).join(" · ") })));
    parts.breachBody.replaceChildren(...rows);
    parts.breachTable.hidden = rows.length === 0;
    parts.breachNone.hidden = rows.length > 0;
  }

  function renderAgents() {
    const extra = grown();
    const rows = figures.agents.map((a) => {
      const channels = a.channels.filter((c) => c.conversations || c.capacity)
        .map((c) => c.capacity === null ? `${c.channel} ${c.conversations}` : `${c.channel} ${t("ofCapacity", { n: c.conversations, c: c.capacity })}`);
      const load = a.capacity === null ? channels.join(", ")
        : `${t("ofCapacity", { n: a.conversations, c: a.capacity })}${channels.length ? ` (${channels.join(", ")})` : ""}`;
      const status = t(a.status === "offline" ? "offline_" : a.status) + (a.wrap_up_until ? ` · ${t("wrapUp")}` : "");
      return h("tr", { "data-agent": a.id },
        h("th", { scope: "row", text: a.name }), h("td", {}, h("span", { class: `status ${a.status}`, text: status })),
        h("td", { class: "load", text: load }), h("td", { class: "in-state", text: duration(a.in_state + extra) }));
    });
    parts.agentBody.replaceChildren(...rows);
    parts.agentTable.hidden = rows.length === 0;
    parts.agentNone.hidden = rows.length > 0;
  }

  // ---- the socket -------------------------------------------------------------------------------
  function setConnection(key) { parts.connection.textContent = t(key); parts.connection.dataset.state = key; }

  function connect() {
    if (ws || !token) return;
    clearTimeout(retryTimer);
    setConnection("connecting");
    const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/board/ws`);
    ws = socket;
    socket.addEventListener("open", () => socket.send(JSON.stringify({ type: "auth", token })));
    socket.addEventListener("message", (message) => {
      let frame;
      try { frame = JSON.parse(message.data); } catch (e) { return; }
      if (frame.type === "history") {
        history = frame.queues || {};
        historyHours = frame.hours || historyHours;
        for (const chart of charts.values()) chart.count = -1;
      } else if (frame.type === "sample") {
        for (const [queue, p] of Object.entries(frame.queues || {})) {
          const points = (history[queue] = history[queue] || []);
          if (!points.length || points[points.length - 1][0] < p[0]) points.push(p);
          const cutoff = p[0] - historyHours * 3600;
          while (points.length && points[0][0] < cutoff) points.shift();
        }
        render();
      } else if (frame.type === "figures") {
        figures = frame;
        receivedAt = performance.now();
        retries = 0;
        setConnection("live");
        render();
      }
    });
    socket.addEventListener("close", (event) => {
      if (ws === socket) ws = null;
      if (event.code === 4401) return forget(t("badToken"));
      if (event.code === 4403) return forget(t("adminOff"));
      if (event.code === 4429) { forget(t("locked")); return; }
      if (!token) return;
      setConnection("offline");
      const delay = Math.min(15000, 500 * 2 ** retries);
      retries += 1;
      retryTimer = setTimeout(connect, delay);
    });
  }

  function showBoard(focus = true) {
    parts.signIn.hidden = true;
    parts.desk.hidden = false;
    if (ws && figures) setConnection("live");
    connect();
    if (focus) parts.desk.querySelector("h1").focus?.();
  }

  function forget(why) {
    token = null;
    sessionStorage.removeItem(`${KEY}:token`);
    clearTimeout(retryTimer);
    if (ws) { const socket = ws; ws = null; socket.close(1000, "signed out"); }
    figures = null;
    parts.desk.hidden = true;
    parts.signIn.hidden = false;
    parts.signInError.textContent = why;
    parts.signInError.hidden = !why;
    parts.tokenInput.focus();
  }

  window.addEventListener("offline", () => { if (ws) ws.close(); });
  window.addEventListener("online", () => { retries = 0; connect(); });
  setInterval(render, 1000);  // waits and times in state grow between pushes
  build();
})();
