/* neurospeech dashboard page: plain JavaScript, canvas and SVG; no library, no build step, works offline.
 * It only listens: the WebSocket carries events from the dashboard server (snapshot, status, decision, early,
 * accuracy, alerts, model) and the page sends nothing back. Every list it keeps is bounded.
 * Early decisions: a provisional row (.dec.early, data-key = the word's window start) shows the word's top
 * candidate as it firms up (one step per delay, onset + 0.5 .. 2.0 s); the final decision replaces it in place
 * (.dec.word) and keeps the steps as its trail. */
"use strict";

(function () {
  const MAX_TICKER = 60;        // word decisions in the DOM
  const MAX_SLIDING = 40;       // sliding decisions in the DOM
  const MAX_SERIES = 1200;      // latency points kept
  const SERIES_WINDOW_S = 300;  // latency plot spans the last 5 min
  const SHOWN_CANDIDATES = 5;   // candidates with probability bars per word decision

  const S = {
    ws: null, state: "unknown", stateSince: null, status: {}, statusAt: null, model: null, series: [],
    counts: { word: 0, sliding: 0, word_early: 0 }, alerts: { active: [], log: [] }, retry: 0, lastFlags: [],
    measuredRate: null, decisionRate: null, dirtyPlots: true, ready: false, missed: 0,
  };
  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  // ------------------------------------------------------------------ formatting (human units)
  function pct(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    const v = 100 * x;
    return (v >= 10 || v === 0 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2)) + " %";
  }
  function probText(p) {
    if (p === null || p === undefined || !isFinite(p)) return "–";
    const v = 100 * p;
    return (v >= 10 ? v.toFixed(0) : v.toFixed(1)) + "%";
  }
  function ms(x) {
    if (x === null || x === undefined || !isFinite(x)) return "–";
    return x >= 100 ? x.toFixed(0) + " ms" : x.toFixed(1) + " ms";
  }
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function clock(t) {
    if (!t) return "–";
    return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  }
  function num(x) {
    if (x === null || x === undefined) return 0;
    if (typeof x === "object") return Object.values(x).reduce((a, b) => a + (typeof b === "number" ? b : 0), 0);
    return typeof x === "number" ? x : 0;
  }
  function quantile(sorted, q) {
    if (!sorted.length) return null;
    const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
    return sorted[i];
  }

  // ------------------------------------------------------------------ header and tiles
  function renderState() {
    const st = $("state");
    st.className = "pill state-" + S.state;
    st.textContent = S.state;
    st.dataset.state = S.state;
    $("state-since").textContent = S.stateSince
      ? "since " + clock(S.stateSince) + " (" + dur(Date.now() / 1000 - S.stateSince) + ")" : "";
    const stream = S.status.stream || {};
    $("stream").textContent = stream.name ? "stream " + stream.name + " · " + (stream.n_channels || "?") + " ch @ " +
      (stream.sfreq || "?") + " Hz" : "";
    const m = S.model || {};
    $("model").textContent = m.model_id ? "model " + m.model_id + " (" + String(m.model_sha256 || "").slice(0, 10) +
      ") · subject " + (m.subject || "?") + " · " + (m.n_candidates || "?") + " candidates" : "";
  }

  function tile(id, big, small, level) {
    const t = $(id);
    t.querySelector("b").textContent = big;
    t.querySelector("small").textContent = small || "";
    t.classList.toggle("bad", level === "bad");
    t.classList.toggle("warn", level === "warn");
  }

  function renderTiles() {
    const h = S.status || {};
    const stream = h.stream || {};
    const ti = h.timestamp_issues || {};
    const ratio = typeof ti === "object" && ti ? ti.rate_ratio : null;
    tile("t-rate", stream.sfreq ? stream.sfreq + " Hz" : "–",
      (S.measuredRate ? "measured " + S.measuredRate.toFixed(1) + " Hz" : "measured –") +
      (ratio ? " · clock ×" + ratio.toFixed(4) : ""), ratio && Math.abs(ratio - 1) > 0.005 ? "warn" : null);
    tile("t-lag", h.lag_s === undefined || h.lag_s === null ? "–" : ms(1000 * h.lag_s),
      "buffer " + (h.buffer_fill === undefined || h.buffer_fill === null ? "–" : pct(h.buffer_fill)),
      h.lag_s > 0.5 ? "warn" : null);
    const now = Date.now() / 1000;
    const recent = S.series.filter((p) => p[1] !== null && now - p[0] < 60).map((p) => p[1]).sort((a, b) => a - b);
    tile("t-latency", ms(quantile(recent, 0.5)), recent.length ? "p95 " + ms(quantile(recent, 0.95)) +
      " · last min" : "no decision in the last min");
    const pm = h.processing_ms || {};
    tile("t-proc", ms(pm.p50), pm.p99 !== undefined ? "p99 " + ms(pm.p99) + " · max " + ms(pm.max) : "");
    tile("t-cpu", h.cpu_percent === undefined || h.cpu_percent === null ? "–" : h.cpu_percent.toFixed(0) + " %",
      h.cpu_percent === undefined ? "not reported by this service" : "of one core");
    tile("t-uptime", dur(h.uptime_s), "losses " + (h.losses || 0) + " · reconnects " + (h.reconnects || 0));
    const dec = h.decisions || {};
    tile("t-decisions", String(num(dec)), "word " + (dec.word || 0) + " · sliding " + (dec.sliding || 0) +
      (dec.word_early !== undefined ? " · early " + dec.word_early : "") +
      (S.decisionRate ? " · " + S.decisionRate.toFixed(1) + "/s" : ""));
    tile("t-dropped", String(h.dropped_samples || 0), "samples · " + (h.n_gaps || 0) + " gaps",
      h.dropped_samples ? "warn" : null);
    tile("t-skipped", String(h.skipped_decisions || 0), "decisions · overruns " + (h.overruns || 0),
      h.skipped_decisions ? "warn" : null);
    const slow = num(h.slow_subscriber_events);
    tile("t-subs", String(h.subscribers === undefined ? "–" : h.subscribers), "slow events " + slow +
      " · missed here " + (S.missed || 0), slow || S.missed ? "warn" : null);
  }

  // ------------------------------------------------------------------ alerts
  function renderAlerts() {
    const box = $("alerts");
    box.replaceChildren();
    const list = S.alerts.active.slice();
    if (!S.ws || S.ws.readyState !== 1) {
      list.unshift({ id: "dashboard-server", level: "error", title: "Dashboard server unreachable",
        detail: "reconnecting… (the values below are stale)", since: null });
    }
    for (const a of list) {
      const d = el("div", "alert alert-" + a.level);
      d.dataset.alert = a.id;
      d.append(el("b", null, a.title), el("span", "detail", a.detail));
      if (a.count > 1) d.append(el("span", "count", "×" + a.count));
      if (a.since) d.append(el("span", "when", "since " + clock(a.since)));
      box.append(d);
    }
    const ol = $("alert-log");
    ol.replaceChildren();
    for (const e of S.alerts.log.slice().reverse()) {
      const li = el("li", "lv-" + e.level, clock(e.t) + " " + (e.what === "end" ? "ended: " : "") + e.title +
        (e.what === "end" ? "" : " — " + e.detail));
      ol.append(li);
    }
  }

  // ------------------------------------------------------------------ accuracy
  function renderEarlyAccuracy(box, acc) {
    const rows = (acc && acc.early) || [];
    if (!rows.length) return;
    const t = el("table", "early-acc");
    const head = el("tr");
    head.append(el("th", null, "provisional at"), el("th", null, "n"));
    for (const s of rows[0].rows) head.append(el("th", null, "top-" + s.k));
    t.append(head);
    for (const r of rows) {
      const tr = el("tr");
      tr.dataset.delay = r.delay_s;
      tr.append(el("td", null, delayText(r.delay_s)), el("td", null, r.n));
      for (const s of r.rows) {
        const td = el("td", null, pct(s.rate));
        if (s.ci) td.title = "95 % CI " + pct(s.ci[0]) + " – " + pct(s.ci[1]) + " · chance " + pct(s.chance);
        tr.append(td);
      }
      t.append(tr);
    }
    box.append(el("h3", "early-acc-title", "Provisional decisions by delay after the word onset"), t);
  }

  function renderAccuracy(acc) {
    const box = $("accuracy");
    if (!acc || (!acc.n && !(acc.early || []).length)) {
      box.replaceChildren(el("p", "empty", "no word-locked decision with a truth yet"));
      return;
    }
    box.replaceChildren();
    if (!acc.n) box.append(el("p", "empty", "no final word-locked decision with a truth yet"));
    for (const r of acc.n ? acc.rows : []) {
      const row = el("div", "acc-row");
      row.dataset.k = r.k;
      const head = el("div", "acc-head");
      head.append(el("span", "acc-k", "top-" + r.k), el("span", "acc-rate", pct(r.rate)));
      const ci = r.ci ? "95 % CI " + pct(r.ci[0]) + " – " + pct(r.ci[1]) : "";
      const chance = r.chance === null ? "chance ? (no bank size: start with --state)" :
        "chance " + pct(r.chance) + " (" + r.k + "/" + acc.n_candidates + ")";
      const detail = el("span", "acc-detail", r.hits + "/" + r.n + " · " + ci + " · " + chance);
      head.append(detail);
      if (r.p_vs_chance !== null && r.p_vs_chance !== undefined) {
        const p = r.p_vs_chance;
        head.append(el("span", p < 0.05 ? "acc-above" : "acc-detail",
          p < 0.001 ? "p < 0.001 vs chance" : "p = " + p.toFixed(3) + " vs chance"));
      }
      const scale = el("div", "acc-scale");
      const fill = el("div", "acc-fill");
      fill.style.width = (100 * (r.rate || 0)).toFixed(2) + "%";
      scale.append(fill);
      if (r.ci) {
        const c = el("div", "acc-ci");
        c.style.left = (100 * r.ci[0]).toFixed(2) + "%";
        c.style.width = (100 * (r.ci[1] - r.ci[0])).toFixed(2) + "%";
        scale.append(c);
      }
      if (r.chance !== null) {
        const ch = el("div", "acc-chance");
        ch.style.left = "calc(" + (100 * r.chance).toFixed(3) + "% - 1px)";
        ch.title = "chance " + pct(r.chance);
        scale.append(ch);
      }
      row.append(head, scale);
      box.append(row);
    }
    renderEarlyAccuracy(box, acc);
  }

  // ------------------------------------------------------------------ decisions
  function delayText(d) {
    return d === null || d === undefined || !isFinite(d) ? "+? s" : "+" + Number(d).toFixed(1) + " s";
  }
  function rankClass(rank, hasTruth) {
    return !hasTruth ? "notruth" : rank === 1 ? "hit-top1" : rank !== null && rank <= 10 ? "hit-topk" : "miss";
  }
  // a provisional decision as the compact step the server keeps with its word (from an "early" event or a snapshot)
  function toStep(e) {
    if (!e.topk) return e;
    const top = e.topk[0] || {};
    return { seq: e.seq, delay_s: e.delay_s, key: e.key, t: e.t, id: top.id, word: top.word, prob: top.prob,
      truth: e.truth, truth_rank: e.truth_rank, latency_ms: e.latency_ms };
  }
  function stepItem(st) {
    const hasTruth = !!(st.truth && st.truth.segment_id);
    const li = el("li", "step " + rankClass(st.truth_rank, hasTruth));
    li.dataset.delay = st.delay_s;
    li.dataset.id = st.id || "";
    li.dataset.seq = st.seq;
    li.title = "provisional #" + st.seq + " at onset " + delayText(st.delay_s) + (hasTruth ? " · truth at rank " +
      (st.truth_rank === null ? ">10" : st.truth_rank) : "") + " · latency " + ms(st.latency_ms);
    li.append(el("span", "sd", delayText(st.delay_s)), el("span", "sw", st.word || st.id || "—"),
      el("span", "sp", probText(st.prob)));
    return li;
  }
  function trail(steps, final) {
    const ol = el("ol", "early-trail");
    for (const st of steps) ol.append(stepItem(st));
    if (final) {
      const li = el("li", "step final");
      li.append(el("span", "sd", "final"), el("span", "sw", final.word || final.id || "—"),
        el("span", "sp", probText(final.prob)));
      ol.append(li);
    }
    return ol;
  }
  function findKey(cls, key) {
    if (key === null || key === undefined) return null;
    for (const r of $("ticker").querySelectorAll(".dec." + cls)) if (r.dataset.key === String(key)) return r;
    return null;
  }
  function provisionalRow(st) {
    const row = el("div", "dec early provisional");
    row.dataset.key = st.key;
    const head = el("div", "dec-head");
    head.append(el("span", "seq", "word at " + clock(st.t)), el("span", "mark", "provisional"),
      el("span", "lat", ""));
    const body = el("div", "dec-body");
    const truth = el("div", "truth");
    const hasTruth = !!(st.truth && st.truth.segment_id);
    truth.append(el("small", null, "heard"), el("span", "truth-word", hasTruth ? (st.truth.word || "?") : "—"));
    const prov = el("div", "prov");
    prov.append(el("small", null, "so far"), el("span", "prov-word", ""), el("span", "prov-delay", ""));
    body.append(truth, prov);
    row.append(head, body, el("ol", "early-trail"));
    return row;
  }
  function addEarly(e, bulk) {
    const st = toStep(e);
    if (findKey("word", st.key)) return;  // its final decision is already shown
    const t = $("ticker");
    const empty = t.querySelector(".empty");
    if (empty) empty.remove();
    let row = findKey("early", st.key);
    if (!row) {
      row = provisionalRow(st);
      t.prepend(row);
      while (t.children.length > MAX_TICKER) t.lastChild.remove();
    }
    const ol = row.querySelector(".early-trail");
    ol.append(stepItem(st));
    const hasTruth = !!(st.truth && st.truth.segment_id);
    row.className = "dec early provisional " + rankClass(st.truth_rank, hasTruth);
    row.dataset.delay = st.delay_s;
    row.querySelector(".prov-word").textContent = (st.word || st.id || "—") + " " + probText(st.prob);
    row.querySelector(".prov-delay").textContent = "at onset " + delayText(st.delay_s);
    row.querySelector(".lat").textContent = "latency " + ms(st.latency_ms);
    if (!bulk) {
      S.counts.word_early += 1;
      S.series.push([st.t, st.latency_ms, null, "word_early"]);
      if (S.series.length > MAX_SERIES) S.series.splice(0, S.series.length - MAX_SERIES);
      S.dirtyPlots = true;
    }
    renderCounts();
  }

  function wordRow(d) {
    const rank = d.truth_rank;
    const hasTruth = !!(d.truth && d.truth.segment_id);
    const k = Math.min(10, d.topk.length);
    const cls = !hasTruth ? "notruth" : rank === 1 ? "hit-top1" : rank !== null && rank <= k ? "hit-topk" : "miss";
    const row = el("div", "dec word " + cls);
    row.dataset.seq = d.seq;
    row.dataset.rank = rank === null ? "" : rank;
    const head = el("div", "dec-head");
    const mark = !hasTruth ? "no truth" : rank === 1 ? "✓ top-1" : rank !== null && rank <= k ?
      "◐ rank " + rank : "✗ miss";
    head.append(el("span", "seq", "#" + d.seq), el("span", "time", clock(d.t)), el("span", "mark", mark));
    if (d.flags && d.flags.length) head.append(el("span", "flags", d.flags.join(" ")));
    head.append(el("span", "lat", "latency " + ms(d.latency_ms)));
    const body = el("div", "dec-body");
    const truth = el("div", "truth");
    truth.append(el("small", null, "heard"), el("span", "truth-word", hasTruth ? (d.truth.word || "?") : "—"));
    const ol = el("ol", "cands");
    d.topk.slice(0, SHOWN_CANDIDATES).forEach((c, i) => {
      const li = el("li", "cand");
      if (hasTruth && c.id === d.truth.segment_id) li.classList.add("is-truth");
      li.dataset.id = c.id;
      li.dataset.prob = c.prob === null ? "" : c.prob;
      const bar = el("span", "bar");
      const fill = el("i");
      fill.style.width = (100 * Math.max(0, Math.min(1, c.prob || 0))).toFixed(1) + "%";
      bar.append(fill);
      li.append(el("span", "cr", c.rank || i + 1), el("span", "cw", c.word || c.id), bar,
        el("span", "cp", probText(c.prob)));
      ol.append(li);
    });
    if (!d.topk.length) ol.append(el("li", "empty", "not decoded (" + (d.flags || []).join(", ") + ")"));
    else if (hasTruth && rank !== null && rank > SHOWN_CANDIDATES) ol.append(el("li", "cr", "truth at rank " + rank));
    body.append(truth, ol);
    row.append(head, body);
    row.dataset.key = d.key === null || d.key === undefined ? "" : d.key;
    if (d.early && d.early.length) row.append(trail(d.early, d.topk[0]));
    return row;
  }

  function slideChip(d) {
    const c = el("span", "slide");
    c.dataset.seq = d.seq;
    const best = d.topk[0];
    c.append(el("b", null, best ? (best.word || best.id) : "—"), el("small", null, " " + (best ? probText(best.prob) : "")));
    c.title = "#" + d.seq + " " + clock(d.t) + " latency " + ms(d.latency_ms);
    return c;
  }

  function addDecision(d, bulk) {
    if (d.kind === "word") {
      const t = $("ticker");
      const empty = t.querySelector(".empty");
      if (empty) empty.remove();
      const prov = findKey("early", d.key);
      if (prov) prov.replaceWith(wordRow(d));  // the word's row keeps its place: provisional, then final
      else t.prepend(wordRow(d));
      while (t.children.length > MAX_TICKER) t.lastChild.remove();
      S.counts.word += bulk ? 0 : 1;
    } else {
      const s = $("sliding");
      s.prepend(slideChip(d));
      while (s.children.length > MAX_SLIDING) s.lastChild.remove();
      S.counts.sliding += bulk ? 0 : 1;
    }
    S.lastFlags = d.flags || [];
    if (!bulk) {
      S.series.push([d.t, d.latency_ms, d.processing_ms, d.kind]);
      if (S.series.length > MAX_SERIES) S.series.splice(0, S.series.length - MAX_SERIES);
      S.dirtyPlots = true;
    }
    renderCounts();
  }

  function renderCounts() {
    $("ticker-count").textContent = S.counts.word + " received" +
      (S.counts.word_early ? " · " + S.counts.word_early + " provisional" : "");
    $("sliding-count").textContent = S.counts.sliding + " received";
  }

  // ------------------------------------------------------------------ latency plots
  function setupCanvas(c) {
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 560, h = c.clientHeight || 150;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    return [ctx, w, h];
  }

  function drawSeries() {
    const c = $("lat-series");
    const [ctx, w, h] = setupCanvas(c);
    ctx.clearRect(0, 0, w, h);
    const now = Date.now() / 1000;
    const pts = S.series.filter((p) => now - p[0] <= SERIES_WINDOW_S);
    // the time axis spans the data (at least 1 min, at most SERIES_WINDOW_S)
    const span = Math.max(60, Math.min(SERIES_WINDOW_S, pts.length ? now - pts[0][0] : 60));
    const vals = pts.flatMap((p) => [p[1], p[2]]).filter((v) => v !== null && isFinite(v));
    const ymax = Math.max(10, quantile(vals.slice().sort((a, b) => a - b), 0.99) * 1.2 || 10);
    const L = 44, R = 8, T = 8, B = 18;
    ctx.strokeStyle = "#d9dde5"; ctx.fillStyle = "#667085"; ctx.font = "10px sans-serif"; ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const y = T + (h - T - B) * (1 - i / 4);
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(w - R, y); ctx.stroke();
      ctx.fillText((ymax * i / 4).toFixed(0) + " ms", 2, y + 3);
    }
    ctx.fillText("−" + dur(span), L, h - 4);
    ctx.fillText("now", w - R - 20, h - 4);
    const x = (t) => L + (w - L - R) * (1 - (now - t) / span);
    const y = (v) => T + (h - T - B) * (1 - Math.min(v, ymax) / ymax);
    const colours = { word: "#2457a6", sliding: "#9aa6bd", word_early: "#8e44ad" };
    for (const p of pts) {
      if (p[1] === null) continue;
      ctx.fillStyle = colours[p[3]] || "#333";
      ctx.fillRect(x(p[0]) - 1.5, y(p[1]) - 1.5, 3, 3);
    }
    ctx.strokeStyle = "#e08a00"; ctx.beginPath();
    let first = true;
    for (const p of pts) {
      if (p[2] === null) continue;
      if (first) { ctx.moveTo(x(p[0]), y(p[2])); first = false; } else ctx.lineTo(x(p[0]), y(p[2]));
    }
    ctx.stroke();
  }

  function drawHist() {
    const c = $("lat-hist");
    const [ctx, w, h] = setupCanvas(c);
    ctx.clearRect(0, 0, w, h);
    const vals = S.series.map((p) => p[1]).filter((v) => v !== null && isFinite(v)).sort((a, b) => a - b);
    const L = 44, R = 8, T = 6, B = 18;
    ctx.fillStyle = "#667085"; ctx.font = "10px sans-serif";
    if (!vals.length) { ctx.fillText("no latency yet", L, h / 2); return; }
    const hi = Math.max(1, quantile(vals, 0.99) * 1.1);
    const nb = 40, counts = new Array(nb).fill(0);
    for (const v of vals) counts[Math.min(nb - 1, Math.floor((v / hi) * nb))]++;
    const cmax = Math.max(...counts);
    const bw = (w - L - R) / nb;
    ctx.fillStyle = "#4c7bd9";
    counts.forEach((n, i) => {
      const bh = (h - T - B) * n / cmax;
      ctx.fillRect(L + i * bw + 0.5, h - B - bh, Math.max(1, bw - 1), bh);
    });
    ctx.fillStyle = "#667085";
    ctx.fillText("0", L, h - 4);
    ctx.fillText(hi.toFixed(0) + " ms", w - R - 40, h - 4);
    ctx.fillText("n=" + vals.length, 2, T + 8);
    const proc = S.series.map((p) => p[2]).filter((v) => v !== null && isFinite(v)).sort((a, b) => a - b);
    $("lat-legend").textContent = "latency (dots; blue word, purple provisional, grey sliding): p50 " + ms(quantile(vals, 0.5)) +
      " · p95 " + ms(quantile(vals, 0.95)) + " · max " + ms(vals[vals.length - 1]) +
      "  —  processing (orange line): p50 " + ms(quantile(proc, 0.5)) + " · p95 " + ms(quantile(proc, 0.95));
  }

  // ------------------------------------------------------------------ channel quality
  function renderQuality() {
    const box = $("quality");
    const cq = (S.status && S.status.channel_quality) || {};
    const bad = cq.bad && typeof cq.bad === "object" ? cq.bad : {};
    const interp = new Set();
    for (const f of S.lastFlags) if (f.startsWith("interpolated:")) f.slice(13).split(",").forEach((n) => interp.add(n));
    let chans = (S.model && Array.isArray(S.model.channels)) ? S.model.channels : null;
    if (!chans) {
      const n = cq.n_channels || 0;
      chans = [];
      for (let i = 0; i < n; i++) chans.push({ name: "ch" + (i + 1), pos: null });
      for (const name of Object.keys(bad)) if (!chans.some((c) => c.name === name)) chans.push({ name: name, pos: null });
    }
    const key = JSON.stringify([chans.length, bad, [...interp]]);
    if (box.dataset.key === key) return;
    box.dataset.key = key;
    box.replaceChildren();
    const layout = chans.length && chans.every((c) => Array.isArray(c.pos) && c.pos.length >= 2);
    const n = chans.length;
    let xy;
    if (layout) {
      const xs = chans.map((c) => c.pos[0]), ys = chans.map((c) => c.pos[1]);
      const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
      const sx = 88 / Math.max(1e-9, x1 - x0), sy = 88 / Math.max(1e-9, y1 - y0), s = Math.min(sx, sy);
      xy = chans.map((c) => [50 + 0.92 * (c.pos[0] - (x0 + x1) / 2) * s, 48 - 0.92 * (c.pos[1] - (y0 + y1) / 2) * s]);
    } else {
      const cols = Math.ceil(Math.sqrt(n || 1));
      xy = chans.map((c, i) => [6 + (88 * (i % cols + 0.5)) / cols, 6 + (88 * (Math.floor(i / cols) + 0.5)) / cols]);
    }
    const r = Math.max(1.2, Math.min(4, 40 / Math.sqrt(n || 1)));
    let nbad = 0;
    chans.forEach((c, i) => {
      const reasons = bad[c.name] || [];
      if (reasons.length) nbad++;
      const q = interp.has(c.name) ? "interpolated" : reasons.length ? reasons[0] : "ok";
      const dot = svg("circle", { cx: xy[i][0].toFixed(2), cy: xy[i][1].toFixed(2), r: r.toFixed(2),
        class: "qc q-" + q, fill: { ok: "#58b368", flat: "#8a94a6", saturated: "#e08a00", artefact: "#d32f2f",
          nonfinite: "#7b3fb5", interpolated: "#f2c94c" }[q] || "#d32f2f" });
      dot.dataset.channel = c.name;
      dot.dataset.quality = q;
      const title = svg("title", {});
      title.textContent = c.name + ": " + (reasons.length ? reasons.join(", ") : "ok") + (interp.has(c.name) ? " (interpolated)" : "");
      dot.append(title);
      box.append(dot);
      if (n <= 64) {
        const t = svg("text", { x: xy[i][0].toFixed(2), y: (xy[i][1] + r + 2.6).toFixed(2) });
        t.textContent = c.name;
        box.append(t);
      }
    });
    $("quality-count").textContent = n ? nbad + " of " + n + " channels bad in the last window" : "no channel information yet";
  }

  // ------------------------------------------------------------------ events
  function applyStatus(ev) {
    S.state = ev.state;
    S.stateSince = ev.state_since;
    S.status = ev.status || {};
    S.statusAt = ev.status_at;
    S.measuredRate = ev.measured_rate;
    S.decisionRate = ev.decision_rate;
    S.missed = ev.missed;
    renderState();
    renderTiles();
    renderQuality();
  }

  function handle(ev) {
    switch (ev.type) {
      case "snapshot":
        if (!S.ready) { S.ready = true; performance.mark("neurospeech-first-snapshot"); }  // for bench dashboard
        S.model = ev.model;
        S.alerts = ev.alerts;
        S.series = ev.series || [];
        S.counts = { word: ev.counts.word, sliding: ev.counts.sliding, word_early: ev.counts.word_early || 0 };
        $("ticker").replaceChildren();
        $("sliding").replaceChildren();
        for (const d of ev.sliding || []) addDecision(d, true);
        for (const d of ev.words || []) addDecision(d, true);
        for (const p of ev.early_pending || []) for (const st of p.steps) addEarly(st, true);
        if (!(ev.words || []).length && !(ev.early_pending || []).length) {
          $("ticker").append(el("p", "empty", "waiting for word-locked decisions…"));
        }
        $("endpoint").textContent = ev.endpoint || "the service";
        applyStatus(ev.status);
        renderAccuracy(ev.accuracy);
        renderAlerts();
        S.dirtyPlots = true;
        break;
      case "status": applyStatus(ev); break;
      case "decision": addDecision(ev.decision, false); break;
      case "early": addEarly(ev.early, false); break;
      case "accuracy": renderAccuracy(ev.accuracy); break;
      case "alerts": S.alerts = ev; renderAlerts(); break;
      case "model": S.model = ev.model || S.model; renderState(); renderQuality(); break;
      default: break;  // newer event kinds: ignored
    }
  }

  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(proto + location.host + "/ws");
    S.ws = ws;
    ws.onopen = () => {
      S.retry = 0;
      $("conn").textContent = "live";
      $("conn").className = "conn conn-up";
      renderAlerts();
    };
    ws.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { console.warn("bad event", e); return; }
      handle(ev);
    };
    ws.onclose = () => {
      $("conn").textContent = "dashboard server unreachable: retrying";
      $("conn").className = "conn conn-down";
      renderAlerts();
      S.retry = Math.min(S.retry + 1, 5);
      setTimeout(connect, 500 * S.retry);
    };
    ws.onerror = () => { /* onclose follows and reconnects */ };
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("show-sliding").addEventListener("change", (e) => $("sliding").classList.toggle("hidden", !e.target.checked));
    setInterval(() => { renderState(); renderTiles(); }, 1000);
    setInterval(() => {
      if (!S.dirtyPlots) return;
      S.dirtyPlots = false;
      drawSeries();
      drawHist();
    }, 500);
    setInterval(() => { S.dirtyPlots = true; }, 5000);  // the time axis moves even without new points
    connect();
  });
})();
