// Switchboard's usage charts: time-series charts (stacked bars or areas, lines, steps) drawn
// by uPlot (npm, served as vendor/uplot/), with the console's number formats, a hover
// tooltip, a legend and a data table; and the live dashboards that draw them from
// metering.dashboards' data and redraw on every WebSocket push (metering.consumers).
//
// A page opts in with <div data-usage-dashboard data-initial="json-script-id"
// data-socket="/ws/o/<org>/usage/"> holding [data-chart=<id>] containers, [data-total=<name>]
// figures, [data-groups] (a breakdown table body), [data-empty] / [data-has-usage] blocks
// and a [data-live-status] badge. It is a classic script so htmx's boosted navigation,
// which re-inserts it, runs it again for the new page.
(function () {
  "use strict";

  // Categorical colours, distinct for the common kinds of colour blindness and legible on
  // white; "Other" is grey. Named series keep their own meaning (p99 is the warm one).
  const PALETTE = ["#2f6bd6", "#17a589", "#ef9b20", "#8e5bd8", "#df5a49", "#3aa7d9"];
  const OTHER_COLOR = "#a3acb9";
  const NAMED = {
    p50: "#2f6bd6", p95: "#ef9b20", p99: "#df5a49",
    Input: "#2f6bd6", Output: "#17a589",
    "Error rate": "#d0453a", "Requests/s": "#2f6bd6",
    "Holding a GPU": "#2f6bd6", Ready: "#17a589",
  };

  // ---------------------------------------------------------------------------------
  // Numbers for people (the same rules as metering/formatting.py)

  function trimZero(text) { return text.replace(/\.0$/, ""); }

  function compact(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (abs < 10000) {
      return Number.isInteger(value) ? value.toLocaleString("en-US") : trimZero(value.toLocaleString("en-US", { maximumFractionDigits: 2 }));
    }
    for (const [size, suffix] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
      if (abs >= size) {
        const scaled = value / size;
        return trimZero(Math.abs(scaled) < 100 ? scaled.toFixed(1) : scaled.toFixed(0)) + suffix;
      }
    }
    return String(value);
  }

  function money(value) {
    if (value === null || value === undefined || value === "") return "–";
    const number = typeof value === "number" ? value : parseFloat(value);
    if (number === 0) return "$0.00";
    const sign = number < 0 ? "-" : "";
    const abs = Math.abs(number);
    if (abs >= 100000) return sign + "$" + compact(abs);
    if (abs >= 0.01) return sign + "$" + abs.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (abs >= 1e-4) return sign + "$" + parseFloat(abs.toPrecision(2)).toString();
    return sign + "<$0.0001";
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    if (value < 10) return value.toFixed(1) + " ms";
    if (value < 1000) return Math.round(value) + " ms";
    if (value < 10000) return (value / 1000).toFixed(2) + " s";
    return (value / 1000).toFixed(1) + " s";
  }

  function percent(fraction) {
    if (fraction === null || fraction === undefined) return "–";
    const value = fraction * 100;
    if (value === 0) return "0%";
    if (value < 0.1) return "<0.1%";
    if (value < 10) return trimZero(value.toFixed(1)) + "%";
    return Math.round(value) + "%";
  }

  function rps(value) {
    if (value === null || value === undefined) return "–";
    if (value === 0) return "0/s";
    if (value < 0.01) return "<0.01/s";
    if (value < 10) return trimZero(value.toFixed(2)).replace(/(\.\d)0$/, "$1") + "/s";
    return compact(Math.round(value)) + "/s";
  }

  const FORMATS = { count: compact, usd: money, ms: ms, percent: percent, rps: rps, text: (value) => (value === null ? "–" : String(value)) };

  // Axis labels: shorter, and steady across ticks (0.5, 1, 1.5 rather than 0.5, 1.0).
  function axisLabel(unit, value) {
    if (value === 0) return unit === "usd" ? "$0" : unit === "percent" ? "0%" : "0";
    if (unit === "usd") return value >= 1000 ? "$" + compact(value) : "$" + parseFloat(value.toPrecision(3));
    if (unit === "percent") return parseFloat((value * 100).toPrecision(3)) + "%";
    if (unit === "ms") return value >= 1000 ? parseFloat((value / 1000).toPrecision(3)) + " s" : parseFloat(value.toPrecision(3)) + " ms";
    if (unit === "rps") return (value >= 1000 ? compact(value) : parseFloat(value.toPrecision(3))) + "/s";
    return value >= 1000 ? compact(value) : String(parseFloat(value.toPrecision(3)));
  }

  // ---------------------------------------------------------------------------------
  // Labels

  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const fullMinute = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  const fullDay = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", year: "numeric" });

  function startLabel(t, granularity) { return granularity === "day" ? fullDay.format(t) : fullMinute.format(t); }

  function bucketLabel(t, next, granularity) {
    if (granularity === "day") return fullDay.format(t);
    return fullMinute.format(t) + " – " + timeOnly.format(next);
  }

  function html(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const key in attrs || {}) node.setAttribute(key, attrs[key]);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function colorsFor(series) {
    let next = 0;
    return series.map((s) => (s.other ? OTHER_COLOR : NAMED[s.name] || PALETTE[next++ % PALETTE.length]));
  }

  function groupColors(groups) {
    let next = 0;
    return groups.map((g) => (g.other ? OTHER_COLOR : PALETTE[next++ % PALETTE.length]));
  }

  function alpha(hex, opacity) {
    const n = parseInt(hex.slice(1), 16);
    return `rgba(${n >> 16}, ${(n >> 8) & 255}, ${n & 255}, ${opacity})`;
  }

  function summarize(spec, times, granularity) {
    const format = FORMATS[spec.unit] || compact;
    const parts = [];
    if (spec.kind === "stacked") {
      const sums = times.map((_, i) => spec.series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
      const total = sums.reduce((a, b) => a + b, 0);
      const peak = Math.max(...sums);
      parts.push("total " + format(total));
      if (peak > 0) parts.push("highest " + format(peak) + " at " + startLabel(times[sums.indexOf(peak)], granularity));
      if (spec.series.length > 1) parts.push(spec.series.map((s) => s.name + " " + format(s.values.reduce((a, b) => a + (b || 0), 0))).join(", "));
    } else {
      for (const s of spec.series) {
        const present = s.values.filter((v) => v !== null && v !== undefined);
        if (!present.length) { parts.push(s.name + ": no data"); continue; }
        parts.push(s.name + ": latest " + format(present[present.length - 1]) + ", highest " + format(Math.max(...present)));
      }
    }
    return spec.title + (spec.description ? " (" + spec.description + ")" : "") + ": " + parts.join("; ") + ".";
  }

  // ---------------------------------------------------------------------------------
  // Charts: uPlot draws; this part turns a chart spec into its data and options.

  // Ticks for counts: whole numbers only.
  const INTEGER_STEPS = [];
  for (let magnitude = 1; magnitude <= 1e12; magnitude *= 10) INTEGER_STEPS.push(magnitude, 2 * magnitude, 2.5 * magnitude, 5 * magnitude);

  // Stacked series are drawn as running totals, the top of the stack first so that each
  // lower layer paints over the one above it; the tooltip reads the series' own values.
  function plotData(spec, times, ends) {
    const mids = times.map((t, i) => (t + ends[i]) / 2);
    if (spec.kind !== "stacked") return [mids, ...spec.series.map((s) => s.values.map((v) => (v === undefined ? null : v)))];
    const running = times.map(() => 0);
    const layers = spec.series.map((s) => s.values.map((v, i) => (running[i] += v || 0)));
    return [mids, ...layers.reverse()];
  }

  function yMaximum(data, unit) {
    let max = 0;
    for (const values of data.slice(1)) for (const v of values) if (v !== null && v > max) max = v;
    if (max === 0) return unit === "percent" ? 0.01 : 1;
    return max;
  }

  function measuredAxisSize(u, values, axisIndex, cycle) {
    const axis = u.axes[axisIndex];
    if (cycle > 1) return axis._size;
    let size = axis.ticks.size + axis.gap;
    const longest = (values || []).reduce((a, v) => (String(v).length > a.length ? String(v) : a), "");
    if (longest) { u.ctx.font = axis.font[0]; size += u.ctx.measureText(longest).width / devicePixelRatio; }
    return Math.ceil(size);
  }

  // uPlot's options for a chart, and the order its series are drawn in (indexes into spec.series).
  function plotOptions(spec, context, currentContext, colors, width, height, options, hooks) {
    const stacked = spec.kind === "stacked";
    const bars = stacked && context.buckets.length <= 72; // counts per bucket: bars while they stay wide enough
    const order = stacked ? spec.series.map((_, k) => k).reverse() : spec.series.map((_, k) => k);
    const few = context.buckets.length <= 72;
    const series = order.map((k) => {
      const color = colors[k];
      const line = { label: spec.series[k].name, stroke: color, width: 2, spanGaps: false, points: { show: !stacked && spec.kind !== "step" && few, size: 5, fill: color } };
      if (bars) return { ...line, width: 0, fill: color, paths: uPlot.paths.bars({ size: [0.7, 48], align: 0 }), points: { show: false } };
      if (stacked) return { ...line, width: 1.25, fill: alpha(color, 0.78), points: { show: false } };
      if (spec.kind === "step") return { ...line, paths: uPlot.paths.stepped({ align: 1 }), fill: k === 0 ? alpha(color, 0.12) : undefined };
      return { ...line, fill: spec.series.length === 1 ? alpha(color, 0.12) : undefined };
    });
    const opts = {
      width, height, ms: 1, // times in milliseconds, shown in the browser's time zone
      legend: { show: false },
      focus: { alpha: 0.15 },
      cursor: { y: false, drag: { x: false, y: false }, points: { size: 8 } },
      scales: {
        // Read at every redraw: pushed data moves the window on as minutes pass, while the
        // plot (and these options) are kept for as long as the chart's shape stays the same.
        x: { time: true, range: () => { const now = currentContext(); return [now.buckets[0], now.end]; } },
        y: { range: (u) => [0, uPlot.rangeNum(0, yMaximum(u.data, spec.unit), 0.05, true)[1]] },
      },
      axes: [
        { stroke: "#5b6675", grid: { stroke: "#e7eaef", width: 1 }, ticks: { stroke: "#b9c1cc", width: 1, size: 4 } },
        {
          stroke: "#5b6675", grid: { stroke: "#e7eaef", width: 1 }, ticks: { show: false }, size: measuredAxisSize,
          space: options.compact ? 40 : 30,
          incrs: spec.unit === "count" ? INTEGER_STEPS : undefined,
          values: (u, splits) => splits.map((v) => axisLabel(spec.unit, v)),
        },
      ],
      series: [{}, ...series],
      hooks,
    };
    return { opts, order };
  }

  function createChart(container, options) {
    options = options || {};
    const state = { spec: null, context: null, plot: null, shape: "" };
    const frame = html("div", { class: "chart-frame", role: "img" });
    const legend = html("ul", { class: "chart-legend" });
    const tooltip = html("div", { class: "chart-tooltip", role: "presentation", hidden: "" });
    container.replaceChildren(legend, frame);
    frame.appendChild(tooltip);
    let details = null;
    if (!options.compact) {
      details = html("details", { class: "chart-data" });
      details.appendChild(html("summary", {}, "Data table"));
      container.appendChild(details);
    }

    function ends() {
      const times = state.context.buckets;
      return times.map((t, i) => (i + 1 < times.length ? times[i + 1] : state.context.end));
    }

    // The tooltip: every series' value in the bucket under the cursor.
    function showTooltip(u) {
      const i = u.cursor.idx;
      if (i === null || i === undefined || u.cursor.left < 0) { tooltip.hidden = true; return; }
      const spec = state.spec, times = state.context.buckets, bucketEnds = ends();
      const format = FORMATS[spec.unit] || compact;
      const colors = colorsFor(spec.series);
      const stacked = spec.kind === "stacked";
      tooltip.replaceChildren(html("div", { class: "chart-tooltip-title" }, bucketLabel(times[i], bucketEnds[i], state.context.granularity) + (i === times.length - 1 ? " (so far)" : "")));
      const rows = html("table", {});
      const entries = spec.series.map((s, k) => [s, k]);
      if (stacked) entries.reverse(); // top of the stack first, as drawn
      for (const [s, k] of entries) {
        const row = html("tr", {});
        const swatch = html("td", {});
        swatch.appendChild(html("span", { class: "swatch", style: `background:${colors[k]}` }));
        row.append(swatch, html("td", {}, s.name), html("td", { class: "num" }, format(s.values[i] === undefined ? null : s.values[i])));
        rows.appendChild(row);
      }
      if (stacked && spec.series.length > 1) {
        const total = spec.series.reduce((sum, s) => sum + (s.values[i] || 0), 0);
        const row = html("tr", { class: "total" });
        row.append(html("td", {}), html("td", {}, "Total"), html("td", { class: "num" }, format(total)));
        rows.appendChild(row);
      }
      tooltip.appendChild(rows);
      tooltip.hidden = false;
      const over = u.over.getBoundingClientRect(), box = frame.getBoundingClientRect();
      const anchor = over.left - box.left + u.valToPos(u.data[0][i], "x");
      const tipW = tooltip.offsetWidth;
      tooltip.style.left = Math.max(0, anchor + 14 + tipW > box.width ? anchor - 14 - tipW : anchor + 14) + "px";
      tooltip.style.top = over.top - box.top + "px";
    }

    function drawLegend(spec, colors, order) {
      legend.replaceChildren();
      // One series needs no legend; its line is still kept so charts side by side align.
      const keyless = spec.series.length < 2 && (!state.context.split || state.context.split === "none");
      legend.classList.toggle("chart-legend--blank", keyless);
      legend.hidden = keyless && Boolean(options.compact);
      spec.series.forEach((s, k) => {
        // Pointing at (or tabbing to) a legend entry brings its series forward.
        const item = html("li", { tabindex: "0" });
        item.append(html("span", { class: "swatch", style: `background:${colors[k]}` }), document.createTextNode(s.name));
        const focus = (on) => { if (state.plot) state.plot.setSeries(on ? order.indexOf(k) + 1 : null, { focus: on }); };
        item.addEventListener("pointerenter", () => focus(true));
        item.addEventListener("pointerleave", () => focus(false));
        item.addEventListener("focus", () => focus(true));
        item.addEventListener("blur", () => focus(false));
        legend.appendChild(item);
      });
    }

    function draw() {
      const spec = state.spec, context = state.context;
      if (!spec) return;
      const width = Math.max(260, frame.clientWidth || container.clientWidth || 600);
      const height = options.height || 220;
      const colors = colorsFor(spec.series);
      const data = plotData(spec, context.buckets, ends());
      const { opts, order } = plotOptions(spec, context, () => state.context, colors, width, height, options, { setCursor: [showTooltip] });
      // The same shape (kind, series, bar or area) only needs new data; another, new options.
      const shape = JSON.stringify([spec.kind, spec.unit, spec.series.map((s) => [s.name, Boolean(s.other)]), context.buckets.length <= 72, options.compact]);
      if (state.plot && shape === state.shape) {
        state.plot.setData(data);
        if (state.plot.width !== width) state.plot.setSize({ width, height });
      } else {
        if (state.plot) state.plot.destroy();
        state.plot = new uPlot(opts, data, frame);
        state.plot.over.addEventListener("pointerleave", () => { tooltip.hidden = true; });
        state.shape = shape;
      }
      frame.setAttribute("aria-label", summarize(spec, context.buckets, context.granularity));
      drawLegend(spec, colors, order);
      if (details) drawTable(details, spec, context.buckets, ends(), context.granularity, FORMATS[spec.unit] || compact);
    }

    let drawnWidth = 0;
    const observer = new ResizeObserver(() => {
      if (frame.clientWidth !== drawnWidth) { drawnWidth = frame.clientWidth; draw(); }
    });
    observer.observe(frame);
    return {
      update(spec, context) { state.spec = spec; state.context = context; draw(); },
      destroy() { observer.disconnect(); if (state.plot) state.plot.destroy(); },
    };
  }

  function drawTable(details, spec, times, ends, granularity, format) {
    const table = html("table", { class: "chart-table" });
    const head = html("tr", {});
    head.appendChild(html("th", { scope: "col" }, granularity === "day" ? "Day" : "From"));
    for (const s of spec.series) head.appendChild(html("th", { scope: "col", class: "num" }, s.name));
    const thead = html("thead", {});
    thead.appendChild(head);
    const body = html("tbody", {});
    times.forEach((t, i) => {
      const empty = (v) => v === null || v === undefined || (spec.kind !== "lines" && v === 0);
      if (spec.series.every((s) => empty(s.values[i]))) return; // buckets without data are left out
      const row = html("tr", {});
      row.appendChild(html("th", { scope: "row" }, startLabel(t, granularity)));
      for (const s of spec.series) row.appendChild(html("td", { class: "num" }, format(s.values[i] === undefined ? null : s.values[i])));
      body.appendChild(row);
    });
    table.append(thead, body);
    const caption = html("caption", {}, spec.title + (body.children.length ? " (buckets with no data are left out)" : ": no data in this range"));
    table.prepend(caption);
    const old = details.querySelector("table");
    if (old) old.replaceWith(table); else details.appendChild(table);
  }

  // ---------------------------------------------------------------------------------
  // Live dashboards

  function browserZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"; } catch (error) { return "UTC"; }
  }

  function renderGroups(body, data) {
    const colors = groupColors(data.groups);
    body.replaceChildren();
    data.groups.forEach((g, k) => {
      const row = html("tr", {});
      const name = html("th", { scope: "row" });
      name.append(html("span", { class: "swatch", style: `background:${colors[k]}` }), document.createTextNode(g.name));
      row.append(name, html("td", { class: "num" }, compact(g.requests)), html("td", { class: "num" }, compact(g.tokens)));
      if (data.show_cost) row.appendChild(html("td", { class: "num" }, money(g.cost)));
      row.append(html("td", { class: "num" }, ms(g.p95)), html("td", { class: "num" }, percent(g.error_rate)));
      body.appendChild(row);
    });
  }

  function render(root, charts, data) {
    const inRange = data.totals.requests > 0;
    root.querySelectorAll("[data-empty]").forEach((node) => { node.hidden = data.has_usage; });
    root.querySelectorAll("[data-has-usage]").forEach((node) => { node.hidden = !data.has_usage; });
    const onboarding = root.querySelector("[data-empty]") !== null && !data.has_usage; // says it already
    root.querySelectorAll("[data-range-empty]").forEach((node) => { node.hidden = inRange || onboarding; });
    root.querySelectorAll("[data-total]").forEach((node) => {
      const value = data.totals[node.dataset.total];
      node.textContent = (FORMATS[node.dataset.format] || compact)(value === undefined ? null : value);
      if (node.dataset.noun) node.textContent += " " + node.dataset.noun + (value === 1 ? "" : "s");
      node.dataset.value = value === null || value === undefined ? "" : String(value);
    });
    const groups = root.querySelector("[data-groups]");
    if (groups) renderGroups(groups, data);
    for (const spec of data.charts) {
      const container = root.querySelector(`[data-chart="${spec.id}"]`);
      if (!container) continue;
      if (!charts[spec.id]) charts[spec.id] = createChart(container, { compact: container.hasAttribute("data-compact"), height: parseInt(container.dataset.height || "0", 10) || undefined });
      charts[spec.id].update(spec, data);
    }
  }

  function setStatus(root, text, live) {
    const badge = root.querySelector("[data-live-status]") || document.querySelector("[data-live-status]");
    if (!badge) return;
    badge.textContent = text;
    badge.classList.toggle("live-badge--on", live);
  }

  function initDashboard(root) {
    if (root.dataset.started) return;
    root.dataset.started = "1";
    const zone = browserZone();
    document.cookie = "sb_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; SameSite=Lax";
    document.querySelectorAll("[data-tz-field]").forEach((field) => { field.value = zone; });
    document.querySelectorAll("[data-dashboard-form]").forEach((form) => {
      form.querySelectorAll("[data-apply]").forEach((button) => { button.hidden = true; });
      form.addEventListener("change", () => form.requestSubmit());
    });

    const charts = {};
    const initial = document.getElementById(root.dataset.initial);
    let data = initial ? JSON.parse(initial.textContent) : null;
    if (data) render(root, charts, data);

    const params = new URLSearchParams({ range: (data && data.range) || "24h", split: (data && data.split) || "none", tz: zone });
    if (root.dataset.deployment) params.set("deployment", root.dataset.deployment);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}${root.dataset.socket}?${params}`;
    let socket = null, retry = 1000, stopped = false;

    function connect() {
      socket = new WebSocket(url);
      socket.onopen = () => { retry = 1000; setStatus(root, "Live", true); };
      socket.onmessage = (message) => { data = JSON.parse(message.data); render(root, charts, data); };
      socket.onclose = (event) => {
        if (stopped) return;
        if (event.code === 4404) { setStatus(root, "Live updates stopped; reload the page", false); return; }
        setStatus(root, "Reconnecting…", false);
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      };
    }
    connect();
    // Boosted navigation replaces the page without unloading it: close the socket with it.
    document.body.addEventListener("htmx:beforeSwap", () => {
      stopped = true;
      if (socket) socket.close();
      Object.values(charts).forEach((chart) => chart.destroy());
    }, { once: true });
  }

  window.SwitchboardCharts = { createChart, format: { compact, money, ms, percent, rps } };
  document.querySelectorAll("[data-usage-dashboard]").forEach(initDashboard);
})();
