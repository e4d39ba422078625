// DOM and formatting helpers. API data goes into the page as text only, never as HTML.

/** el("td", {className: "num"}, "1.5", childNode) */
export function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children) {
    if (child != null) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function clear(node, ...children) {
  node.replaceChildren(...children);
  return node;
}

export function showError(error) {
  const banner = document.getElementById("error");
  banner.textContent = error ? String(error.message || error) : "";
  banner.hidden = !error;
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

export const when = (unix) => (unix ? new Date(unix * 1000).toLocaleString() : "—");

export function duration(seconds) {
  if (seconds == null || !isFinite(seconds)) return "—";
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
  return h ? `${h}h ${m}m` : m ? `${m}m ${s}s` : `${s}s`;
}

/** Run time: started → finished, or → now while running. */
export function jobDuration(job) {
  if (!job.started_at) return null;
  return (job.finished_at || Date.now() / 1000) - job.started_at;
}

export const statusBadge = (status) => el("span", { className: `status ${status}` }, status);

export const methodOf = (job) => (job.method && job.method.type) || "—";

export function number(value) {
  if (value == null || typeof value !== "number") return value == null ? "—" : String(value);
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1e4 || Math.abs(value) < 1e-3 ? value.toExponential(3) : value.toPrecision(4);
}

/** Axis tick labels that keep small values apart (a learning rate's 2e-5 is not `0`): exponent
 *  notation when the largest tick is below 1e-3 or from 1e5, and the fewest significant digits that
 *  write every tick to within a thousandth of the tick spacing. */
export function tickLabels(splits) {
  const largest = Math.max(0, ...splits.map(Math.abs));
  const exponent = largest !== 0 && (largest < 1e-3 || largest >= 1e5);
  const gaps = splits.slice(1).map((v, i) => Math.abs(v - splits[i])).filter((gap) => gap > 0);
  const tolerance = (gaps.length ? Math.min(...gaps) : largest || 1) * 1e-3;
  const write = (v, digits) => (v === 0 ? "0" : exponent ? v.toExponential(digits - 1) : String(Number(v.toPrecision(digits))));
  for (let digits = 1; digits < 17; digits++) {
    const labels = splits.map((v) => write(v, digits));
    if (labels.every((label, i) => Math.abs(Number(label) - splits[i]) <= tolerance)) return labels;
  }
  return splits.map(String);
}

export function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

/** A progress bar for a job: fraction, stage and step / total. */
export function progressBar(job, node = el("div", { className: "progress" }, el("div", { className: "bar" }), el("span", { className: "label" }))) {
  const progress = job.progress || {};
  const fraction = job.status === "succeeded" ? 1 : Math.min(1, Math.max(0, progress.fraction || 0));
  node.querySelector(".bar").style.width = `${(fraction * 100).toFixed(1)}%`;
  const parts = [`${Math.round(fraction * 100)}%`];
  if (progress.stage && !FINISHED.has(job.status)) parts.push(progress.stage);
  if (progress.total_steps) parts.push(`${progress.step}/${progress.total_steps}`);
  const roomy = node.classList.contains("big");
  if (roomy && progress.eta_seconds != null && job.status === "running") parts.push(`ETA ${duration(progress.eta_seconds)}`);
  node.querySelector(".label").textContent = parts.join(" · ");
  node.dataset.fraction = String(fraction);
  return node;
}
