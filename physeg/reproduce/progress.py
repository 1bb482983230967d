"""Progress of a notebook run: which page runs, how long the run has taken, how long it has left.

A run's notebooks differ by orders of magnitude in cost (on ``demo`` the
training page takes about 30 times the simulation page), so "notebooks done out
of ten" says little about the time left. The runner therefore weighs each
notebook by what it took last time on the same profile:

1. ``<build>/timings.json`` if the last run in this build folder was the same
   profile (the runner writes it at the end of every complete run);
2. otherwise the newest committed record of that profile,
   ``runs/*/timings.json`` in the checkout (:data:`RUNS_DIR`);
3. otherwise every notebook counts the same, and the log says so.

The time left is the expected time of the notebooks still to run, scaled by
how fast this run has gone so far against the same expectation (a busier or a
faster machine than the one that made the record), so it sharpens as the run
goes. That pace is held within :data:`MAX_PACE` either way: a page that took
hundreds of times its record (the record's run found its models in the cache,
this one trains them) says nothing about the machine. It is an estimate,
printed as one: ``~12 min left``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from physeg.paths import REPO_ROOT

#: Committed records of earlier full runs (one folder per run, each with a ``timings.json``).
RUNS_DIR: Path = REPO_ROOT / "runs"
#: The run's pace against the record is taken within [1/MAX_PACE, MAX_PACE] (module docstring).
MAX_PACE: float = 3.0


@dataclass(frozen=True)
class RunEstimate:
    """Expected seconds per notebook name and where the numbers come from (for the log)."""

    seconds: dict[str, float]
    source: str

    def expected(self, name: str) -> float | None:
        return self.seconds.get(name)


def _read_timings(path: Path, *, profile: str) -> dict[str, float] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("profile") != profile or not isinstance(doc.get("seconds"), dict):
        return None
    return {str(k): float(v) for k, v in doc["seconds"].items() if isinstance(v, (int, float))}


def load_estimate(*, profile: str, build_dir: Path, runs_dir: Path = RUNS_DIR) -> RunEstimate:
    """The best available per-notebook expectation for ``profile`` (module docstring, in that order)."""
    last = _read_timings(Path(build_dir) / "timings.json", profile=profile)
    if last:
        return RunEstimate(last, f"the last {profile} run in {build_dir}")
    records = sorted(Path(runs_dir).glob("*/timings.json"), reverse=True) if Path(runs_dir).is_dir() else []
    for path in records:  # folder names start with the date: newest first
        found = _read_timings(path, profile=profile)
        if found:
            return RunEstimate(found, f"the committed record {path.parent.name}")
    return RunEstimate({}, "no earlier timings of this profile: every notebook counts the same")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"


@dataclass
class RunProgress:
    """Log lines with the time left for a run of ``names`` (in order) under ``estimate``."""

    names: Sequence[str]
    estimate: RunEstimate
    started: float = field(default_factory=time.perf_counter)
    done: dict[str, float] = field(default_factory=dict)

    def _weight(self, name: str) -> float:
        known = [v for v in self.estimate.seconds.values() if v > 0]
        fallback = sum(known) / len(known) if known else 1.0
        value = self.estimate.expected(name)
        return value if value is not None and value > 0 else fallback

    def time_left(self) -> float | None:
        """Estimated seconds for the notebooks not yet done; ``None`` before the first one finishes."""
        if not self.done:
            return None
        pace = sum(self.done.values()) / sum(self._weight(n) for n in self.done)
        if self.estimate.seconds:  # a ratio to recorded seconds (with equal weights it is seconds per page)
            pace = min(max(pace, 1.0 / MAX_PACE), MAX_PACE)
        return pace * sum(self._weight(n) for n in self.names if n not in self.done)

    def fraction_done(self) -> float:
        """Share of the expected work finished (by weight, not by count)."""
        total = sum(self._weight(n) for n in self.names)
        return sum(self._weight(n) for n in self.done) / total if total else 1.0

    def starting(self, name: str) -> str:
        i = list(self.names).index(name) + 1
        expected = self.estimate.expected(name)
        hint = f", took {_minutes(expected)} last time" if expected is not None else ""
        return f"[{i}/{len(self.names)}] executing {name}{hint}"

    def finished(self, name: str, seconds: float) -> str:
        self.done[name] = float(seconds)
        elapsed = time.perf_counter() - self.started
        left = self.time_left()
        tail = "" if left is None or len(self.done) == len(self.names) else f", ~{_minutes(left)} left"
        return (f"        {name} done in {_minutes(seconds)}; run {100 * self.fraction_done():.0f} % done "
                f"after {_minutes(elapsed)}{tail}")
