"""`make demo` runs end to end on a small population: the platform starts, the day runs,
the report says who got what and why, the chart is a PNG, everything stops."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[1] / "tools" / "demo.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_demo_prints_its_report_and_writes_its_chart(tmp_path: Path) -> None:
    chart, figures = tmp_path / "chart.png", tmp_path / "figures.json"
    done = subprocess.run(
        [
            *(sys.executable, str(DEMO), "--users", "150", "--step", "30"),
            *("--chart", str(chart), "--json", str(figures), "--timings"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    for line in (
        "150 in 12 time zones",
        "Summer sale: who got what, who was held back and why",
        "in the holdout (measures the lift)",
        "sent variant A",
        "sent variant B",
        "Summer sale: campaign statistics (delivery)",
        "Holdout lift:",
        "Cart abandonment (1 h delay)",
        "Order updates (transactional)",
        "Dead tokens (APNs 410)",
        "Stopped the platform (supervisor exit 0)",
        # --timings: the phases `make demo`'s run time is made of
        "Where the time went (wall seconds)",
        "start the platform",
        "seed: consent (devices, choices)",
        "seed: segmentation (profiles, events)",
        "day: settle after each clock step",
        "stop the platform",
    ):
        assert line in out, line
    data = chart.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data[12:16] == b"IHDR"
    assert data.endswith(b"IEND\xaeB`\x82")
    found = json.loads(figures.read_text())
    sale = found["Summer sale"]["by_reason"]
    assert sale["sent variant A"] > 0
    assert sale["sent variant B"] > 0
    # No sale send went out before 10:00 on the user's own clock; nobody who
    # opted out while waiting got the sale afterwards; the dead token was tried; every
    # order update with a permitted device and a live token was delivered.
    assert found["sale_before_10_local"] == 0
    assert found["opt_out"]["sent_after"] == 0
    assert found["dead_tokens"]["max_tries"] >= 1
    orders = found["orders"]
    assert orders["delivered"] + orders["not_handed"] + orders["failed"] == orders["sent"] > 0
    assert orders["failed"] <= 2 * found["dead_tokens"]["count"]
