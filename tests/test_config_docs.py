"""The README's configuration table is generated from the config classes and kept in step
with them: ``tools/config_table.py --check README.md`` is the gate, and it must catch a
stale or missing table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pushwarden.runtime.config import settings_table
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.segmentation.config import SegmentationConfig

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "config_table.py"
START, END = "<!-- config-table:start -->", "<!-- config-table:end -->"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def generated_table() -> str:
    result = run_tool()
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_readme_table_matches_the_config_classes() -> None:
    result = run_tool("--check", "README.md")
    assert result.returncode == 0, result.stderr


def test_the_table_names_every_variable_of_every_service() -> None:
    table = generated_table()
    for service, cls in (
        ("consent", ConsentConfig),
        ("segmentation", SegmentationConfig),
        ("scheduler", SchedulerConfig),
        ("delivery", DeliveryConfig),
    ):
        for doc in settings_table(cls, service):
            shared = doc.env_name.replace(f"_{service.upper()}_", "_<SERVICE>_", 1)
            assert f"`{doc.env_name}`" in table or f"`{shared}`" in table, doc.env_name
    assert "`PUSHWARDEN_CONSENT_PSEUDONYM_KEY` | consent |" in table
    assert "`PUSHWARDEN_SCHEDULER_DELIVERY_ADDR` | scheduler |" in table
    assert "`PUSHWARDEN_SEGMENTATION_CONSENT_ADDR` | segmentation |" in table
    # The client side of TLS: which CA a service trusts when it calls its peers.
    assert "`PUSHWARDEN_<SERVICE>_PEER_CA` | all |" in table


def test_a_stale_table_is_caught_and_write_repairs_it(tmp_path: Path) -> None:
    table = generated_table()
    stale = "\n".join(line for line in table.splitlines() if "PSEUDONYM_KEY" not in line)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{START}\n{stale}\n{END}\n\nAfter.\n")

    result = run_tool("--check", str(readme))
    assert result.returncode == 1
    assert "stale" in result.stderr
    assert "+| `PUSHWARDEN_CONSENT_PSEUDONYM_KEY`" in result.stderr

    assert run_tool("--write", str(readme)).returncode == 0
    assert run_tool("--check", str(readme)).returncode == 0
    text = readme.read_text()
    assert text.startswith("# Title\n\n")
    assert text.endswith(f"{END}\n\nAfter.\n")


def test_a_readme_without_markers_fails_the_check(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{generated_table()}")
    result = run_tool("--check", str(readme))
    assert result.returncode == 1
    assert "markers" in result.stderr
