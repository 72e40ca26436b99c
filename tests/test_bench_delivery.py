"""The delivery benchmark runs end to end on a tiny load (every process its own, SQLite)
and prints the figures it promises, each with the concurrency it was measured at; nothing
here looks at how fast anything was."""

from __future__ import annotations

from pathlib import Path

import pytest

from pushwarden.runtime.servicetest import run_bench

BENCH = Path(__file__).resolve().parents[1] / "bench" / "delivery_providers.py"


@pytest.mark.slow
def test_the_delivery_benchmark_prints_its_figures() -> None:
    done = run_bench(BENCH, "--quick", "--apns-n", "600", "--fcm-n", "200", "--users", "50")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.lines
    by_name = done.figures
    assert set(by_name) == {
        "delivery.apns_per_s",
        "delivery.apns_ratio_to_bare",
        "delivery.apns_ratio_to_bare_defaults",
        "delivery.apns_cpu_ms_per_notification",
        "delivery.consent_cpu_ms_per_notification",
        "delivery.fcm_per_s",
        "delivery.fcm_ratio_to_bare",
        "delivery.fcm_cpu_ms_per_message",
    }
    for line in lines:
        assert set(line) == {"name", "value", "unit", "baseline", "notes"}
        if line["unit"] == "ms":
            # CPU comes from /proc in 10 ms ticks: consent's few calls at this tiny load
            # can take less than one tick, so a CPU figure may honestly be 0.
            assert line["value"] >= 0
        else:
            assert line["value"] > 0
    assert by_name["delivery.apns_ratio_to_bare"]["baseline"] == 0.8
    assert "500 in flight" in by_name["delivery.apns_ratio_to_bare"]["notes"]
    assert by_name["delivery.apns_ratio_to_bare_defaults"]["baseline"] == 1.0
    assert "1000 in flight" in by_name["delivery.apns_ratio_to_bare_defaults"]["notes"]
    assert "chunk 100 x 1 in flight" in by_name["delivery.fcm_ratio_to_bare"]["notes"]
    # CPU of delivery and consent beside the bare client's.
    assert "consent" in by_name["delivery.apns_ratio_to_bare"]["notes"]
    assert "bare firebase-admin" in by_name["delivery.fcm_cpu_ms_per_message"]["notes"]
