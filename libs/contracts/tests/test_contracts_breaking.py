"""The v1 contracts are frozen: `buf breaking` against the committed image guards them.

``protos/v1.binpb`` is the buf image of the accepted contracts (schema only, built with
``--exclude-source-info``). ``make proto-lint`` runs ``buf breaking`` against it, and
``make proto-image`` refreshes it after an additive change (refusing a breaking one).
These tests show the guard bites: each deliberate breaking edit of a copy of the
protos fails, the untouched copy and an additive edit pass, and the committed image is
what the protos build to today, so nobody forgets to refresh it.

buf comes from the npm registry (``npm ci``); without it these tests are skipped. CI
installs it for ``make proto-lint`` before it runs the tests, so there they run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BUF = REPO / "node_modules" / ".bin" / "buf"
IMAGE = REPO / "protos" / "v1.binpb"

pytestmark = pytest.mark.skipif(
    not BUF.exists(),
    reason="buf is not installed (node_modules/.bin/buf): run `npm ci` or `make proto-lint`",
)

# (file, exact text, replacement, what buf must name): each edit breaks a client.
BREAKING_EDITS = {
    "renumbered field": (
        "delivery/v1/resources.proto",
        "  string send_id = 1;\n",
        "  string send_id = 16;\n",
        'field "1" with name "send_id" on message "Send" was deleted',
    ),
    "deleted field": (
        "delivery/v1/resources.proto",
        "  google.protobuf.Timestamp latest_send_at = 15;\n",
        "",
        'Previously present field "15" with name "latest_send_at" on message "Send"',
    ),
    "retyped field": (
        "segmentation/v1/resources.proto",
        "  uint64 sequence = 8;\n",
        "  string sequence = 8;\n",
        'Field "8" with name "sequence" on message "Event" changed type',
    ),
    "deleted enum value": (
        "delivery/v1/resources.proto",
        "  DELIVERY_STATUS_LATE = 8;\n",
        "",
        'Previously present enum value "8" on enum "DeliveryStatus" was deleted',
    ),
}


def _copy_protos(tmp_path: Path) -> Path:
    target = tmp_path / "protos"
    shutil.copytree(REPO / "protos", target, ignore=shutil.ignore_patterns("*.binpb"))
    return target


def _edit(root: Path, relative: str, old: str, new: str) -> None:
    path = root / "pushwarden" / relative
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{relative}: the edit's anchor moved: {old!r}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def _breaking(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), "breaking", str(root), "--against", str(IMAGE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_unmodified_contracts_pass_against_the_image(tmp_path: Path) -> None:
    result = _breaking(_copy_protos(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("edit", sorted(BREAKING_EDITS))
def test_a_deliberate_breaking_edit_fails(edit: str, tmp_path: Path) -> None:
    relative, old, new, expected = BREAKING_EDITS[edit]
    root = _copy_protos(tmp_path)
    _edit(root, relative, old, new)
    result = _breaking(root)
    assert result.returncode != 0, f"buf breaking accepted a {edit}"
    assert expected in result.stdout, result.stdout + result.stderr


def test_an_additive_edit_passes(tmp_path: Path) -> None:
    """After the freeze, changes are additive: a new documented field is accepted."""
    root = _copy_protos(tmp_path)
    _edit(
        root,
        "delivery/v1/resources.proto",
        "  google.protobuf.Timestamp latest_send_at = 15;\n",
        "  google.protobuf.Timestamp latest_send_at = 15;\n"
        "  // Optional. A field added after the freeze.\n"
        "  string added_later = 16;\n",
    )
    result = _breaking(root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_committed_image_is_current(tmp_path: Path) -> None:
    """Rebuilding the image from protos/ gives the committed bytes (`make proto-image`)."""
    rebuilt = tmp_path / "v1.binpb"
    subprocess.run(
        [str(BUF), "build", str(REPO / "protos"), "--exclude-source-info", "-o", str(rebuilt)],
        check=True,
        timeout=120,
    )
    assert rebuilt.read_bytes() == IMAGE.read_bytes(), (
        "protos/v1.binpb is stale: run `make proto-image` and commit it"
    )
