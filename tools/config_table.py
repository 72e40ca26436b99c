"""Print, or check, the README's configuration table, generated from the config classes.

``python tools/config_table.py`` prints the Markdown table of every variable every
service reads (name, type, default, description); ``--markers`` wraps it in the README
markers, ready to paste. ``--check README.md`` exits 1 when the table between
``<!-- config-table:start -->`` and ``<!-- config-table:end -->`` differs from the
generated one (or the markers are missing); ``--write README.md`` replaces it.

Settings every service shares are one row named ``PUSHWARDEN_<SERVICE>_...``; a default
that differs by service shows each service's value.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pushwarden.runtime.config import ServiceConfig, SettingDoc, settings_table
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.segmentation.config import SegmentationConfig

START = "<!-- config-table:start -->"
END = "<!-- config-table:end -->"
ALL = "all"

# Every deployable and the class its configuration is read into, in port order.
SERVICE_CONFIGS: dict[str, type[ServiceConfig]] = {
    "consent": ConsentConfig,
    "segmentation": SegmentationConfig,
    "scheduler": SchedulerConfig,
    "delivery": DeliveryConfig,
}


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table."""

    variable: str
    services: str
    type: str
    default: str
    help: str


def _suffix(doc: SettingDoc, service: str) -> str:
    return doc.env_name.removeprefix(f"PUSHWARDEN_{service.upper()}_")


def _generic(text: str, service: str) -> str:
    return text.replace(service, "<service>")


def _code(text: str) -> str:
    # "(unset)" and "(required)" are words, not values.
    return f"`{text}`" if text and not text.startswith("(") else text


def _shared_row(suffix: str, docs: dict[str, SettingDoc]) -> Row | None:
    """One row for a setting that every service reads the same way, else None."""
    if set(docs) != set(SERVICE_CONFIGS):
        return None
    kinds = {(doc.type, doc.help) for doc in docs.values()}
    if len(kinds) != 1:
        return None
    defaults = {_generic(doc.default, service) for service, doc in docs.items()}
    default = (
        _code(defaults.pop())
        if len(defaults) == 1
        else ", ".join(f"{_code(doc.default)} ({service})" for service, doc in docs.items())
    )
    doc = next(iter(docs.values()))
    return Row(f"PUSHWARDEN_<SERVICE>_{suffix}", ALL, doc.type, default, doc.help)


def rows(configs: dict[str, type[ServiceConfig]] = SERVICE_CONFIGS) -> list[Row]:
    """The table's rows: shared settings first, then each service's own."""
    by_suffix: dict[str, dict[str, SettingDoc]] = {}
    for service, cls in configs.items():
        for doc in settings_table(cls, service):
            by_suffix.setdefault(_suffix(doc, service), {})[service] = doc
    shared: list[Row] = []
    own: dict[str, list[Row]] = {service: [] for service in configs}
    for suffix, docs in by_suffix.items():
        row = _shared_row(suffix, docs)
        if row is not None:
            shared.append(row)
            continue
        for service, doc in docs.items():
            own[service].append(Row(doc.env_name, service, doc.type, _code(doc.default), doc.help))
    return shared + [row for service_rows in own.values() for row in service_rows]


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(table_rows: Sequence[Row]) -> str:
    """The Markdown table."""
    lines = [
        "| Variable | Service | Type | Default | Description |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| `{row.variable}` | {row.services} | {_cell(row.type)} | "
        f"{_cell(row.default)} | {_cell(row.help)} |"
        for row in table_rows
    ]
    return "\n".join(lines) + "\n"


def block(table: str) -> str:
    """The table between the README markers."""
    return f"{START}\n{table}{END}\n"


def extract(document: str) -> str | None:
    """The text between the markers of ``document`` (None without both markers)."""
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        return None
    return document[start + len(START) : end].strip("\n") + "\n"


def check(path: Path, table: str) -> list[str]:
    """Problems with the table in ``path`` (empty when it matches ``table``)."""
    if not path.is_file():
        return [f"{path}: no such file"]
    current = extract(path.read_text(encoding="utf-8"))
    if current is None:
        return [f"{path}: no {START} ... {END} markers; paste `tools/config_table.py --markers`"]
    if current == table:
        return []
    diff = difflib.unified_diff(
        current.splitlines(), table.splitlines(), "README table", "generated", lineterm=""
    )
    return [f"{path}: the configuration table is stale; run `tools/config_table.py --write`", *diff]


def write(path: Path, table: str) -> None:
    """Replace the table between the markers of ``path``."""
    document = path.read_text(encoding="utf-8")
    if extract(document) is None:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    head = document[: document.index(START)]
    tail = document[document.index(END) + len(END) :].removeprefix("\n")
    path.write_text(head + block(table) + tail, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if FILE's table differs")
    mode.add_argument("--write", type=Path, metavar="FILE", help="replace FILE's table")
    mode.add_argument("--markers", action="store_true", help="print the table inside markers")
    args = parser.parse_args(argv)
    table = render(rows())
    if args.check is not None:
        problems = check(args.check, table)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    if args.write is not None:
        write(args.write, table)
        return 0
    sys.stdout.write(block(table) if args.markers else table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
