// An experiment (a grid of jobs): its comparison table, mean ± std of the test metric per cell,
// and the same as a point plot with one-std whiskers. Built against api/schemas/experiments.py.

import { api, features, requireKey } from "./api.js";
import { pointPlot } from "./charts.js";
import { clear, el, number, showError, statusBadge, when } from "./format.js";

const REFRESH_MS = 5000;
const experimentId = document.getElementById("page").dataset.experimentId;
const AXES = ["method", "alignment_epochs", "freeze", "pretrained"];

const cellLabel = (cell, varied) => varied.map((axis) => `${axis === "method" ? "" : `${axis}=`}${cell.params[axis]}`).join(" ") || "base";
const meanStd = (cell) => (cell.mean == null ? "—" : cell.std == null ? number(cell.mean) : `${number(cell.mean)} ± ${number(cell.std)}`);

function render(experiment) {
  const counts = Object.entries(experiment.job_counts || {}).filter(([, n]) => n).map(([status, n]) => `${n} ${status}`).join(", ");
  const facts = [["Name", experiment.name || "—"], ["Status", statusBadge(experiment.status)], ["Model", experiment.model],
    ["Training file", experiment.training_file], ["Metric", experiment.metric ? `${experiment.metric} (test, lower is better)` : "not known yet"],
    ["Jobs", counts || "none"], ["Created", when(experiment.created_at)]];
  clear(document.getElementById("experiment-facts"), ...facts.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));

  const varied = AXES.filter((axis) => new Set(experiment.cells.map((cell) => String(cell.params[axis]))).size > 1);
  const table = document.getElementById("experiment-table");
  clear(table.tHead, el("tr", {}, ...AXES.map((axis) => el("th", {}, axis)), el("th", {}, "status"),
    el("th", { className: "num" }, `${experiment.metric || "metric"} mean ± std`), el("th", { className: "num" }, "n"), el("th", {}, "jobs")));
  clear(table.tBodies[0], ...experiment.cells.map((cell) => {
    const jobs = cell.jobs.flatMap((job, i) => [i ? " " : "", el("a", { href: `/dashboard/jobs/${encodeURIComponent(job.id)}`, title: `${job.status}, test ${number(job.test_metric)}` }, `seed ${job.seed ?? "?"}`)]);
    const compare = cell.jobs.length > 1 ? [" · ", el("a", { href: `/dashboard/compare?jobs=${cell.jobs.map((job) => encodeURIComponent(job.id)).join(",")}` }, "compare")] : [];
    return el("tr", {}, ...AXES.map((axis) => el("td", {}, String(cell.params[axis]))), el("td", {}, statusBadge(cell.status)),
      el("td", { className: "num" }, meanStd(cell)), el("td", { className: "num" }, cell.n), el("td", {}, ...jobs, ...compare));
  }));

  const chartBox = clear(document.getElementById("experiment-charts"));
  pointPlot(chartBox, { title: `test ${experiment.metric || "metric"} per cell (mean ± std over seeds)`, key: "experiment",
    labels: experiment.cells.map((cell) => cellLabel(cell, varied)), means: experiment.cells.map((cell) => cell.mean),
    stds: experiment.cells.map((cell) => cell.std), yLabel: experiment.metric || "metric" });

  const allJobs = experiment.cells.flatMap((cell) => cell.jobs.map((job) => job.id));
  clear(document.getElementById("experiment-jobs"), allJobs.length
    ? el("a", { href: `/dashboard/compare?jobs=${allJobs.slice(0, 10).map(encodeURIComponent).join(",")}` }, `Compare the curves of ${Math.min(10, allJobs.length)} of its ${allJobs.length} jobs`)
    : "No jobs.");
}

async function refresh() {
  try {
    const experiment = await api(`/v1/experiments/${encodeURIComponent(experimentId)}`);
    render(experiment);
    showError(null);
    if (experiment.status === "running") setTimeout(refresh, REFRESH_MS);
  } catch (error) {
    showError(error);
  }
}

async function start() {
  if (!(await features()).experiments) {
    document.getElementById("experiment-unavailable").hidden = false;
    return;
  }
  await refresh();
}

if (requireKey()) start().catch(showError);
