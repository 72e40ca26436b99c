"""The end-to-end campaign benchmark runs on a small audience (four services, the fake
APNs and bare aioapns as processes, SQLite) and its correctness counts hold: every push
expected at the fake arrived once, none was lost, none came twice, none came that was
not expected. Nothing here looks at how fast anything was."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushwarden.runtime.servicetest import run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "e2e_campaign.py"
FIGURES = {
    "e2e.apns_per_s",
    "e2e.apns_ratio_to_bare",
    "e2e.cpu_ms_per_delivery",
    "e2e.time_to_first_delivery_s",
    "e2e.transactional_p99_ms",
    "e2e.expected_pushes",
    "e2e.delivered_pushes",
    "e2e.lost",
    "e2e.duplicates",
    "e2e.unexpected",
    "e2e.deferred",
}


@pytest.mark.slow
def test_the_e2e_benchmark_delivers_every_expected_push_once() -> None:
    done = run_bench(BENCH, "--quick", timeout_s=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    by_name = done.figures
    assert set(by_name) - FIGURES == {name for name in by_name if ".suppressed." in name}
    assert set(by_name) >= FIGURES
    for line in done.lines:
        assert set(line) == {"name", "value", "unit", "baseline", "notes"}

    # The population's users without permission, opted out or erased are dropped by
    # the scheduler; a run where nothing was sent, or everything, would show here.
    expected = by_name["e2e.expected_pushes"]["value"]
    assert expected > 0
    assert by_name["e2e.suppressed.scheduler.NO_PERMISSION"]["value"] > 0
    assert by_name["e2e.delivered_pushes"]["value"] == expected
    assert by_name["e2e.lost"]["value"] == 0
    assert by_name["e2e.duplicates"]["value"] == 0
    assert by_name["e2e.unexpected"]["value"] == 0

    assert "campaign to 1,000 users" in by_name["e2e.apns_per_s"]["notes"]
    assert by_name["e2e.apns_ratio_to_bare"]["baseline"] == 0.7
    assert by_name["e2e.transactional_p99_ms"]["value"] > 0
    assert by_name["e2e.time_to_first_delivery_s"]["value"] > 0
