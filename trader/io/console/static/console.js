// tradeloop console: renders the trader's live snapshot (server-sent events) with DOM nodes.
// Every value from the trader is set with textContent: nothing is parsed as HTML.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  let last = null;
  let period = "session";

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function usd(v) {
    if (v === null || v === undefined) return "–";
    const s = Math.abs(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    return (v < 0 ? "−$" : "$") + s;
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "–";
    return typeof v === "number" ? v.toFixed(digits === undefined ? 2 : digits) : String(v);
  }
  function pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(0) + "%"; }
  function time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toISOString().slice(11, 19);
  }
  function age(iso) {
    if (!iso) return "–";
    const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
    return s < 90 ? s.toFixed(0) + " s" : s < 5400 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h";
  }
  function signed(node, v) {
    node.classList.remove("pos", "neg");
    if (typeof v === "number" && v !== 0) node.classList.add(v > 0 ? "pos" : "neg");
  }
  function setText(id, text) { $(id).textContent = text; }

  // cols: [header, (row) => value, "num" | "wrap" | ""]
  function table(id, cols, rows, empty) {
    const t = $(id);
    const head = el("thead"), tr = el("tr");
    for (const [h, , cls] of cols) { const th = el("th", cls === "num" ? "num" : "", h); th.scope = "col"; tr.append(th); }
    head.append(tr);
    const body = el("tbody");
    if (!rows.length) {
      const r = el("tr", "empty"), td = el("td", "", empty);
      td.colSpan = cols.length; r.append(td); body.append(r);
    }
    for (const row of rows) {
      const r = el("tr", row.strategy === "ALL" ? "total" : "");
      for (const [, get, cls] of cols) {
        const v = get(row);
        const td = el("td", cls || "");
        if (v instanceof Node) td.append(v); else td.textContent = v === null || v === undefined ? "–" : String(v);
        r.append(td);
      }
      body.append(r);
    }
    t.replaceChildren(head, body);
  }
  function facts(id, pairs) {
    const dl = $(id); const out = [];
    for (const [k, v] of pairs) { out.push(el("dt", "", k)); out.push(v instanceof Node ? wrap("dd", v) : el("dd", "", v)); }
    dl.replaceChildren(...out);
  }
  function wrap(tag, child) { const n = el(tag); n.append(child); return n; }
  function list(id, items, fmt) {
    const ul = $(id);
    ul.replaceChildren(...(items.length ? items.map((x) => el("li", "", fmt(x))) : [el("li", "empty", "none")]));
  }
  function tag(yes, text) { return el("span", "tag " + (yes ? "tag-yes" : "tag-no"), text); }

  function chart(curve) {
    const svg = $("equity");
    const W = 640, H = 180, P = 8;
    const pts = curve.points;
    const nodes = [svg.querySelector("title")];
    const vals = pts.map((p) => p[1]).concat([0]);
    let lo = Math.min(...vals), hi = Math.max(...vals);
    if (hi - lo < 1) { hi += 1; lo -= 1; }
    const y = (v) => P + (H - 2 * P) * (1 - (v - lo) / (hi - lo));
    for (let i = 0; i <= 3; i++) {
      const g = document.createElementNS(SVG, "line");
      const gy = P + ((H - 2 * P) * i) / 3;
      g.setAttribute("class", "grid"); g.setAttribute("x1", 0); g.setAttribute("x2", W);
      g.setAttribute("y1", gy); g.setAttribute("y2", gy); nodes.push(g);
    }
    const zero = document.createElementNS(SVG, "line");
    zero.setAttribute("class", "zero"); zero.setAttribute("x1", 0); zero.setAttribute("x2", W);
    zero.setAttribute("y1", y(0)); zero.setAttribute("y2", y(0)); nodes.push(zero);
    if (pts.length) {
      const series = [[0, 0]].concat(pts.map((p, i) => [i + 1, p[1]]));
      const x = (i) => (W * i) / Math.max(1, series.length - 1);
      const d = series.map(([i, v], k) => (k ? "L" : "M") + x(i).toFixed(1) + " " + y(v).toFixed(1)).join(" ");
      const area = document.createElementNS(SVG, "path");
      area.setAttribute("class", "area");
      area.setAttribute("d", d + " L" + W + " " + y(0).toFixed(1) + " L0 " + y(0).toFixed(1) + " Z");
      const line = document.createElementNS(SVG, "path");
      line.setAttribute("class", "line"); line.setAttribute("d", d);
      nodes.push(area, line);
    }
    svg.replaceChildren(...nodes);
    svg.dataset.points = String(pts.length);
    setText("equity-caption", pts.length
      ? `Realised equity (${period}) after each of ${pts.length} closed trades: ${usd(lo)} to ${usd(hi)}.`
      : `No closed trades yet (${period}).`);
  }

  function account(a) {
    const c = a[period];
    setText("kpi-realised", usd(c.realised_usd)); signed($("kpi-realised"), c.realised_usd);
    setText("kpi-open", usd(a.open_pnl_usd)); signed($("kpi-open"), a.open_pnl_usd);
    setText("kpi-dd", usd(c.drawdown_usd)); setText("kpi-maxdd", usd(c.max_drawdown_usd));
    setText("kpi-trades", a.trades);
    chart(c);
    table("positions", [["Symbol", (p) => p.symbol], ["Qty", (p) => p.quantity, "num"], ["Avg", (p) => num(p.avg_price), "num"],
      ["Last", (p) => num(p.last_price), "num"], ["Stop", (p) => num(p.stop), "num"], ["Target", (p) => num(p.target), "num"],
      ["Open PnL", (p) => usd(p.open_pnl_usd), "num"]], a.positions, "flat");
    table("orders", [["Symbol", (o) => o.symbol], ["Role", (o) => o.role], ["Side", (o) => o.side], ["Qty", (o) => o.quantity, "num"],
      ["Type", (o) => o.type], ["Stop", (o) => num(o.stop_price), "num"], ["Limit", (o) => num(o.limit_price), "num"]],
      a.working_orders, "no working orders");
    table("fills", [["Time", (e) => time(e.at)], ["Event", (e) => e.type], ["Symbol", (e) => e.symbol], ["Role", (e) => e.role],
      ["Side", (e) => e.side], ["Qty", (e) => e.quantity, "num"], ["Price", (e) => num(e.fill_price ?? e.stop_price ?? e.limit_price), "num"],
      ["Reason", (e) => e.reason, "wrap"]], a.order_events, "no order events yet");
  }

  function signals(s) {
    table("decisions", [["Time", (d) => time(d.at)], ["Symbol", (d) => d.symbol], ["Strategy", (d) => d.strategy],
      ["Side", (d) => d.side], ["Taken", (d) => tag(d.taken, d.taken ? "taken" : "skipped")], ["Chosen", (d) => d.chosen],
      ["P(chosen)", (d) => num(d.chosen ? d.probabilities[d.chosen] : null, 2), "num"], ["Pred. R", (d) => num(d.predicted_r), "num"],
      ["Size ×", (d) => num(d.size_multiplier), "num"], ["Qty", (d) => d.contracts, "num"], ["Path", (d) => d.path + (d.variant !== "champion" ? " · " + d.variant : "")],
      ["Reason", (d) => d.reason, "wrap"]], s.decisions, "no decisions yet");
    table("today", [["Symbol", (r) => r.symbol], ["Strategy", (r) => r.strategy], ["Signals", (r) => r.signals, "num"],
      ["Taken", (r) => r.taken, "num"], ["Trades", (r) => r.trades, "num"], ["Win rate", (r) => pct(r.win_rate), "num"],
      ["Avg R", (r) => num(r.avg_r), "num"], ["PnL", (r) => usd(r.pnl_usd), "num"], ["Max DD", (r) => usd(r.max_drawdown_usd), "num"],
      ["CF avg R", (r) => num(r.counterfactual_avg_r), "num"]], s.today, "no signals today");
  }

  function models(m) {
    const g = m.gate;
    const c = m.canary;
    facts("models", [["Release", m.release || "none"], ["Path", m.path], ["Age", age(m.loaded_at)], ["Swaps", m.swaps],
      ["Versions", Object.entries(m.versions).map(([k, v]) => k + " " + v).join(", ") || "–"],
      ["Metrics", Object.entries(m.metrics).map(([f, ms]) => f + ": " + Object.entries(ms).map(([k, v]) => k + " " + num(v, 3)).join(" ")).join("; ") || "–"],
      ["Gate", g ? g.decision + (g.reasons.length ? " (" + g.reasons.join("; ") + ")" : "") : "–"],
      ["Canary", c ? c.mode + " · share " + num(c.share, 2) + (c.challenger ? " · challenger " + (c.challenger.release || "") : "") : m.canary_mode],
      ["Comparison", c && c.decisions ? Object.entries(c.decisions).map(([k, v]) => k + " " + v).join(", ") : "–"]]);
    list("swaps", m.last_swaps, (s) => `${time(s.at)} ${s.release} (seq ${s.sequence ?? "–"}, ${s.kind}) from ${s.source}, replaced ${s.replaced ?? "–"}`);
    list("rejections", m.last_rejections, (r) => `${time(r.at)} ${r.code}: ${r.release ?? "?"} (seq ${r.sequence ?? "–"}) ${r.detail || ""}`);
  }

  function health(h) {
    const pill = $("status");
    pill.textContent = h.status; pill.className = "pill pill-" + (["ok", "degraded", "halted"].includes(h.status) ? h.status : "muted");
    setText("top-mode", h.mode);
    const ks = h.kill_switch;
    facts("health", [["Entries", h.entries.allowed ? "allowed" : "refused: " + h.entries.refused_because],
      ["Kill switch", ks ? (ks.halted ? "ENGAGED by " + ks.by + ": " + ks.reason : "off") : "not configured"],
      ["Feed", h.feed.name + " · " + h.bars + " bars"], ["Venue", h.venue.name + " · " + h.venue.state],
      ["Broker link", h.broker.link + (h.broker.last_error ? " · " + h.broker.last_error : "")],
      ["Outbox depth", h.outbox_depth ?? "–"], ["Bar errors", h.bar_errors], ["Up since", time(h.started_at)],
      ["Reconciled", h.reconciliations.length ? h.reconciliations.map((r) => r.symbol + " " + r.status).join(", ") : "–"]]);
    list("drift", h.drift_alerts, (d) => `${time(d.at)} ${d.symbol} ${d.strategy} ${d.metric} ${d.detector} ${num(d.value, 3)} ${d.detail}`);
    $("kill-open").hidden = !!(ks && ks.halted);
    $("resume-open").hidden = !(ks && ks.halted);
  }

  function render(s) {
    last = s;
    account(s.account); signals(s.signals); models(s.models); health(s.health);
    setText("top-release", s.models.release || "none");
    setText("updated", "updated " + time(s.sent_at) + " UTC");
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  function connect() {
    const src = new EventSource("/ui/events");
    const link = $("link");
    src.onopen = () => { link.textContent = "live"; link.className = "dot dot-ok"; };
    src.onerror = () => { link.textContent = "reconnecting"; link.className = "dot dot-bad"; };
    src.addEventListener("state", (e) => render(JSON.parse(e.data)));
  }

  function killSwitch() {
    const dlg = $("kill-dialog");
    let action = "kill";
    const open = (what) => {
      action = what;
      setText("kill-title", what === "kill" ? "Engage the kill switch" : "Resume trading");
      setText("kill-what", what === "kill"
        ? "Cancels every working order, flattens every position and refuses new entries until resumed."
        : "Lifts the kill switch; other holds (such as a prop-firm breach) stay.");
      setText("kill-submit", what === "kill" ? "Engage" : "Resume");
      $("kill-submit").className = "btn " + (what === "kill" ? "btn-danger" : "");
      $("kill-confirm").checked = false; setText("kill-error", "");
      dlg.showModal(); $("kill-token").focus();
    };
    $("kill-open").addEventListener("click", () => open("kill"));
    $("resume-open").addEventListener("click", () => open("resume"));
    $("kill-cancel").addEventListener("click", () => dlg.close());
    $("kill-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      if (!$("kill-confirm").checked) { setText("kill-error", "Tick “I confirm” first."); return; }
      try {
        const resp = await fetch("/" + action, { method: "POST",
          headers: { "Authorization": "Bearer " + $("kill-token").value, "Content-Type": "application/json" },
          body: JSON.stringify({ by: "console", reason: $("kill-reason").value }) });
        if (!resp.ok) {
          const body = await resp.json().catch(() => ({}));
          setText("kill-error", resp.status + ": " + (body.detail || resp.statusText)); return;
        }
        $("kill-token").value = ""; dlg.close();
      } catch (err) { setText("kill-error", String(err)); }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const b of document.querySelectorAll(".tab")) {
      b.addEventListener("click", () => {
        period = b.dataset.period;
        for (const o of document.querySelectorAll(".tab")) o.setAttribute("aria-pressed", String(o === b));
        if (last) render(last);
      });
    }
    killSwitch();
    connect();
  });
})();
