"""The scheduler benchmark runs end to end on a tiny audience (the four services as
processes, SQLite) and prints the figures it promises with what they ran; nothing here
looks at how fast anything was."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushwarden.runtime.servicetest import run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scheduler_fanout.py"


@pytest.mark.slow
def test_the_scheduler_benchmark_prints_its_figures() -> None:
    done = run_bench(BENCH, "--users", "300")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_name = done.figures
    assert set(by_name) == {
        "scheduler.fanout_per_s",
        "scheduler.handed_per_s",
        "scheduler.fanout_ratio_to_eligibility",
        "scheduler.transactional_accept_p99_ms",
    }
    for line in done.lines:
        assert set(line) == {"name", "value", "unit", "baseline", "notes"}
        assert line["value"] > 0
    assert by_name["scheduler.fanout_per_s"]["baseline"] == 10_000
    assert "campaign to 300 users" in by_name["scheduler.fanout_per_s"]["notes"]
    accept = by_name["scheduler.transactional_accept_p99_ms"]
    assert accept["baseline"] == 50
    assert "at 20/s during the campaign" in accept["notes"]
    # The decision mix is printed, so a run where everything dropped would show.
    assert "decisions (latest per intent): ALLOW" in done.stdout
