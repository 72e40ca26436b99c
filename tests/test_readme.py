"""The README's first-hour material works as written: the Python snippet runs against a
service started the way "Running one service alone" says and prints what the README
shows, the example tokens files load, and every file the README links exists."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.config import load_caller_grants
from pushwarden.runtime.healthprobe import check

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
SERVING_DEADLINE_S = 30.0


def section(title: str) -> str:
    """The text of the README section headed ``## title``."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end >= 0 else None]


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the ```language blocks in ``text``."""
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)


@pytest.fixture
def consent_alone(tmp_path: Path) -> Iterator[str]:
    """Consent started as "Running one service alone" says, on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
    env |= {"PUSHWARDEN_CONSENT_PORT": str(port), "PUSHWARDEN_CONSENT_LOG_FORMAT": "text"}
    process = subprocess.Popen(
        [sys.executable, "-m", "pushwarden.services.consent"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVING_DEADLINE_S
        while True:
            try:
                if check(address, timeout_s=1.0) == "SERVING":
                    break
            except grpc.RpcError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"consent did not serve: {process.communicate()[1]}")
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_the_python_snippet_runs_as_written_and_prints_what_the_readme_shows(
    consent_alone: str, tmp_path: Path
) -> None:
    calling = section("Calling a service")
    [snippet] = fenced(calling, "python")
    assert '"127.0.0.1:50051"' in snippet
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace('"127.0.0.1:50051"', f'"{consent_alone}"'))
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    shown = fenced(calling, "text")[0]
    assert result.stdout == shown


def test_the_example_tokens_files_load_and_their_digests_match_their_comments(
    tmp_path: Path,
) -> None:
    [readme_file] = fenced(section("Turning auth on"), "toml")
    example = ROOT / "deploy" / "auth-tokens.example.toml"
    for text in (readme_file, example.read_text(encoding="utf-8")):
        path = tmp_path / "tokens.toml"
        path.write_text(text)
        grants = {grant.name: grant for grant in load_caller_grants(str(path))}
        assert grants["shop-backend"].apps == ("shop",)
        assert grants["operator"].methods == ("*",)
    # The comment names the token a reader can try; its digest is the one in the file.
    for token, digest in re.findall(
        r'# sha256 of "([^"]+)"\ntoken_sha256 = "([0-9a-f]{64})"', example.read_text()
    ):
        assert hashlib.sha256(token.encode()).hexdigest() == digest, token


def test_every_file_the_readme_links_exists() -> None:
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README)
    assert "docs/contracts.md" in targets
    assert "deploy/auth-tokens.example.toml" in targets
    for target in targets:
        assert (ROOT / target).exists(), target


def test_the_readme_says_how_to_run_one_service_and_what_comes_next() -> None:
    alone = section("Running one service alone")
    assert ".venv/bin/python -m pushwarden.services.consent" in alone
    steps = section("Next steps")
    for what in ("pushwarden.sandbox", "docker compose up", "docs/contracts.md"):
        assert what in steps, what
    # make run's first lines, as the supervisor prints them.
    assert "created var/consent-pseudonym.key: consent's pseudonym key" in section("Two commands")
    assert "segmentation calls consent for its feed only" in README
