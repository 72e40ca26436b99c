"""The consent benchmark runs end to end on a tiny population (SQLite only) and prints
the figures it promises; nothing here looks at how fast anything was."""

from __future__ import annotations

from pathlib import Path

from pushwarden.runtime.servicetest import BenchRun, run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "consent_eligibility.py"


def _run(tmp_path: Path) -> BenchRun:
    return run_bench(
        BENCH,
        "--quick",
        "--users",
        "1500",
        "--writers",
        "4",
        "--no-postgres",
        "--data-dir",
        str(tmp_path),
    )


def test_the_benchmark_prints_its_figures_and_keeps_its_population(tmp_path: Path) -> None:
    first = _run(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.lines
    by_name = first.figures
    assert set(by_name) == {
        "consent.eligibility_users_per_s",
        "consent.eligibility_server_cpu_ms_per_batch",
        "consent.record_consent_per_s",
        "consent.record_consent_p99_ms",
    }
    for line in lines:
        assert set(line) == {"name", "value", "unit", "baseline", "notes"}
        assert line["value"] > 0
    eligibility = by_name["consent.eligibility_users_per_s"]
    assert eligibility["baseline"] == 20_000
    assert "goal >= 20,000" in eligibility["notes"]
    assert "1,500 users x 2 devices" in eligibility["notes"]
    assert "4 concurrent callers" in by_name["consent.record_consent_per_s"]["notes"]
    # The decision mix covers every seeded outcome, so the batches did real work.
    [mix] = [line for line in first.stdout.splitlines() if "decision mix" in line]
    for outcome in ("ALLOW", "CATEGORY_OPTED_OUT", "OPTED_OUT", "NO_PERMISSION", "SUPPRESSED"):
        assert outcome in mix
    assert "seeded 1,500 users" in first.stdout
    assert (tmp_path / "consent_eligibility_1500.db").exists()

    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seeded 1,500 users" not in again.stdout  # the kept file is reused
    assert "consent.eligibility_users_per_s" in again.stdout
