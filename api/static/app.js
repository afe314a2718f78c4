// StockPilot chat page: streams answers from POST /chat/stream (server-sent events over fetch, so the
// API key travels in a header), then shows the facts used, the sources, and for a one-SKU question a
// chart of history, forecast and 90% interval from GET /forecast/item/{sku}. No build step, no libraries.
"use strict";

const KEY_STORE = "stockpilot-api-key";
const SESSION_STORE = "stockpilot-session";
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------- API key
function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

function showKeyPanel(show) {
  $("key-panel").hidden = !show;
  if (show) $("key-input").focus();
}

function keyFromFragment() {
  // http://127.0.0.1:8000/#key=... stores the key once and removes it from the address bar
  const match = location.hash.match(/key=([^&]+)/);
  if (match) {
    localStorage.setItem(KEY_STORE, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
}

async function api(path, options = {}) {
  const headers = Object.assign({ "X-API-Key": apiKey() }, options.headers || {});
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    showKeyPanel(true);
    throw new Error("The API key is missing or wrong: paste it above.");
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const detail = body.detail;
    if (typeof detail === "string") return detail;
    if (detail && detail.message) return detail.message;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}`;
}

// ---------------------------------------------------------------- formatting
function formatValue(value, unit) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") {
    if (unit === "ratio") return `${(value * 100).toLocaleString(undefined, { maximumFractionDigits: 1 })}%`;
    return value.toLocaleString(undefined, { maximumFractionDigits: 2 });
  }
  return String(value);
}

function sourceText(source) {
  if (source === null || source === undefined) return "";
  if (typeof source === "string") return source;
  return source.title || source.id || source.source || JSON.stringify(source);
}

// ---------------------------------------------------------------- conversation
function addMessage(kind, text) {
  const box = el("div", { class: `msg ${kind}` });
  if (text !== undefined) box.appendChild(el("div", { class: "answer-text" }, text));
  $("conversation").appendChild(box);
  box.scrollIntoView({ block: "end", behavior: "smooth" });
  return box;
}

function factsTable(facts) {
  const details = el("details", { class: "facts-block", open: "" });
  details.appendChild(el("summary", {}, `Facts used (${facts.length})`));
  const wrap = el("div", { class: "table-wrap" });
  const table = el("table", { class: "facts" });
  const head = el("tr");
  for (const [label, cls] of [["Fact", ""], ["Value", "num"], ["Source", "src"]]) {
    head.appendChild(el("th", cls ? { class: cls } : {}, label));
  }
  table.appendChild(el("thead")).appendChild(head);
  const body = el("tbody");
  for (const fact of facts) {
    const row = el("tr");
    row.appendChild(el("td", {}, fact.name));
    const numeric = typeof fact.value === "number";
    const unit = numeric && fact.unit && fact.unit !== "ratio" && fact.unit !== "%" ? ` ${fact.unit}` : "";
    const value = formatValue(fact.value, fact.unit) + (fact.unit === "%" && numeric ? "%" : unit);
    row.appendChild(el("td", { class: numeric ? "num" : "text" }, value));
    row.appendChild(el("td", { class: "src" }, fact.source || ""));
    body.appendChild(row);
  }
  table.appendChild(body);
  wrap.appendChild(table);
  details.appendChild(wrap);
  return details;
}

function sourcesList(sources) {
  const details = el("details", { class: "sources-block" });
  details.appendChild(el("summary", {}, `Sources (${sources.length})`));
  const list = el("ul", { class: "sources" });
  for (const source of sources) list.appendChild(el("li", {}, sourceText(source)));
  details.appendChild(list);
  return details;
}

function singleSku(answer) {
  const entities = answer.entities || {};
  const skus = Array.isArray(entities.skus) ? entities.skus : entities.sku ? [entities.sku] : [];
  return skus.length === 1 ? skus[0] : null;
}

function renderAnswer(box, textNode, answer) {
  textNode.classList.remove("streaming");
  textNode.textContent = answer.answer;
  const bits = [];
  if (answer.intent) bits.push(`intent: ${answer.intent}`);
  const guard = answer.guard || {};
  if (guard.model_used === false) bits.push("answered from the facts (no model)");
  else if (guard.fallback_used) bits.push("number check failed: plain answer from the facts");
  else bits.push(`number check passed (${guard.numbers_checked || 0} numbers)`);
  if (answer.latency_ms !== undefined && answer.latency_ms !== null) {
    bits.push(`${(answer.latency_ms / 1000).toFixed(1)} s`);
  }
  if (bits.length) box.appendChild(el("div", { class: "meta muted" }, bits.join(" · ")));
  if (answer.facts && answer.facts.length) box.appendChild(factsTable(answer.facts));
  if (answer.sources && answer.sources.length) box.appendChild(sourcesList(answer.sources));
  const sku = singleSku(answer);
  if (sku) addChart(box, sku);
}

// ---------------------------------------------------------------- chart
async function addChart(box, sku) {
  const figure = el("figure", { class: "chart" });
  box.appendChild(figure);
  try {
    const response = await api(`/forecast/item/${encodeURIComponent(sku)}?history=26`);
    drawChart(figure, await response.json());
  } catch (err) {
    figure.appendChild(el("figcaption", {}, `No chart: ${err.message}`));
  }
}

function drawChart(figure, item) {
  const W = 640, H = 260, L = 52, R = 12, T = 12, B = 28;
  const hist = item.history.map((p) => ({ t: Date.parse(p.ds), y: p.y }));
  const fc = item.forecast.map((p) => ({
    t: Date.parse(p.ds), y: p.yhat, lo: p.yhat_lower ?? p.yhat, hi: p.yhat_upper ?? p.yhat,
  }));
  const times = hist.map((p) => p.t).concat(fc.map((p) => p.t));
  const values = hist.map((p) => p.y).concat(fc.flatMap((p) => [p.lo, p.hi, p.y]));
  const t0 = Math.min(...times), t1 = Math.max(...times);
  const y0 = Math.min(0, ...values), y1 = Math.max(1, ...values);
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const line = (points, key) => points.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join("");

  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `Demand history and forecast for ${item.sku}` });
  chart.appendChild(svg("line", { class: "axis", x1: L, x2: W - R, y1: y(y0), y2: y(y0) }));
  chart.appendChild(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  for (const v of [y0, (y0 + y1) / 2, y1]) {
    chart.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" },
      Math.round(v).toLocaleString()));
  }
  const dateLabel = (t) => new Date(t).toISOString().slice(0, 10);
  chart.appendChild(svg("text", { x: L, y: H - 8 }, dateLabel(t0)));
  chart.appendChild(svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, dateLabel(t1)));
  if (fc.length) {
    const band = fc.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.hi).toFixed(1)}`).join("")
      + fc.slice().reverse().map((p) => `L${x(p.t).toFixed(1)},${y(p.lo).toFixed(1)}`).join("") + "Z";
    chart.appendChild(svg("path", { class: "band", d: band }));
    const start = x(fc[0].t);
    chart.appendChild(svg("line", { class: "now", x1: start, x2: start, y1: T, y2: H - B }));
    chart.appendChild(svg("text", { x: start + 4, y: T + 10 }, dateLabel(fc[0].t)));
    const joined = hist.length ? [hist[hist.length - 1]].concat(fc) : fc;
    chart.appendChild(svg("path", { class: "forecast", d: line(joined, "y") }));
  }
  if (hist.length) chart.appendChild(svg("path", { class: "history", d: line(hist, "y") }));
  figure.appendChild(chart);
  const legend = el("div", { class: "legend" });
  legend.appendChild(el("span", { class: "lh" }, "history"));
  legend.appendChild(el("span", { class: "lf" }, `forecast (${item.model || "model"})`));
  legend.appendChild(el("span", { class: "lb" }, "90% interval"));
  figure.appendChild(legend);
  const name = item.description ? `${item.sku} — ${item.description}` : item.sku;
  figure.appendChild(el("figcaption", {}, `${name}: weekly demand, forecast and 90% interval (run ${item.run_id})`));
}

// ---------------------------------------------------------------- streaming
function parseEvents(buffer, onEvent) {
  // Split complete SSE events ("\n\n"-terminated); returns the unfinished rest.
  const parts = buffer.split(/\r?\n\r?\n/);
  const rest = parts.pop();
  for (const part of parts) {
    let event = "message";
    const data = [];
    for (const line of part.split(/\r?\n/)) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (data.length) onEvent(event, JSON.parse(data.join("\n")));
  }
  return rest;
}

async function ask(question) {
  addMessage("user", question);
  const box = addMessage("assistant");
  const textNode = el("div", { class: "answer-text streaming" });
  box.appendChild(textNode);
  const body = { question, session_id: sessionStorage.getItem(SESSION_STORE) };
  let answered = false;
  try {
    const response = await api("/chat/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const onEvent = (event, data) => {
      if (event === "token") {
        textNode.textContent += data.text;
      } else if (event === "answer") {
        answered = true;
        if (data.session_id) sessionStorage.setItem(SESSION_STORE, data.session_id);
        renderAnswer(box, textNode, data);
        box.dataset.state = "done";
      } else if (event === "error") {
        throw new Error(data.detail);
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer = parseEvents(buffer + decoder.decode(value, { stream: true }), onEvent);
    }
    if (!answered) throw new Error("The answer stream ended early.");
  } catch (err) {
    textNode.classList.remove("streaming");
    box.classList.add("error");
    box.dataset.state = "error";
    box.appendChild(el("div", { class: "meta" }, err.message));
  }
  box.scrollIntoView({ block: "end", behavior: "smooth" });
}

async function loadRunInfo() {
  try {
    const health = await (await fetch("/health")).json();
    $("run-info").textContent = health.run_id
      ? `data as of ${health.data_as_of} · ${health.skus.toLocaleString()} SKUs · run ${health.run_id}`
      : "no pipeline results yet: run `stockpilot demo`";
  } catch (_) {
    $("run-info").textContent = "";
  }
}

function init() {
  keyFromFragment();
  if (!apiKey()) showKeyPanel(true);
  $("key-button").addEventListener("click", () => showKeyPanel($("key-panel").hidden));
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem(KEY_STORE, $("key-input").value.trim());
    $("key-input").value = "";
    showKeyPanel(false);
  });
  $("ask-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    $("question").value = "";
    $("send").disabled = true;
    try {
      await ask(question);
    } finally {
      $("send").disabled = false;
      $("question").focus();
    }
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  loadRunInfo();
}

init();
