// One job: facts and progress, stage timeline, live curves per metric (a series per split),
// final metrics beside the classical baseline, checkpoints with downloads, and the event log.

import { api, download, follow, listAll, requireKey } from "./api.js";
import { renderBaseline } from "./baseline.js";
import { LineChart } from "./charts.js";
import { FINISHED, bytes, clear, duration, el, jobDuration, methodOf, number, progressBar, showError, statusBadge, when } from "./format.js";

const JOB_POLL_MS = 2000;
const jobId = document.getElementById("page").dataset.jobId;
const base = `/v1/fine_tuning/jobs/${encodeURIComponent(jobId)}`;
const charts = new Map(); // metric key -> LineChart
const finals = new Map(); // "final_test" -> Map(key -> value)
const events = [];
let job;

// ---- facts and progress ------------------------------------------------------------------
function renderJob() {
  const facts = [
    ["Status", statusBadge(job.status)], ["Method", methodOf(job)], ["Model", job.model],
    ["Attempt", `${job.attempt} of ${job.max_attempts}`], ["Created", when(job.created_at)],
    ["Started", when(job.started_at)], ["Finished", when(job.finished_at)], ["Duration", duration(jobDuration(job))],
    ["Training file", job.training_file], ["Validation file", job.validation_file || "—"], ["Seed", job.seed ?? "—"],
  ];
  if (job.suffix) facts.push(["Suffix", job.suffix]);
  if (job.queue_position != null) facts.push(["Queue position", job.queue_position]);
  if (job.estimated_start != null) facts.push(["Estimated start", when(job.estimated_start)]);
  if (job.cancel_requested && job.status === "running") facts.push(["Cancel", "requested"]);
  clear(document.getElementById("job-facts"), ...facts.map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value))));
  progressBar(job, document.getElementById("job-progress"));
  document.getElementById("page").dataset.status = job.status;
  const problem = document.getElementById("job-error");
  problem.hidden = !job.error;
  if (job.error) problem.textContent = `${job.error.code}: ${job.error.message}`;
  renderBaseline(job);
}

async function pollJob() {
  try {
    const wasFinished = FINISHED.has(job.status);
    job = await api(base);
    renderJob();
    renderTimeline();
    if (FINISHED.has(job.status) && !wasFinished) await loadCheckpoints();
    showError(null);
  } catch (error) {
    showError(error);
  }
  if (!FINISHED.has(job.status)) setTimeout(pollJob, JOB_POLL_MS);
}

// ---- metrics -----------------------------------------------------------------------------
function chartFor(key) {
  if (!charts.has(key)) {
    document.getElementById("charts-empty")?.remove();
    const box = document.getElementById("charts");
    const chart = new LineChart(box, { title: key, key });
    if (key === "loss") box.prepend(chart.box); // the headline curve first
    charts.set(key, chart);
  }
  return charts.get(key);
}

function addMetrics(points) {
  const touched = new Set();
  for (const point of points) {
    if (point.split.startsWith("final_")) {
      if (!finals.has(point.split)) finals.set(point.split, new Map());
      finals.get(point.split).set(point.key, point.value);
      continue;
    }
    const chart = chartFor(point.key);
    chart.add(point.split, [{ x: point.step, y: point.value }]);
    touched.add(chart);
  }
  touched.forEach((chart) => chart.draw());
  if (finals.size) renderFinals();
}

function renderFinals() {
  const keys = [...new Set([...finals.values()].flatMap((values) => [...values.keys()]))].sort();
  const table = document.getElementById("final-metrics");
  clear(table.tHead, el("tr", {}, el("th", {}, "split"), ...keys.map((key) => el("th", { className: "num" }, key))));
  clear(table.tBodies[0], ...[...finals].map(([split, values]) => el("tr", {}, el("td", {}, split.replace(/^final_/, "")),
    ...keys.map((key) => el("td", { className: "num" }, number(values.get(key)))))));
  document.getElementById("final-empty").hidden = true;
}

// ---- stages and events ---------------------------------------------------------------------
/** Consecutive runs of events in one stage; a stage ends where the next begins (or the job ends). */
function stageSpans() {
  const spans = [];
  for (const event of events) {
    const last = spans[spans.length - 1];
    if (last && last.stage === event.stage) continue;
    if (last) last.end = event.created_at;
    spans.push({ stage: event.stage, start: event.created_at, end: null });
  }
  const last = spans[spans.length - 1];
  if (last) last.end = job.finished_at || Math.max(last.start, Date.now() / 1000);
  return spans;
}

function renderTimeline() {
  const spans = stageSpans();
  const box = document.getElementById("timeline");
  if (!spans.length) return;
  const total = Math.max(1, spans[spans.length - 1].end - spans[0].start);
  clear(box, ...spans.map((span, i) => {
    const open = i === spans.length - 1 && !FINISHED.has(job.status);
    const length = span.end - span.start;
    const node = el("div", { className: `stage stage-${span.stage}${open ? " open" : ""}`,
      title: `${span.stage}: ${when(span.start)} → ${open ? "now" : when(span.end)}` },
    el("strong", {}, span.stage), el("small", {}, duration(length)));
    node.style.flexGrow = String(Math.max(length / total, 0.02));
    node.dataset.stage = span.stage;
    return node;
  }));
}

function addEvents(items, { live = true } = {}) {
  events.push(...items);
  const log = document.getElementById("events");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  log.querySelector("tbody").append(...items.map((event) => el("tr", { className: `level-${event.level}` },
    el("td", { className: "mono" }, new Date(event.created_at * 1000).toLocaleTimeString()),
    el("td", {}, event.level), el("td", {}, event.stage), el("td", {}, event.message))));
  if (atBottom) log.scrollTop = log.scrollHeight;
  renderTimeline();
  if (live && items.some((event) => event.data && event.data.checkpoint)) loadCheckpoints().catch(showError);
}

// ---- checkpoints -------------------------------------------------------------------------
async function loadCheckpoints() {
  const page = await api(`${base}/checkpoints`);
  const rows = page.data.map((checkpoint) => {
    const button = el("button", { type: "button", className: "download" }, "Download");
    button.dataset.checkpointId = checkpoint.id;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await download(`${base}/checkpoints/${encodeURIComponent(checkpoint.id)}/content`, `${checkpoint.id}.tar`);
      } catch (error) {
        showError(error);
      } finally {
        button.disabled = false;
      }
    });
    const metrics = Object.entries(checkpoint.metrics || {}).map(([key, value]) => `${key} ${number(value)}`).join(", ");
    return el("tr", {}, el("td", { className: "mono" }, checkpoint.id), el("td", {}, checkpoint.stage),
      el("td", { className: "num" }, checkpoint.step), el("td", { className: "num" }, checkpoint.epoch ?? "—"),
      el("td", {}, checkpoint.final ? "final" : ""), el("td", {}, metrics || "—"),
      el("td", { className: "num" }, bytes(checkpoint.bytes)), el("td", {}, button));
  });
  clear(document.querySelector("#checkpoints tbody"), ...rows);
  document.getElementById("checkpoints-empty").hidden = rows.length > 0;
}

// ---- start -------------------------------------------------------------------------------
async function start() {
  job = await api(base);
  renderJob();
  const [points, history] = await Promise.all([listAll(`${base}/metrics`), listAll(`${base}/events`)]);
  addMetrics(points);
  addEvents(history, { live: false });
  await loadCheckpoints();
  const lastId = (items) => (items.length ? items[items.length - 1].id : null);
  const finished = () => FINISHED.has(job.status);
  const mode = await follow(jobId, "metrics", lastId(points), addMetrics, finished);
  await follow(jobId, "events", lastId(history), addEvents, finished);
  document.getElementById("live-mode").textContent = finished() ? "" : mode === "stream"
    ? "live: server-sent events" : "live: polling every 2 s (this server has no stream route)";
  document.getElementById("page").dataset.live = mode;
  if (!finished()) setTimeout(pollJob, JOB_POLL_MS);
}

if (requireKey()) start().catch(showError);
