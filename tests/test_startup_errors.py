"""A service that cannot listen, or cannot read its TLS key or certificate, ends like
any other configuration error: one line on stderr naming the variable, exit 2, no
traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pushwarden.runtime.config import CONFIG_ERROR_EXIT_STATUS
from pushwarden.runtime.tlsgen import generate_test_pki

START_DEADLINE_S = 60.0


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process listens on for the length of the test."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def run_consent(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWARDEN_")}
    return subprocess.run(
        [sys.executable, "-m", "pushwarden.services.consent"],
        cwd=tmp_path,
        env={**inherited, "PUSHWARDEN_CONSENT_HOST": "127.0.0.1", **env},
        capture_output=True,
        text=True,
        timeout=START_DEADLINE_S,
        check=False,
    )


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == CONFIG_ERROR_EXIT_STATUS, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1] == expected, result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_ends_with_one_line_naming_the_port_setting(
    tmp_path: Path, held_port: int
) -> None:
    result = run_consent(tmp_path, {"PUSHWARDEN_CONSENT_PORT": str(held_port)})
    assert_one_line_exit_2(
        result,
        f"PUSHWARDEN_CONSENT_PORT: cannot listen on 127.0.0.1:{held_port}: address in use",
    )


def test_a_key_that_is_not_the_certificates_ends_with_one_line_naming_the_key_setting(
    tmp_path: Path,
) -> None:
    pki = generate_test_pki(tmp_path / "pki")
    result = run_consent(
        tmp_path,
        {
            "PUSHWARDEN_CONSENT_PORT": "0",
            "PUSHWARDEN_CONSENT_TLS_CERT": str(pki.server_cert),
            "PUSHWARDEN_CONSENT_TLS_KEY": str(pki.client_key),
        },
    )
    assert_one_line_exit_2(
        result,
        f"PUSHWARDEN_CONSENT_TLS_KEY: {str(pki.client_key)!r} is not the private key of the "
        f"certificate in PUSHWARDEN_CONSENT_TLS_CERT ({str(pki.server_cert)!r})",
    )
