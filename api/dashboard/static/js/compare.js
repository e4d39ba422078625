// Several jobs side by side: their training-loss and validation curves overlaid, and a table of
// their final test metrics. The selection lives in the URL (`?jobs=a,b,c`), so it can be shared.

import { api, listAll, requireKey } from "./api.js";
import { LineChart } from "./charts.js";
import { FINISHED, clear, el, methodOf, number, showError, statusBadge } from "./format.js";

const REFRESH_MS = 5000;
const MAX_JOBS = 10;
const chartsBox = document.getElementById("compare-charts");
const selection = () => (new URLSearchParams(location.search).get("jobs") || "").split(",").filter(Boolean).slice(0, MAX_JOBS);
let timer;

const label = (job) => `${job.suffix || job.id} (${methodOf(job)})`;

async function loadJob(id) {
  const base = `/v1/fine_tuning/jobs/${encodeURIComponent(id)}/metrics`;
  const [job, loss, validation, test] = await Promise.all([
    api(`/v1/fine_tuning/jobs/${encodeURIComponent(id)}`), listAll(base, { split: "train", key: "loss" }),
    listAll(base, { split: "validation" }), listAll(base, { split: "final_test" }),
  ]);
  return { job, loss, validation, test };
}

function renderCharts(runs) {
  clear(chartsBox);
  const loss = new LineChart(chartsBox, { title: "train loss", key: "loss" });
  const validationKeys = [...new Set(runs.flatMap((run) => run.validation.map((point) => point.key)))].sort();
  const validation = new Map(validationKeys.map((key) => [key, new LineChart(chartsBox, { title: `validation ${key}`, key: `validation:${key}` })]));
  for (const run of runs) {
    loss.add(label(run.job), run.loss.map((point) => ({ x: point.step, y: point.value })));
    for (const [key, chart] of validation) {
      chart.add(label(run.job), run.validation.filter((point) => point.key === key).map((point) => ({ x: point.step, y: point.value })));
    }
  }
  loss.draw();
  validation.forEach((chart) => chart.draw());
}

function renderTable(runs) {
  const keys = [...new Set(runs.flatMap((run) => run.test.map((point) => point.key)))].sort();
  const table = document.getElementById("compare-table");
  clear(table.tHead, el("tr", {}, ...["job", "status", "method", "model", "seed", "steps"].map((name) => el("th", {}, name)),
    ...keys.map((key) => el("th", { className: "num" }, key))));
  clear(table.tBodies[0], ...runs.map(({ job, test }) => {
    const values = new Map(test.map((point) => [point.key, point.value]));
    const row = el("tr", {},
      el("td", { className: "mono" }, el("a", { href: `/dashboard/jobs/${encodeURIComponent(job.id)}` }, job.suffix || job.id)),
      el("td", {}, statusBadge(job.status)), el("td", {}, methodOf(job)), el("td", { className: "mono" }, job.model),
      el("td", { className: "num" }, job.seed ?? "—"), el("td", { className: "num" }, job.progress ? job.progress.step : "—"),
      ...keys.map((key) => el("td", { className: "num" }, number(values.get(key)))));
    row.dataset.jobId = job.id;
    return row;
  }));
}

async function render() {
  clearTimeout(timer);
  const ids = selection();
  document.getElementById("compare-empty").hidden = ids.length > 0;
  try {
    const runs = await Promise.all(ids.map(loadJob));
    renderCharts(runs);
    renderTable(runs);
    showError(null);
    if (runs.some((run) => !FINISHED.has(run.job.status))) timer = setTimeout(render, REFRESH_MS);
  } catch (error) {
    showError(error);
  }
}

async function renderPicker() {
  const chosen = new Set(selection());
  const page = await api("/v1/fine_tuning/jobs", { params: { limit: 50 } });
  const ticks = page.data.map((job) => {
    const tick = el("input", { type: "checkbox", value: job.id, checked: chosen.has(job.id) });
    return el("label", {}, tick, " ", el("span", { className: "mono" }, job.suffix || job.id), ` ${methodOf(job)} · ${job.status}`);
  });
  clear(document.getElementById("picker-list"), ...ticks);
  document.getElementById("picker").open = chosen.size < 2;
}

document.getElementById("picker-apply").addEventListener("click", () => {
  const ids = [...document.querySelectorAll("#picker-list input:checked")].map((tick) => tick.value).slice(0, MAX_JOBS);
  history.replaceState(null, "", `?jobs=${ids.map(encodeURIComponent).join(",")}`);
  render();
});

if (requireKey()) {
  renderPicker().catch(showError);
  render();
}
