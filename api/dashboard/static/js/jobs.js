// The jobs table: newest first, refreshed while any job is queued or running; tick jobs to compare.

import { api, features, requireKey } from "./api.js";
import { clear, duration, el, jobDuration, methodOf, progressBar, showError, statusBadge, when } from "./format.js";

const REFRESH_MS = 3000;
const body = document.getElementById("jobs-body");
const more = document.getElementById("jobs-more");
const statusFilter = document.getElementById("status-filter");
const compare = document.getElementById("compare-selected");
const selected = new Set();
let jobs = [];
let hasMore = false;

function row(job) {
  const tick = el("input", { type: "checkbox", checked: selected.has(job.id), title: "compare" });
  tick.addEventListener("change", () => {
    if (tick.checked) selected.add(job.id); else selected.delete(job.id);
    compare.disabled = selected.size < 2;
  });
  const tr = el("tr", {},
    el("td", {}, tick),
    el("td", { className: "mono" }, el("a", { href: `/dashboard/jobs/${encodeURIComponent(job.id)}` }, job.id),
      job.suffix ? el("div", { className: "hint" }, job.suffix) : null),
    el("td", {}, statusBadge(job.status), job.queue_position != null ? el("span", { className: "hint", title: "queue position" }, ` #${job.queue_position}`) : null),
    el("td", {}, methodOf(job)),
    el("td", { className: "mono" }, job.model),
    el("td", {}, progressBar(job)),
    el("td", { className: "num" }, `${job.attempt}/${job.max_attempts}`),
    el("td", {}, when(job.created_at)),
    el("td", { className: "num" }, duration(jobDuration(job))));
  tr.dataset.jobId = job.id;
  tr.dataset.status = job.status;
  return tr;
}

function render() {
  clear(body, ...jobs.map(row));
  document.getElementById("jobs-empty").hidden = jobs.length > 0;
  more.hidden = !hasMore;
  document.getElementById("jobs-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

/** Reload as many jobs as are shown (at least one page), so a refresh keeps "load more" rows. */
async function load(append = false) {
  const limit = Math.max(20, Math.min(100, append ? 20 : jobs.length));
  const after = append && jobs.length ? jobs[jobs.length - 1].id : undefined;
  const page = await api("/v1/fine_tuning/jobs", { params: { limit, after, status: statusFilter.value } });
  jobs = append ? [...jobs, ...page.data] : page.data;
  hasMore = page.has_more;
  render();
}

async function refresh() {
  try {
    if (!document.hidden) await load();
    showError(null);
  } catch (error) {
    showError(error);
  }
  setTimeout(refresh, REFRESH_MS);
}

async function loadExperiments() {
  if (!(await features()).experiments) return;
  const page = await api("/v1/experiments", { params: { limit: 20 } });
  const rows = page.data.map((experiment) => el("tr", {},
    el("td", { className: "mono" }, el("a", { href: `/dashboard/experiments/${encodeURIComponent(experiment.id)}` }, experiment.name || experiment.id)),
    el("td", {}, experiment.status ? statusBadge(experiment.status) : "—"),
    el("td", { className: "num" }, Object.values(experiment.job_counts || {}).reduce((a, b) => a + b, 0)),
    el("td", {}, when(experiment.created_at))));
  clear(document.getElementById("experiments-body"), ...rows);
  document.getElementById("experiments").hidden = rows.length === 0;
}

more.addEventListener("click", () => load(true).catch(showError));
statusFilter.addEventListener("change", () => load().catch(showError));
compare.addEventListener("click", () => location.assign(`/dashboard/compare?jobs=${[...selected].map(encodeURIComponent).join(",")}`));

if (requireKey()) {
  load().then(() => setTimeout(refresh, REFRESH_MS)).catch(showError);
  loadExperiments().catch((error) => console.warn("experiments:", error.message));
}
