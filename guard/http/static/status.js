// The status page's logic: every 2 s read the guard's JSON API and redraw headroom, worker, leases, charts, top, events.
"use strict";
(function () {
  const REFRESH_MS = 2000;
  const LEVELS = ["warn", "throttle", "pause", "free"];
  const { drawChart, formatSize } = window.HR;
  const $ = (id) => document.getElementById(id);

  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "style") node.style.cssText = v; else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const chip = (level) => h("span", { class: "chip lvl-" + level }, level);
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  function ago(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    seconds = Math.max(0, seconds);
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }
  const pct = (part, total) => (total > 0 ? Math.max(0, Math.min(100, (100 * part) / total)) : 0);

  async function getJson(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // Events need the API token unless guard.events_need_token = false; a browser has no token, so say so.
  async function getEvents(path) {
    const response = await fetch(path, { cache: "no-store" });
    if (response.status === 401) return { events: null };
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function fetchAll() {
    const [headroom, leases, events, history, top] = await Promise.all([
      getJson("/v1/headroom"), getJson("/v1/leases"), getEvents("/v1/events?limit=40"),
      getJson("/v1/history"), getJson("/v1/top?limit=8")]);
    return { headroom, leases: leases.leases, events: events.events, history, top };
  }

  function renderHeader(hr) {
    const level = hr.stale ? "stale" : hr.level;
    $("level").replaceWith(Object.assign(chip(level), { id: "level" }));
    document.title = `headroom guard: ${hr.level}` + (hr.stale ? " (signals stale)" : "");
    const parts = [`domain ${hr.domain}`, hr.admissions_open ? "admissions open" : "admissions closed",
      `${hr.leases.granted} granted, ${hr.leases.waiting} waiting`];
    if (hr.maintenance && hr.maintenance.on) parts.push(`maintenance: ${hr.maintenance.reason || "on"}`);
    $("summary").replaceChildren(parts.join(" · "),
      h("div", { class: "why" }, hr.reasons.length ? "why: " + hr.reasons.join("; ") : "all clear"),
      ...[storeLine(hr.store)].filter(Boolean));  // replaceChildren(null) would print "null"
  }

  // The state database: a line only when it cannot be written or a corrupt one was moved aside.
  function storeLine(store) {
    if (!store) return null;
    if (!store.writable) {
      return h("div", { class: "store-error", id: "store-line" },
        `state database: cannot write (${store.disk_full ? "disk full" : store.last_error}); ` +
        `${store.unrecorded} change(s) waiting in memory, new leases refused until there is room`);
    }
    if (store.corrupt_files && store.corrupt_files.length) {
      return h("div", { class: "store-error", id: "store-line" },
        `state database was corrupt and moved aside: ${store.corrupt_files.join(", ")} (see TROUBLESHOOTING.md)`);
    }
    return null;
  }

  function ticks(thresholds, total) {
    return LEVELS.filter((l) => thresholds && thresholds[l] !== undefined && total).map((level, i) => {
      const at = pct(total - thresholds[level], total);
      const place = (i % 2 ? " below" : "") + (at > 93 ? " flip" : "");
      return h("div", { class: `tick t-${level}` + place, style: `left:${at}%`,
        title: `${level} when ${formatSize(thresholds[level])} or less is free` }, h("span", { "data-short": level[0].toUpperCase() }, level));
    });
  }

  // One resource: big "available" figure, a used / reserved / free bar with threshold ticks, and the level's why.
  function renderResource(key, name, r) {
    const total = r.total_bytes || 0;
    const used = Math.max(0, total - r.available_bytes);
    const reserved = Math.min(r.reserved_bytes, r.available_bytes);
    const free = Math.max(0, r.available_bytes - reserved);
    return h("div", { class: "res", id: `res-${key}` },
      h("div", { class: "res-head" },
        h("span", {}, h("span", { class: "res-name" }, name), " ", chip(r.level)),
        h("span", {}, h("span", { class: "res-big", id: `${key}-available`, "data-bytes": r.available_bytes },
          formatSize(r.available_bytes)), h("span", { class: "muted" }, ` free of ${formatSize(total)}`))),
      h("div", { class: "bar", role: "img",
        "aria-label": `${name}: ${formatSize(used)} used, ${formatSize(reserved)} reserved, ${formatSize(free)} free` },
        h("div", { class: "seg used", style: `width:${pct(used, total)}%`, title: `used ${formatSize(used)}` }),
        h("div", { class: "seg reserved", style: `width:${pct(reserved, total)}%`, title: `reserved ${formatSize(reserved)}` }),
        ticks(r.thresholds, total)),
      h("div", { class: "figures" },
        h("span", {}, h("i", { class: "sw used" }), "used ", h("b", {}, formatSize(used))),
        h("span", {}, h("i", { class: "sw reserved" }), "reserved by leases ", h("b", {}, formatSize(r.reserved_bytes))),
        h("span", {}, h("i", { class: "sw free" }), "free ", h("b", {}, formatSize(free))),
        h("span", {}, "admissible now ", h("b", { id: `${key}-admissible` }, formatSize(r.admissible_bytes)),
          h("span", { class: "muted" }, ` (margin ${formatSize(r.margin_bytes)})`))),
      h("div", { class: "why muted" }, r.why || "no signal"));
  }

  function renderResources(hr) {
    const blocks = [renderResource("ram", `RAM (${hr.domain})`, hr.ram)];
    for (const g of hr.gpus) blocks.push(renderResource(`gpu${g.gpu}`, `GPU ${g.gpu}`, g));
    $("resources").replaceChildren(...blocks);
    const swap = hr.swap && hr.swap.free_bytes ? [h("span", { class: "signal", id: "swap-room",
      title: "swap the domain may still use, less the reserve, counts as room before a kill" }, h("b", {}, "swap room"), " ",
      `${formatSize(Math.max(0, hr.swap.free_bytes - hr.swap.reserve_bytes))} usable of ${formatSize(hr.swap.free_bytes)} free`)] : [];
    $("signals").replaceChildren(...Object.entries(hr.signals).map(([name, s]) =>
      h("span", { class: "signal", title: s.why || "" }, chip(s.level), h("b", {}, name), " ", s.why ? s.why.replace(/^[\w:]+ \w+: /, "") : "no signal")),
      ...swap);
  }

  function renderWorker(hr) {
    const w = hr.worker;
    if (!w.driven) {
      const warning = w.warning && h("p", { class: "store-error", id: "worker-warning" }, "warning: " + w.warning);
      return $("worker").replaceChildren(warning || h("p", { class: "empty" }, "no worker is driven ([guard.worker] url is empty)"));
    }
    const q = w.queue || {};
    const rows = [["state", (w.observed || "unreachable") + (w.concurrency ? ` (${w.concurrency} at a time)` : "")],
      ["wanted", w.desired.state + (w.desired.reason ? ` — ${w.desired.reason}` : "")],
      ["queue", w.queue ? `${q.production || 0} production · ${q.test || 0} test · ${q.bulk || 0} bulk` : "-"],
      ["since", w.since ? `${clock(w.since)} (${ago(hr.observed_at - w.since)} ago)` : "-"],
      ["engine", w.engine ? `${w.engine.kind}, ${w.engine.loaded ? "loaded" : "not loaded"}` : "-"],
      ["maintenance", hr.maintenance.on ? `on: ${hr.maintenance.reason}` : "off"]];
    if (w.note) rows.push(["note", w.note]);
    if (w.held_back) rows.push(["held back", w.held_back]);
    if (w.cgroup) rows.push(["cgroup", `${w.cgroup.path}: ${w.cgroup.processes} process(es)${w.cgroup.frozen ? ", frozen" : ""}`]);
    if (w.error) rows.push(["error", w.error]);
    if (w.dry_run) rows.push(["mode", "dry run: logs, never acts"]);
    $("worker").replaceChildren(h("dl", { class: "kv", id: "worker-kv" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])));
  }

  // Processes the guard froze to make room: loud, and only there while one is frozen.
  function renderFrozen(hr) {
    const frozen = hr.frozen || { processes: [] };
    $("frozen-card").hidden = !frozen.processes.length;
    const rows = frozen.processes.map((p) => h("tr", { "data-pid": String(p.pid), title: p.cgroup || "" },
      h("td", { class: "num" }, String(p.pid)), h("td", {}, h("b", {}, p.comm)), h("td", { class: "num" }, formatSize(p.rss_bytes)),
      h("td", {}, p.method), h("td", { class: "num" }, ago(p.frozen_seconds)),
      h("td", {}, `${frozen.on_no_room} in ${ago(p.no_room_in_seconds)}`), h("td", {}, p.why || p.reason),
      h("td", {}, h("code", {}, `headroom thaw ${p.pid}`))));
    $("frozen").replaceChildren(table("frozen-table", ["pid#", "process", "RSS#", "method", "frozen for#", "unless room is made",
      "why", "thaw now"], rows, "nothing is frozen"));
  }

  function table(id, headers, rows, emptyText) {
    if (!rows.length) return h("p", { class: "empty", id }, emptyText);
    const head = h("tr", {}, headers.map((x) => h("th", { class: x.endsWith("#") ? "num" : null }, x.replace("#", ""))));
    return h("div", { class: "scroll" }, h("table", { id }, h("thead", {}, head), h("tbody", {}, rows)));
  }

  function renderLeases(leases, now) {
    $("lease-count").textContent = leases.length ? `(${leases.length})` : "";
    const rows = leases.map((l) => h("tr", { "data-lease": l.id, title: l.reason || "" },
      h("td", {}, h("b", {}, l.holder)), h("td", { class: "status-" + l.status }, l.status),
      h("td", { class: "num" }, l.ram_bytes ? formatSize(l.ram_bytes) : "-"),
      h("td", { class: "num" }, l.gpu_bytes ? formatSize(l.gpu_bytes) + (l.gpu_chosen ? ` on ${l.gpu_chosen}` : "") : "-"),
      h("td", { class: "num" }, ago(now - l.created_at)), h("td", { class: "num" }, l.pid || "-"),
      h("td", { class: "num" }, l.status === "granted" ? ago(l.expires_in_seconds) : "-")));
    $("leases").replaceChildren(table("lease-table", ["holder", "status", "RAM#", "GPU#", "age#", "pid#", "expires in#"], rows,
      "no leases: nothing is reserved"));
  }

  // The charts' grid puts as many 320 px columns as fit; each chart is drawn at its column's pixel width.
  function chartWidth(count) {
    const width = $("charts").clientWidth || 640;
    const columns = Math.max(1, Math.min(count, Math.floor((width + 14) / (320 + 14))));
    return (width - 14 * (columns - 1)) / columns;
  }

  function renderCharts(history, hr) {
    const width = chartWidth(1 + hr.gpus.length);
    const ramSeries = history.samples.map((s) => ({ t: s.t, ...s.ram }));
    const charts = [h("div", { class: "chart" }, h("h3", {}, `RAM (${hr.domain})`),
      drawChart(ramSeries, history.marks, hr.ram.thresholds, history.now, history.window_seconds, width))];
    for (const g of hr.gpus) {
      const series = history.samples.filter((s) => s.gpus[g.gpu]).map((s) => ({ t: s.t, ...s.gpus[g.gpu] }));
      charts.push(h("div", { class: "chart" }, h("h3", {}, `GPU ${g.gpu}`),
        drawChart(series, history.marks, g.thresholds, history.now, history.window_seconds, width)));
    }
    $("charts").replaceChildren(...charts);
  }

  function renderTop(top) {
    const procs = top.processes.map((p) => h("tr", {}, h("td", { class: "num" }, p.pid), h("td", {}, p.comm),
      h("td", { class: "num" }, formatSize(p.rss_bytes)), h("td", { class: "unit", title: p.cgroup }, p.unit || p.cgroup || "-")));
    $("top-procs").replaceChildren(table("top-table", ["pid#", "process", "RSS#", "unit / cgroup"], procs, "no processes readable"));
    const gpus = top.gpu_processes.map((p) => h("tr", {}, h("td", {}, p.gpu), h("td", { class: "num" }, p.pid), h("td", {}, p.comm),
      h("td", { class: "num" }, formatSize(p.gpu_bytes)), h("td", { class: "unit", title: p.cgroup }, p.unit || p.cgroup || "-")));
    $("top-gpu").replaceChildren(h("h2", { style: "margin-top:14px" }, "GPU processes"),
      table("gpu-table", ["GPU", "pid#", "process", "GPU memory#", "unit / cgroup"], gpus, "no GPU processes reported"));
  }

  function renderEvents(events) {
    if (events === null) {
      $("events").replaceChildren(h("li", { class: "empty" },
        "events need the API token; set guard.events_need_token = false to show them here"));
      return;
    }
    const items = events.slice().reverse().slice(0, 30).map((e) => h("li", { class: "ev-" + e.kind, "data-kind": e.kind },
      h("time", { title: new Date(e.at * 1000).toString() }, clock(e.at)), h("span", { class: "kind" }, e.kind.replace("_", " ")),
      h("span", { class: "msg" }, e.message)));
    $("events").replaceChildren(...(items.length ? items : [h("li", { class: "empty" }, "no events yet")]));
  }

  function render(data) {
    renderHeader(data.headroom);
    renderResources(data.headroom);
    renderWorker(data.headroom);
    renderFrozen(data.headroom);
    renderLeases(data.leases, data.history.now);
    renderCharts(data.history, data.headroom);
    renderTop(data.top);
    renderEvents(data.events);
  }

  function banner(text) {
    $("banner").textContent = text || "";
    $("banner").hidden = !text;
  }

  async function refresh() {
    try {
      if (!document.hidden) await redraw();
    } finally {
      setTimeout(refresh, REFRESH_MS);  // a render bug still reaches the console as a page error
    }
  }

  async function redraw() {
    let data = null;
    try {
      data = await fetchAll();
    } catch (err) {
      return banner(`cannot read the guard: ${err.message}; showing the last answer`);
    }
    render(data);  // a bug here surfaces as a page error, not as an unreachable guard
    banner("");
    $("updated").textContent = "updated " + clock(Date.now() / 1000);
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  }

  refresh();
})();
