// Line charts on uPlot (vendored from npm into /dashboard/static/vendor by `make install`).
// A chart holds named series of [x, y] points; `data-points` on its box counts the points drawn.

import { el, number, tickLabels } from "./format.js";

export const PALETTE = ["#2f6fed", "#e8590c", "#13864a", "#c2255c", "#7048e8", "#0c8599", "#a61e4d", "#5c940d", "#862e9c", "#364fc7"];

export const chartsAvailable = () => typeof window.uPlot === "function";

export class LineChart {
  constructor(parent, { title, key, xLabel = "step", height = 220 }) {
    this.box = el("div", { className: "chart" }, el("h3", {}, title));
    this.box.dataset.metricKey = key ?? title;
    this.box.dataset.points = "0";
    this.canvas = el("div");
    this.box.append(this.canvas);
    parent.append(this.box);
    this.xLabel = xLabel;
    this.height = height;
    this.series = new Map(); // name -> Map(x -> y)
    this.plot = null;
    this.names = [];
    if (!chartsAvailable()) this.canvas.append(el("p", { className: "hint" }, "chart library missing: see the notice above"));
    new ResizeObserver(() => this.plot && this.plot.setSize(this.size())).observe(this.box);
  }

  size() {
    return { width: Math.max(200, this.box.clientWidth - 16), height: this.height };
  }

  /** Add points [{x, y}] to series `name`; a repeated x keeps the latest y (a resumed job re-logs steps). */
  add(name, points) {
    if (!this.series.has(name)) this.series.set(name, new Map());
    const series = this.series.get(name);
    for (const { x, y } of points) series.set(x, y);
  }

  /** Redraw from the points held; cheap enough to call after each batch. */
  draw() {
    const names = [...this.series.keys()];
    const xs = [...new Set(names.flatMap((name) => [...this.series.get(name).keys()]))].sort((a, b) => a - b);
    const data = [xs, ...names.map((name) => xs.map((x) => (this.series.get(name).has(x) ? this.series.get(name).get(x) : null)))];
    this.box.dataset.points = String(names.reduce((n, name) => n + this.series.get(name).size, 0));
    this.box.dataset.series = names.join(",");
    if (!chartsAvailable()) return;
    if (this.plot && names.join("\u0000") === this.names.join("\u0000")) {
      this.plot.setData(data);
      return;
    }
    this.plot?.destroy();
    this.names = names;
    this.plot = new window.uPlot({
      ...this.size(),
      scales: { x: { time: false } },
      axes: [{ label: this.xLabel }, { values: (u, splits) => tickLabels(splits), size: 70 }],
      series: [{ label: this.xLabel }, ...names.map((name, i) => ({
        label: name, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, value: (u, v) => number(v)
      }))],
    }, data, this.canvas);
  }
}

/** Mean ± std per category: a point at the mean with a whisker of one std either side. */
export function pointPlot(parent, { title, key, labels, means, stds, yLabel }) {
  const box = el("div", { className: "chart" }, el("h3", {}, title));
  box.dataset.metricKey = key ?? title;
  box.dataset.points = String(means.filter((mean) => mean != null).length);
  parent.append(box);
  if (!chartsAvailable()) {
    box.append(el("p", { className: "hint" }, "chart library missing: see the notice above"));
    return box;
  }
  const xs = labels.map((_, i) => i);
  const whiskers = (u) => {
    const { ctx } = u;
    ctx.save();
    ctx.strokeStyle = PALETTE[0];
    ctx.lineWidth = 1.5 * devicePixelRatio;
    means.forEach((mean, i) => {
      if (mean == null || stds[i] == null) return;
      const x = u.valToPos(i, "x", true);
      const [top, bottom] = [u.valToPos(mean + stds[i], "y", true), u.valToPos(mean - stds[i], "y", true)];
      const cap = 5 * devicePixelRatio;
      ctx.beginPath();
      ctx.moveTo(x, top); ctx.lineTo(x, bottom);
      ctx.moveTo(x - cap, top); ctx.lineTo(x + cap, top);
      ctx.moveTo(x - cap, bottom); ctx.lineTo(x + cap, bottom);
      ctx.stroke();
    });
    ctx.restore();
  };
  const spread = means.flatMap((mean, i) => (mean == null ? [] : [mean - (stds[i] || 0), mean + (stds[i] || 0)]));
  const canvas = el("div");
  box.append(canvas);
  new window.uPlot({
    width: Math.max(300, box.clientWidth - 16), height: 260,
    scales: { x: { time: false, range: [-0.5, labels.length - 0.5] },
      y: { range: spread.length ? [Math.min(...spread) * 0.95, Math.max(...spread) * 1.05 || 1] : [0, 1] } },
    axes: [{ splits: () => xs, values: () => labels, size: 60 }, { label: yLabel }],
    series: [{ label: "cell", value: (u, i) => (i == null ? "--" : labels[i] ?? "--") }, { label: yLabel || "mean", stroke: PALETTE[0], paths: () => null, points: { show: true, size: 9, fill: PALETTE[0] } }],
    hooks: { draw: [whiskers] },
  }, [xs, means], canvas);
  return box;
}
