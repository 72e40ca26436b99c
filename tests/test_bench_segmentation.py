"""The segmentation benchmark runs end to end on a tiny population (SQLite only) and
prints the figures it promises, each with the baseline it measured; nothing here looks
at how fast anything was."""

from __future__ import annotations

import re
from pathlib import Path

from pushwarden.runtime.servicetest import BenchRun, run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "segmentation_evaluate.py"


def _run(tmp_path: Path) -> BenchRun:
    return run_bench(
        BENCH,
        "--quick",
        "--profiles",
        "4000",
        "--events",
        "8000",
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
        "segmentation.evaluate_1m_s",
        "segmentation.count_1m_s",
        "segmentation.track_events_per_s",
        "segmentation.peak_rss_mb_250k",
        "segmentation.peak_rss_mb_1m",
        "segmentation.stream_250k_of_1m_s",
    }
    for line in lines:
        assert set(line) == {"name", "value", "unit", "baseline", "notes"}
        assert line["value"] > 0
        assert line["baseline"] > 0  # every figure has a baseline measured in the run
        assert re.search(r"ratio \d+\.\d\dx", line["notes"]), line["notes"]
    evaluate = by_name["segmentation.evaluate_1m_s"]
    assert "goal <= 5 s" in evaluate["notes"]
    assert "large: 4,000 profiles, 8,000 events" in evaluate["notes"]
    members = int(re.search(r"([\d,]+) members", evaluate["notes"])[1].replace(",", ""))  # type: ignore[index]
    assert 0 < members < 4000  # the segment selects neither nobody nor everybody
    assert "1,000 profiles" in by_name["segmentation.peak_rss_mb_250k"]["notes"]
    assert "4,000 profiles" in by_name["segmentation.peak_rss_mb_1m"]["notes"]
    assert "seeded SQLite" in first.stdout
    assert (tmp_path / "segmentation_4000_8000.db").exists()

    again = _run(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seeded SQLite" not in again.stdout  # the kept file is reused
    assert "segmentation.evaluate_1m_s" in again.stdout
