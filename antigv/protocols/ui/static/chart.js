// A stacked bar chart in SVG, one bar per day and one colour per model: small enough to
// write by hand, so no charting library is shipped. Colours come from the style sheet
// (classes series-0..series-7), so the chart follows the light and dark themes.

import { fmt, h, nextId, svg } from "./dom.js";

const WIDTH = 720;
const HEIGHT = 260;
const MARGIN = { top: 12, right: 12, bottom: 34, left: 56 };
const SERIES_CLASSES = 8;

/** A round axis maximum and step for values up to ``max``. */
export function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { max: 1, step: 0.25 };
  const rough = max / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= rough);
  return { max: Math.ceil(max / step) * step, step };
}

/**
 * ``days``: the x labels (YYYY-MM-DD); ``series``: [{name, values}] with one value per day.
 * Returns a <figure> with the chart, its legend and the same figures as a table.
 */
export function stackedBars({ days, series, unit, caption }) {
  const titleId = nextId("chart");
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const scale = niceScale(Math.max(0, ...totals));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const slot = plotW / Math.max(1, days.length);
  const barW = Math.max(2, Math.min(48, slot * 0.7));
  const y = (value) => MARGIN.top + plotH - (value / scale.max) * plotH;

  const grid = svg("g", { class: "chart-grid" });
  for (let value = 0; value <= scale.max + scale.step / 2; value += scale.step) {
    grid.append(
      svg("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }),
      svg("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, fmt.compact(value)),
    );
  }

  const bars = svg("g", { class: "chart-bars" });
  const labelEvery = Math.ceil(days.length / 10);
  days.forEach((day, i) => {
    const x = MARGIN.left + slot * i + (slot - barW) / 2;
    let base = 0;
    series.forEach((s, index) => {
      const value = s.values[i] || 0;
      if (!value) return;
      const top = y(base + value);
      bars.append(
        svg(
          "rect",
          { x, y: top, width: barW, height: Math.max(1, y(base) - top), class: `series-${index % SERIES_CLASSES}` },
          svg("title", {}, `${day} · ${s.name}: ${fmt.int(value)} ${unit}`),
        ),
      );
      base += value;
    });
    if (i % labelEvery === 0) {
      bars.append(svg("text", { x: x + barW / 2, y: HEIGHT - MARGIN.bottom + 18, "text-anchor": "middle", class: "chart-label" }, day.slice(5)));
    }
  });

  const chart = svg(
    "svg",
    { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, class: "chart", role: "img", "aria-labelledby": titleId, preserveAspectRatio: "xMidYMid meet" },
    svg("title", { id: titleId }, caption),
    grid,
    bars,
  );
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((s, index) => h("li", {}, h("span", { class: ["swatch", `series-${index % SERIES_CLASSES}`], "aria-hidden": "true" }), s.name)),
  );
  const table = h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), series.map((s) => h("th", { scope: "col" }, s.name)), h("th", { scope: "col" }, "All"))),
    h(
      "tbody",
      {},
      days.map((day, i) => h("tr", {}, h("th", { scope: "row" }, day), series.map((s) => h("td", { class: "num" }, fmt.int(s.values[i] || 0))), h("td", { class: "num" }, fmt.int(totals[i])))),
    ),
  );
  return h(
    "figure",
    { class: "chart-figure" },
    chart,
    legend,
    h("details", {}, h("summary", {}, "The figures as a table"), h("div", { class: "table-wrap" }, table)),
  );
}
