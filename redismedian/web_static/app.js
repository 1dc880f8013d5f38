// redismedian web: the live page.  Everything comes from the page server's event stream (/events),
// one update per change; the strategy list pages through /api/strategies.  No data is ever put into
// the page as HTML: text goes in through textContent, and the chart (SVG made by the server from
// numbers) through DOMParser, which runs no script.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let view = null;
  let offset = 0;            // Redis server's clock minus this browser's clock, in ms
  let lastContact = 0;       // Date.now() of the last message from the page server
  let connected = false;
  let lostSince = null;
  // filter null: not chosen yet: every strategy (problems first) when there are at most FEW of them,
  // else the problems only (10,000s of strategies page through the server's list).
  let list = { filter: null, q: "", page: 0, pages: 1, version: -1, busy: false };
  const FEW = 50;
  const filterNow = () => list.filter || (view && view.counts.strategies.total <= FEW ? "all" : "problems");

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const c of [].concat(children === undefined ? [] : children)) {
      e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "" : String(c)));
    }
    return e;
  }
  const dash = (x) => (x === null || x === undefined || x === "" ? "–" : String(x));
  const serverNow = () => Date.now() + offset;
  function hms(ms) { return ms ? new Date(ms).toISOString().slice(11, 19) : "–"; }
  function dateTime(ms) { return ms ? new Date(ms).toISOString().slice(0, 19).replace("T", " ") + " UTC" : "–"; }
  function age(s) {
    if (s === null || s === undefined || isNaN(s)) return "–";
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 120) return Math.round(s) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }
  // Seconds since the last read, to add to ages measured at that read.
  function sinceRead() {
    return view && view.server_time_ms ? Math.max(0, (serverNow() - view.server_time_ms) / 1000) : 0;
  }
  function show(id, text) {
    const b = $(id);
    b.hidden = !text;
    b.textContent = text || "";
  }

  // -- the event stream -------------------------------------------------------------------------
  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("clock", (e) => {
      const d = JSON.parse(e.data);
      if (d.server_ms) offset = d.server_ms - Date.now();
      contact();
    });
    source.addEventListener("state", (e) => {
      view = JSON.parse(e.data);
      contact();
      render();
    });
    source.onopen = contact;
    source.onerror = () => {
      connected = false;
      if (lostSince === null) lostSince = Date.now();
      tick();
      if (source.readyState === EventSource.CLOSED) {
        // Closed for good (e.g. 401 after the server got a new token): find out why, then retry.
        fetch("/api/state", { credentials: "same-origin" }).then((r) => {
          if (r.status === 401) window.location.assign("/login");
        }).catch(() => {}).finally(() => setTimeout(connect, 3000));
      }
    };
  }
  function contact() {
    connected = true;
    lostSince = null;
    lastContact = Date.now();
    tick();
  }

  // -- every second: ages and banners that depend on time ----------------------------------------
  function tick() {
    const now = serverNow();
    $("clock").textContent = view && view.server_time_ms ? "server time " + hms(now) + " UTC" : "";
    const silent = (Date.now() - lastContact) / 1000;
    if (!connected || silent > 40) {
      show("banner-conn", "No contact with the page server since " + new Date(lostSince || lastContact).toLocaleTimeString() +
        " (" + age((Date.now() - (lostSince || lastContact)) / 1000) + "): what you see may be old. Reconnecting…");
    } else {
      show("banner-conn", "");
    }
    if (view && view.redis_ok && view.period_ms && view.server_time_ms) {
      const old = (now - view.server_time_ms) / 1000;
      const limit = Math.max(15, 3 * view.period_ms / 1000);
      show("banner-stale", old > limit ? "The last read of Redis is " + age(old) + " old: the page server is not getting " +
        "fresh data." : "");
    } else {
      show("banner-stale", "");
    }
    if (view) {
      const h = view.headline;
      if (h.level === "ok" && h.age_s !== null && h.age_s !== undefined) {
        $("median-detail").textContent = "epoch " + h.epoch + " · " + h.count + " strateg" + (h.count === 1 ? "y" : "ies") +
          " · published " + age(h.age_s + sinceRead()) + " ago";
      }
      if (!view.redis_ok && view.down_since_ms) {
        $("banner-redis").dataset.age = age((now - view.down_since_ms) / 1000);
        show("banner-redis", redisBanner());
      }
      document.querySelectorAll("[data-age-s]").forEach((td) => {
        const s = parseFloat(td.dataset.ageS);
        td.textContent = age(s + sinceRead());
      });
    }
  }
  function redisBanner() {
    return "Redis unreachable since " + dateTime(view.down_since_ms) + " (" + ($("banner-redis").dataset.age || "") + "): " +
      view.redis_problem.replace(/[.\s]+$/, "") + ". Nothing on this page is current; it recovers by itself when Redis answers.";
  }

  // -- one update ----------------------------------------------------------------------------------
  function render() {
    const v = view;
    $("where").textContent = "namespace " + v.namespace + " · " + v.redis +
      (v.period_ms ? " · period " + v.period_ms / 1000 + " s · epoch " + dash(v.epoch) : "");
    document.body.dataset.redis = v.redis_ok ? "ok" : "down";
    if (v.redis_ok) show("banner-redis", ""); else show("banner-redis", redisBanner());
    const dataProblems = [].concat(v.stream_problem ? [v.stream_problem] : [], v.data_problems || []);
    show("banner-data", dataProblems.length ? "Problem in Redis: " + dataProblems.join("; ") : "");
    renderHeadline(v);
    renderChart(v);
    renderTrader(v);
    renderSummary(v);
    renderGenerators(v);
    renderLists(v);
    if (v.version !== list.version) fetchStrategies();
    tick();
  }

  function renderHeadline(v) {
    const h = v.headline;
    const box = $("headline");
    box.dataset.level = h.level;
    box.dataset.state = h.state || "";
    $("median-title").textContent = "· " + h.title;
    $("median-value").textContent = h.level === "ok" ? String(h.median) : (h.level === "error" ? "ERROR" : (h.level === "warn" ? h.title : "unknown"));
    $("median-detail").textContent = h.level === "ok" ? "epoch " + h.epoch : (h.epoch !== null && h.epoch !== undefined ? "last evaluated epoch " + h.epoch : "");
    $("median-reason").textContent = h.reason || "";
    const missed = $("missed");
    missed.hidden = !v.missed_text;
    missed.textContent = v.missed_text ? (v.missed_recently ? "Recently missed: " : "Missed: ") + v.missed_text : "";
    missed.dataset.recent = v.missed_recently ? "yes" : "no";
    const health = $("health");
    health.dataset.healthy = v.health.healthy ? "yes" : "no";
    health.textContent = v.health.healthy ? v.health.text : (v.health.text ? "check: " + v.health.text.slice(0, 600) : "");
  }

  function renderChart(v) {
    const c = v.chart;
    $("chart-span").textContent = c.span ? (c.seconds >= 3600 ? "hour" : c.span + " epochs (" + age(c.seconds) + ")") : "hour";
    $("chart-counts").textContent = c.span ? c.published + " published, " + c.error + " in error, " + c.missed + " missed, " +
      c.unknown + " without record, of " + c.span + " epochs" : "";
    const doc = new DOMParser().parseFromString(c.svg, "image/svg+xml");
    const svg = doc.documentElement;
    if (svg && svg.nodeName === "svg") $("chart").replaceChildren(document.importNode(svg, true));
  }

  // A process id ("host:pid:random", "owner|fence") may break after its separators only.
  function whoCell(text) {
    const parts = String(text).split(/(?<=[:|])/);
    const children = [];
    parts.forEach((p, i) => { if (i) children.push(el("wbr")); children.push(p); });
    return el("td", { class: "who" }, children);
  }
  // Each cell carries its column's header, shown in front of it on a narrow screen (style.css).
  function labelled(body) {
    const heads = Array.from(body.closest("table").querySelectorAll("thead th")).map((th) => th.textContent);
    for (const tr of body.rows) {
      if (tr.cells.length !== heads.length) continue;
      Array.from(tr.cells).forEach((td, i) => { td.dataset.label = heads[i]; });
    }
  }
  function stateCell(state) {
    return el("td", { class: "state state-" + state }, state);
  }
  function ageCell(s) {
    return s === null || s === undefined ? el("td", {}, "–") : el("td", { "data-age-s": String(s) }, age(s + sinceRead()));
  }

  function renderTrader(v) {
    const body = $("trader-body");
    const t = v.trader;
    const rows = [];
    if (t) {
      rows.push(el("tr", { id: "trader-row", "data-state": t.state }, [
        el("td", {}, "leading trader"), stateCell(t.state), el("td", {}, dash(t.epoch)),
        el("td", {}, dash(t.median)), el("td", {}, dash(t.count)), ageCell(t.age_s),
        whoCell((t.leader ? t.leader.split("|")[0] : "–") + (t.fence !== null && t.fence !== undefined ? " (fence " + t.fence + ")" : "")),
        el("td", { class: "reason" }, (t.reason || "") + (t.action_error ? " · --on-median action failed: " + t.action_error : "")),
      ]));
    }
    for (const p of v.traders || []) {
      rows.push(el("tr", { class: "process", "data-role": p.role }, [
        el("td", {}, "process"), el("td", { class: "state state-" + (p.role === "leader" ? "ok" : "standby") }, p.role),
        el("td", {}, ""), el("td", {}, ""), el("td", {}, ""), ageCell(p.age_s), whoCell(p.owner),
        el("td", { class: "reason" }, p.role === "standby" ? "stands by (takes over if the leader dies)" : (p.reason || "")),
      ]));
    }
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "8", class: "muted" }, "nothing read yet")));
    body.replaceChildren(...rows);
    labelled(body);
  }

  function counts(byState) {
    return Object.entries(byState || {}).map(([s, n]) => el("span", { class: "pill state-" + s }, n + " " + s));
  }
  function renderSummary(v) {
    const g = v.counts.generators, s = v.counts.strategies;
    $("summary").replaceChildren(
      el("div", {}, [el("strong", {}, g.total + " generator" + (g.total === 1 ? "" : "s")), " ", ...counts(g.by_state)]),
      el("div", { id: "summary-strategies" }, [el("strong", {}, s.registered + " registered strateg" + (s.registered === 1 ? "y" : "ies")),
        " ", ...counts(s.by_state), s.unregistered ? el("span", { class: "muted" }, " · " + s.unregistered + " not registered") : ""]),
      el("div", {}, (v.traders || []).length + " trader process" + ((v.traders || []).length === 1 ? "" : "es") + " (" +
        (v.traders || []).map((p) => p.role).join(", ") + ")"),
    );
  }

  function partRow(r, withRegistered) {
    const cells = [el("td", { class: "name" }, r.name)];
    if (withRegistered) cells.push(el("td", {}, r.registered ? "yes" : "no"));
    cells.push(stateCell(r.state), el("td", {}, dash(r.value)), el("td", {}, dash(r.epoch)), ageCell(r.age_s),
      el("td", { class: "reason" }, r.reason || ""));
    return el("tr", { "data-name": r.name, "data-state": r.state }, cells);
  }
  function renderGenerators(v) {
    const rows = v.generators.map((r) => partRow(r, false));
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "6", class: "muted" }, "no generator in Redis")));
    $("generators-body").replaceChildren(...rows);
    labelled($("generators-body"));
    $("generators-more").textContent = v.generators_more ? "and " + v.generators_more + " more (ok ones last)" : "";
  }

  // -- the strategy list: paged and filtered by the page server, from its last read ---------------
  function fillFilter(v) {
    const sel = $("filter");
    const s = v.counts.strategies;
    const opts = [["problems", "problems (" + s.problems + ")"], ["all", "all (" + s.total + ")"],
      ["registered", "registered (" + s.registered + ")"], ["unregistered", "not registered (" + s.unregistered + ")"]];
    for (const [state, n] of Object.entries(s.by_state || {})) opts.push([state, state + " (" + n + ")"]);
    const f = filterNow();
    if (!opts.some(([k]) => k === f)) opts.push([f, f + " (0)"]);
    sel.replaceChildren(...opts.map(([k, label]) => el("option", { value: k }, label)));
    sel.value = f;
  }
  function fetchStrategies() {
    if (!view || list.busy) return;
    list.busy = true;
    const want = view.version;
    const filter = filterNow();
    const qs = new URLSearchParams({ filter: filter, q: list.q, page: String(list.page) });
    fetch("/api/strategies?" + qs.toString(), { credentials: "same-origin" })
      .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
      .then((d) => {
        list.version = d.version;
        list.page = d.page;
        list.pages = d.pages;
        const rows = d.rows.map((r) => partRow(r, true));
        if (!rows.length) {
          rows.push(el("tr", {}, el("td", { colspan: "7", class: "muted" },
            filter === "problems" && !list.q ? "no problem: every registered strategy is ok" : "none")));
        }
        $("strategies-body").replaceChildren(...rows);
        labelled($("strategies-body"));
        $("page-info").textContent = d.total ? "page " + (d.page + 1) + " of " + d.pages + " · " + d.total + " strateg" +
          (d.total === 1 ? "y" : "ies") : "";
        $("prev").disabled = d.page <= 0;
        $("next").disabled = d.page >= d.pages - 1;
        fillFilter(view);
      })
      .catch((status) => { if (status === 401) window.location.assign("/login"); })
      .finally(() => {
        list.busy = false;
        if (view && view.version !== want && view.version !== list.version) fetchStrategies();
      });
  }

  function renderLists(v) {
    const med = v.medians.map((m) => el("tr", { "data-epoch": String(m.epoch) }, [
      el("td", {}, m.epoch), el("td", { class: "median" }, String(m.median)), el("td", {}, m.count),
      el("td", {}, hms(m.ts)), el("td", {}, m.fence)]));
    if (!med.length) med.push(el("tr", {}, el("td", { colspan: "5", class: "muted" }, "none seen yet")));
    $("medians-body").replaceChildren(...med);
    labelled($("medians-body"));
    const evs = v.events.map((e) => el("tr", { "data-status": e.status }, [
      el("td", { class: "epochs" }, e.epoch === e.last ? String(e.epoch) : e.epoch + "–" + e.last), stateCell(e.status),
      el("td", {}, hms(e.ts)), el("td", { class: "reason" }, e.reason)]));
    if (!evs.length) evs.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, "none in the recent history")));
    $("events-body").replaceChildren(...evs);
    labelled($("events-body"));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("filter").append(el("option", { value: "problems" }, "problems"));
    $("filter").addEventListener("change", (e) => { list.filter = e.target.value; list.page = 0; list.version = -1; fetchStrategies(); });
    let typing = null;
    $("search").addEventListener("input", (e) => {
      clearTimeout(typing);
      typing = setTimeout(() => { list.q = e.target.value; list.page = 0; list.version = -1; fetchStrategies(); }, 250);
    });
    $("prev").addEventListener("click", () => { list.page = Math.max(0, list.page - 1); list.version = -1; fetchStrategies(); });
    $("next").addEventListener("click", () => { list.page = Math.min(list.pages - 1, list.page + 1); list.version = -1; fetchStrategies(); });
    connect();
    setInterval(tick, 1000);
  });
})();
