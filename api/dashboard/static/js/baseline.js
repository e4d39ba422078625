// The job's classical baseline beside the model's final metrics (both from `job.result`), and which is
// better on the baseline's selection metric (every metric is lower-is-better).

import { clear, el, number } from "./format.js";

const SPLITS = ["validation", "test"];

function label(baseline) {
  const params = Object.entries(baseline.params || {}).map(([key, value]) => `${key}=${value}`).join(", ");
  return params ? `${baseline.method} (${params})` : baseline.method;
}

/** "model", "baseline" or "tie" on `split`'s selection metric; null when either value is missing. */
function better(summary, baseline, split) {
  const ours = summary[split]?.[baseline.metric];
  const theirs = baseline[split]?.[baseline.metric];
  if (ours == null || theirs == null) return null;
  return ours < theirs ? "model" : theirs < ours ? "baseline" : "tie";
}

function verdictText(summary, baseline, split, winner) {
  const ours = number(summary[split][baseline.metric]);
  const theirs = number(baseline[split][baseline.metric]);
  const what = `${split} ${baseline.metric}: model ${ours}, baseline ${theirs}`;
  if (winner === "tie") return `Model and baseline tie on ${what}.`;
  return winner === "model" ? `The model beats the baseline on ${what}.` : `The baseline beats the model on ${what}.`;
}

export function renderBaseline(job) {
  const section = document.getElementById("baseline-section");
  const baseline = job.result?.baseline;
  section.hidden = !baseline;
  if (!baseline) return;
  const summary = job.result.summary || {};
  const columns = SPLITS.flatMap((split) => Object.keys(baseline[split] || {}).sort().map((key) => [split, key]));
  const cell = (values, split, key, winner, who) => el("td", {
    className: `num${winner === who && key === baseline.metric ? " better" : ""}` }, number(values[split]?.[key]));
  const winners = Object.fromEntries(SPLITS.map((split) => [split, better(summary, baseline, split)]));
  const row = (name, values, who) => el("tr", { className: `baseline-${who}` }, el("td", {}, name),
    ...columns.map(([split, key]) => cell(values, split, key, winners[split], who)));
  const table = document.getElementById("baseline");
  clear(table.tHead, el("tr", {}, el("th", {}, ""), ...columns.map(([split, key]) => el("th", { className: "num" }, `${split} ${key}`))));
  clear(table.tBodies[0], row("model", summary, "model"), row(`baseline: ${label(baseline)}`, baseline, "baseline"));
  const split = winners.test ? "test" : "validation";
  section.dataset.better = winners[split] || "";
  document.getElementById("baseline-verdict").textContent = winners[split]
    ? verdictText(summary, baseline, split, winners[split]) : "No split on which to compare the model with the baseline.";
  const notes = [`selected by ${baseline.selection}`, `fitted in ${Number(baseline.seconds).toFixed(1)} s`, ...(baseline.notes || [])];
  document.getElementById("baseline-notes").textContent = notes.join("; ");
}
