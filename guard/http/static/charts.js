// The status page's charts: used and reserved memory over the last 15 minutes as inline SVG, with the guard's marks.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const H = 190, L = 64, R = 10, T = 10, B = 22; // height and plot margins in CSS pixels (the width is the card's)
  const LEVELS = ["warn", "throttle", "pause", "free"];

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function formatSize(n) {
    if (n === null || n === undefined) return "-";
    let v = Math.abs(n);
    const sign = n < 0 ? "-" : "";
    for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
      if (v < 1024 || unit === "TiB") return sign + (unit === "B" ? v.toFixed(0) : v.toFixed(1)) + " " + unit;
      v /= 1024;
    }
    return "-";
  }

  // Points of a stacked area: lower edge `lo(s)`, upper edge `hi(s)`, drawn as one closed path.
  function areaPath(samples, x, y, lo, hi) {
    if (!samples.length) return "";
    const top = samples.map((s) => `${x(s.t).toFixed(1)},${y(hi(s)).toFixed(1)}`);
    const bottom = samples.slice().reverse().map((s) => `${x(s.t).toFixed(1)},${y(lo(s)).toFixed(1)}`);
    return "M" + top.join("L") + "L" + bottom.join("L") + "Z";
  }

  function axes(svg, x, y, maxY, now, windowSeconds, W) {
    for (const frac of [0, 0.5, 1]) {
      const yy = y(maxY * frac);
      svg.appendChild(el("line", { class: "grid", x1: L, x2: W - R, y1: yy, y2: yy }));
      svg.appendChild(el("text", { class: "axis", x: L - 6, y: yy + 4, "text-anchor": "end" }, formatSize(maxY * frac)));
    }
    for (const minutes of [15, 10, 5, 0]) {
      const t = now - minutes * 60;
      if (minutes * 60 > windowSeconds) continue;
      const anchor = minutes === 15 ? "start" : minutes === 0 ? "end" : "middle";
      svg.appendChild(el("text", { class: "axis", x: x(t), y: H - 6, "text-anchor": anchor }, minutes ? `-${minutes} min` : "now"));
    }
  }

  function marksLayer(svg, marks, x, start) {
    for (const m of marks) {
      if (m.t < start) continue;
      const xx = x(m.t);
      const group = el("g", { class: "mark-" + m.kind });
      group.appendChild(el("line", { x1: xx, x2: xx, y1: T, y2: H - B }));
      group.appendChild(el("path", { d: `M${xx - 4},${T - 6}L${xx + 4},${T - 6}L${xx},${T}Z` }));  // a flag on top
      group.appendChild(el("title", {}, new Date(m.t * 1000).toLocaleTimeString() + " " + m.message));
      svg.appendChild(group);
    }
  }

  function thresholdLines(svg, thresholds, total, y, W) {
    for (const level of LEVELS) {
      if (!thresholds || thresholds[level] === undefined || !total) continue;
      const yy = y(total - thresholds[level]);
      const line = el("line", { class: "th th-" + level, x1: L, x2: W - R, y1: yy, y2: yy });
      line.appendChild(el("title", {}, `${level} from ${formatSize(thresholds[level])} free`));
      svg.appendChild(line);
    }
  }

  // series: [{t, total_bytes, used_bytes, reserved_bytes}] oldest first; marks: [{t, kind, message}]; W: pixels wide.
  function drawChart(series, marks, thresholds, now, windowSeconds, W) {
    const start = now - windowSeconds;
    const data = series.filter((s) => s.t >= start && s.used_bytes !== null);
    const maxY = Math.max(1, ...data.map((s) => s.total_bytes || 0), ...data.map((s) => s.used_bytes + s.reserved_bytes));
    W = Math.max(240, Math.floor(W || 640));
    const x = (t) => L + ((t - start) / windowSeconds) * (W - L - R);
    const y = (v) => T + (1 - Math.min(v, maxY) / maxY) * (H - T - B);
    const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img" });
    axes(svg, x, y, maxY, now, windowSeconds, W);
    thresholdLines(svg, thresholds, data.length ? data[data.length - 1].total_bytes : 0, y, W);
    svg.appendChild(el("path", { class: "area-used", d: areaPath(data, x, y, () => 0, (s) => s.used_bytes) }));
    svg.appendChild(el("path", { class: "area-reserved",
      d: areaPath(data, x, y, (s) => s.used_bytes, (s) => s.used_bytes + s.reserved_bytes) }));
    if (data.length) {
      const pts = data.map((s) => `${x(s.t).toFixed(1)},${y(s.total_bytes || 0).toFixed(1)}`).join(" ");
      svg.appendChild(el("polyline", { class: "total", points: pts }));
    }
    marksLayer(svg, marks, x, start);
    return svg;
  }

  window.HR = { drawChart, formatSize };
})();
