"""Terminal output for the CLI: a status line redrawn in place on a TTY, plain lines otherwise."""

from __future__ import annotations

from typing import TextIO

from client.types import Job

BAR_WIDTH = 20


def human_bytes(count: float) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    power = 0
    while count >= 1024 and power < len(units) - 1:
        count /= 1024
        power += 1
    return f"{count:.0f} B" if power == 0 else f"{count:.1f} {units[power]}"


def duration(seconds: float) -> str:
    """`95` → `1m35s`; `4000` → `1h06m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def bar(fraction: float) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH)
    return "[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]"


def job_line(job: Job, loss: float | None = None) -> str:
    """`ftjob-1 running refine [#####---------------] 120/480 25% loss 0.4123 ETA 1m20s`"""
    parts = [job.id, job.status + (" (cancel requested)" if job.cancel_requested and not job.finished else "")]
    progress = job.progress
    if progress is not None:
        if progress.stage:
            parts.append(progress.stage)
        if progress.total_steps:
            parts += [bar(progress.fraction), f"{progress.step}/{progress.total_steps}", f"{progress.fraction:.0%}"]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if progress is not None and progress.eta_seconds is not None and not job.finished:
        parts.append(f"ETA {duration(progress.eta_seconds)}")
    if job.attempt > 1:
        parts.append(f"attempt {job.attempt}/{job.max_attempts}")
    return " ".join(parts)


def outcome(job: Job) -> str:
    """One line on how a finished job ended."""
    took = f" in {duration(job.finished_at - job.started_at)}" if job.finished_at and job.started_at else ""
    checkpoint = (job.result or {}).get("checkpoint")
    kept = f"; checkpoint {checkpoint}" if checkpoint else ""
    if job.status == "failed" and job.error is not None:
        return f"{job.id} failed{took}: {job.error.code}: {job.error.message}"
    return f"{job.id} {job.status}{took}{kept}{versus_baseline(job)}"


def versus_baseline(job: Job) -> str:
    """`; test error 0.031 vs baseline logistic_regression 0.036 (model better)`, or nothing without one."""
    baseline = job.baseline
    if baseline is None:
        return ""
    split = "test" if baseline.test is not None else "validation"
    ours = ((job.result or {}).get("summary", {}).get(split) or {}).get(baseline.metric)
    theirs = (getattr(baseline, split) or {}).get(baseline.metric)
    if ours is None or theirs is None:
        return f"; baseline {baseline.method}"
    verdict = "model better" if ours < theirs else "baseline better" if theirs < ours else "tie"
    return f"; {split} {baseline.metric} {ours:.4g} vs baseline {baseline.method} {theirs:.4g} ({verdict})"


class StatusLine:
    """On a TTY, one line rewritten in place; elsewhere (a log, a pipe), a new line per change."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.last = ""

    def update(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.live:
            self.stream.write("\r" + text + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the live line, so what follows starts on a line of its own."""
        if self.live and self.last:
            self.stream.write("\n")
            self.stream.flush()
