// Switchboard's usage charts: small SVG time-series charts (stacked bars or areas, lines,
// steps) with axes, gridlines, a hover tooltip, a legend and a data table, and the live
// dashboards that draw them from metering.dashboards' data and redraw on every WebSocket
// push (metering.consumers). No library: this file is all of it.
//
// A page opts in with <div data-usage-dashboard data-initial="json-script-id"
// data-socket="/ws/o/<org>/usage/"> holding [data-chart=<id>] containers, [data-total=<name>]
// figures, [data-groups] (a breakdown table body), [data-empty] / [data-has-usage] blocks
// and a [data-live-status] badge. It is a classic script so htmx's boosted navigation,
// which re-inserts it, runs it again for the new page.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const MINUTE = 60e3, HOUR = 3600e3, DAY = 86400e3;
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

  const FORMATS = { count: compact, usd: money, ms: ms, percent: percent, rps: rps };

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
  // Scales and ticks

  function niceTicks(max, count, integer) {
    if (!(max > 0)) max = integer ? 1 : 1;
    const raw = max / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / magnitude;
    let step = (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 2.5 ? 2.5 : norm <= 5 ? 5 : 10) * magnitude;
    if (integer) step = Math.max(1, Math.round(step));
    const ticks = [];
    for (let value = 0; value < max + step * 0.999; value += step) ticks.push(parseFloat(value.toPrecision(12)));
    return ticks;
  }

  const TIME_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY];

  function offsetAt(t) { return -new Date(t).getTimezoneOffset() * MINUTE; }

  // Tick times aligned in the browser's time zone: whole hours, local midnights, Mondays.
  function timeTicks(start, end, width) {
    const most = Math.max(2, Math.floor(width / 78));
    const step = TIME_STEPS.find((s) => (end - start) / s <= most) || 14 * DAY;
    const shift = step >= 7 * DAY ? 4 * DAY : 0; // the epoch was a Thursday: align weeks on Mondays
    const ticks = [];
    let local = Math.ceil((start + offsetAt(start) - shift) / step) * step + shift;
    for (let guard = 0; guard < 200; guard++, local += step) {
      const t = local - offsetAt(local);
      if (t > end) break;
      if (t >= start) ticks.push(t);
    }
    return { ticks, step };
  }

  const timeOnly = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  const dayMonth = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  const fullMinute = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  const fullDay = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", year: "numeric" });

  function isLocalMidnight(t) { const d = new Date(t); return d.getHours() === 0 && d.getMinutes() === 0; }

  function tickLabel(t, step, span) {
    if (step >= DAY) return dayMonth.format(t);
    if (isLocalMidnight(t)) return dayMonth.format(t);
    return timeOnly.format(t);
  }

  function startLabel(t, granularity) { return granularity === "day" ? fullDay.format(t) : fullMinute.format(t); }

  function bucketLabel(t, next, granularity) {
    if (granularity === "day") return fullDay.format(t);
    return fullMinute.format(t) + " – " + timeOnly.format(next);
  }

  // ---------------------------------------------------------------------------------
  // Drawing

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const key in attrs) node.setAttribute(key, attrs[key]);
    if (parent) parent.appendChild(node);
    return node;
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

  function createChart(container, options) {
    options = options || {};
    const state = { spec: null, context: null, hoverX: null };
    const frame = html("div", { class: "chart-frame" });
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

    function draw() {
      const spec = state.spec, context = state.context;
      if (!spec) return;
      const width = Math.max(260, frame.clientWidth || container.clientWidth || 600);
      const height = options.height || 220;
      const times = context.buckets;
      const ends = times.map((t, i) => (i + 1 < times.length ? times[i + 1] : context.end));
      const start = times[0], end = context.end;
      const colors = colorsFor(spec.series);
      const format = FORMATS[spec.unit] || compact;
      const stacked = spec.kind === "stacked";
      const bars = stacked && times.length <= 72; // counts per bucket: bars while they stay wide enough
      const integer = spec.unit === "count";

      // Values and the y range.
      let max = 0;
      const tops = times.map(() => 0);
      for (const s of spec.series) {
        s.values.forEach((v, i) => {
          if (v === null || v === undefined) return;
          if (stacked) { tops[i] += v; max = Math.max(max, tops[i]); } else max = Math.max(max, v);
        });
      }
      if (max === 0 && spec.unit === "percent") max = 0.01;
      const yTicks = niceTicks(max, options.compact ? 2 : 4, integer);
      const yMax = yTicks[yTicks.length - 1];

      const svg = el("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
      svg.setAttribute("aria-label", summarize(spec, times, context.granularity));
      frame.querySelectorAll("svg").forEach((old) => old.remove());
      frame.insertBefore(svg, tooltip);

      // Left margin from the widest y label, measured.
      const probe = el("text", { class: "chart-axis" }, svg);
      let labelWidth = 0;
      for (const v of yTicks) { probe.textContent = axisLabel(spec.unit, v); labelWidth = Math.max(labelWidth, probe.getComputedTextLength()); }
      probe.remove();
      const m = { top: 10, right: 14, bottom: 26, left: Math.ceil(labelWidth) + 12 };
      const plotW = width - m.left - m.right, plotH = height - m.top - m.bottom;
      const x = (t) => m.left + ((t - start) / (end - start)) * plotW;
      const y = (v) => m.top + plotH - (v / yMax) * plotH;
      const mid = (i) => (x(times[i]) + x(ends[i])) / 2;

      // Gridlines and the y axis.
      const grid = el("g", { class: "chart-grid" }, svg);
      for (const v of yTicks) {
        el("line", { x1: m.left, x2: width - m.right, y1: y(v), y2: y(v), class: v === 0 ? "chart-baseline" : "chart-gridline" }, grid);
        const label = el("text", { x: m.left - 8, y: y(v), class: "chart-axis", "text-anchor": "end", "dominant-baseline": "middle" }, grid);
        label.textContent = axisLabel(spec.unit, v);
      }
      // The x axis: ticks in local time, labels kept apart.
      const { ticks, step } = timeTicks(start, end, plotW);
      let lastRight = -Infinity;
      for (const t of ticks) {
        const px = x(t);
        el("line", { x1: px, x2: px, y1: m.top + plotH, y2: m.top + plotH + 4, class: "chart-tick" }, grid);
        const label = el("text", { x: px, y: height - 6, class: "chart-axis" + (isLocalMidnight(t) && step < DAY ? " chart-axis--day" : ""), "text-anchor": "middle" }, grid);
        label.textContent = tickLabel(t, step, end - start);
        const w = label.getComputedTextLength();
        let left = px - w / 2;
        if (left < m.left - 4) { label.setAttribute("text-anchor", "start"); label.setAttribute("x", Math.max(px, 2)); left = px; }
        if (left + w > width - 2) { label.setAttribute("text-anchor", "end"); left = px - w; }
        if (left < lastRight + 8) { label.remove(); continue; }
        lastRight = left + w;
      }

      // The data.
      const plot = el("g", { class: "chart-plot" }, svg);
      const current = times.length - 1; // the bucket in progress
      if (stacked) {
        const base = times.map(() => 0);
        spec.series.forEach((s, k) => {
          const layer = el("g", { class: "chart-series", "data-series": k }, plot);
          if (bars) {
            const g = el("g", { fill: colors[k] }, layer);
            s.values.forEach((v, i) => {
              if (!v) return;
              const x0 = x(times[i]), x1 = x(ends[i]);
              const pad = Math.min(3, (x1 - x0) * 0.18);
              const y0 = y(base[i]), y1 = y(base[i] + v);
              el("rect", { x: x0 + pad, width: Math.max(1, x1 - x0 - 2 * pad), y: y1, height: Math.max(0.5, y0 - y1), class: i === current ? "chart-bar chart-bar--current" : "chart-bar" }, g);
              base[i] += v;
            });
          } else {
            const upper = s.values.map((v, i) => base[i] + (v || 0));
            let d = "";
            times.forEach((_, i) => { d += (i ? "L" : "M") + mid(i).toFixed(1) + "," + y(upper[i]).toFixed(1); });
            for (let i = times.length - 1; i >= 0; i--) d += "L" + mid(i).toFixed(1) + "," + y(base[i]).toFixed(1);
            el("path", { d: d + "Z", fill: colors[k], class: "chart-area" }, layer);
            let top = "";
            times.forEach((_, i) => { top += (i ? "L" : "M") + mid(i).toFixed(1) + "," + y(upper[i]).toFixed(1); });
            el("path", { d: top, stroke: colors[k], class: "chart-line chart-line--thin" }, layer);
            upper.forEach((v, i) => { base[i] = v; });
          }
        });
      } else {
        const stepped = spec.kind === "step";
        spec.series.forEach((s, k) => {
          const layer = el("g", { class: "chart-series", "data-series": k }, plot);
          // Lines join the buckets that have a value: a bucket without requests has no
          // latency or error rate (not zero), and the dots show where the values are.
          // Steps (replica counts) are defined everywhere and drawn as they are.
          const runs = [];
          let run = null;
          s.values.forEach((v, i) => {
            if (v === null || v === undefined) { if (stepped) run = null; return; }
            if (!run) runs.push((run = []));
            if (stepped) run.push([x(times[i]), y(v)], [x(ends[i]), y(v)]);
            else run.push([mid(i), y(v)]);
          });
          const path = (points) => points.map(([px, py], j) => (j ? "L" : "M") + px.toFixed(1) + "," + py.toFixed(1)).join("");
          if (spec.series.length === 1 || (stepped && k === 0)) {
            const area = runs.map((points) => path(points) + "L" + points[points.length - 1][0].toFixed(1) + "," + y(0).toFixed(1) + "L" + points[0][0].toFixed(1) + "," + y(0).toFixed(1) + "Z").join("");
            if (area) el("path", { d: area, fill: colors[k], class: "chart-area chart-area--soft" }, layer);
          }
          const line = runs.map(path).join("");
          const dense = times.length > 100 && spec.series.length > 2;
          if (line) el("path", { d: line, stroke: colors[k], class: dense ? "chart-line chart-line--thin" : "chart-line" }, layer);
          if (!stepped) {
            for (const points of runs) {
              if (points.length === 1 || times.length <= 72) for (const [px, py] of points) el("circle", { cx: px, cy: py, r: times.length > 40 ? 2 : 2.6, fill: colors[k], class: "chart-dot" }, layer);
            }
          }
        });
      }

      // Hover: a guide on the nearest bucket, and a tooltip with every series' value.
      const guide = el("g", { class: "chart-hover", visibility: "hidden" }, svg);
      const band = el("rect", { y: m.top, height: plotH, class: "chart-band" }, guide);
      const dots = spec.series.map((_, k) => el("circle", { r: 4, fill: colors[k], class: "chart-hover-dot" }, guide));
      const overlay = el("rect", { x: m.left, y: m.top, width: plotW, height: plotH, fill: "transparent", class: "chart-overlay" }, svg);

      function show(px) {
        const t = start + ((px - m.left) / plotW) * (end - start);
        let i = times.findIndex((_, j) => t < ends[j]);
        if (i < 0) i = times.length - 1;
        state.hoverX = px;
        guide.setAttribute("visibility", "visible");
        band.setAttribute("x", x(times[i]));
        band.setAttribute("width", Math.max(1, x(ends[i]) - x(times[i])));
        let running = 0;
        spec.series.forEach((s, k) => {
          const v = s.values[i];
          if (v === null || v === undefined || (stacked && bars)) { dots[k].setAttribute("visibility", "hidden"); return; }
          running += stacked ? v : 0;
          dots[k].setAttribute("visibility", "visible");
          dots[k].setAttribute("cx", spec.kind === "step" ? px : mid(i));
          dots[k].setAttribute("cy", y(stacked ? running : v));
        });
        tooltip.replaceChildren();
        tooltip.appendChild(html("div", { class: "chart-tooltip-title" }, bucketLabel(times[i], ends[i], context.granularity) + (i === current ? " (so far)" : "")));
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
        const tipW = tooltip.offsetWidth;
        const anchor = mid(i);
        const left = anchor + 14 + tipW > width ? anchor - 14 - tipW : anchor + 14;
        tooltip.style.left = Math.max(0, left) + "px";
        tooltip.style.top = m.top + "px";
      }
      function hide() { state.hoverX = null; guide.setAttribute("visibility", "hidden"); tooltip.hidden = true; }
      overlay.addEventListener("pointermove", (event) => show(event.clientX - svg.getBoundingClientRect().left));
      overlay.addEventListener("pointerleave", hide);
      if (state.hoverX !== null) show(state.hoverX); else hide();

      // The legend (for more than one series) and the data table.
      legend.replaceChildren();
      // One series needs no legend; its line is still kept so charts side by side align.
      const keyless = spec.series.length < 2 && (!context.split || context.split === "none");
      legend.classList.toggle("chart-legend--blank", keyless);
      legend.hidden = keyless && Boolean(options.compact);
      spec.series.forEach((s, k) => {
        // Pointing at (or tabbing to) a legend entry brings its series forward.
        const item = html("li", { tabindex: "0" });
        item.append(html("span", { class: "swatch", style: `background:${colors[k]}` }), document.createTextNode(s.name));
        const focus = (on) => {
          svg.classList.toggle("chart-svg--focus", on);
          svg.querySelectorAll(".chart-series").forEach((layer) => layer.classList.toggle("is-focused", on && layer.dataset.series === String(k)));
        };
        item.addEventListener("pointerenter", () => focus(true));
        item.addEventListener("pointerleave", () => focus(false));
        item.addEventListener("focus", () => focus(true));
        item.addEventListener("blur", () => focus(false));
        legend.appendChild(item);
      });
      if (details) drawTable(details, spec, times, ends, context.granularity, format);
    }

    let drawnWidth = 0;
    const observer = new ResizeObserver(() => {
      if (frame.clientWidth !== drawnWidth) { drawnWidth = frame.clientWidth; draw(); }
    });
    observer.observe(frame);
    return {
      update(spec, context) { state.spec = spec; state.context = context; draw(); },
      destroy() { observer.disconnect(); },
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
