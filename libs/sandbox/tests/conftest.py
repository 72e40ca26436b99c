"""Fixtures shared by the sandbox tests: TLS material and an APNs signing key.

Kept small on purpose (both fakes' tests use it); provider-specific helpers
live in the library (``pushwarden.sandbox.clients``) or in the test files.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.clients import ApnsCredentials
from pushwarden.sandbox.core import SandboxServer

APNS_KEY_ID = "TESTKEY001"
APNS_TEAM_ID = "TESTTEAM01"
APNS_TOPIC = "com.example.app"


@pytest.fixture(scope="session")
def sandbox_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory of TLS material (CA + server cert) for the whole run."""
    return tmp_path_factory.mktemp("sandbox-state")


@pytest.fixture(scope="session")
def apns_signing_key() -> str:
    """A throwaway EC P-256 key (PKCS#8 PEM), the kind of .p8 key aioapns takes."""
    return generate_signing_key()


@pytest.fixture(scope="session")
def apns_creds(apns_signing_key: str) -> ApnsCredentials:
    """What an aioapns client needs to sign for the key ``apns_server`` accepts."""
    return ApnsCredentials(apns_signing_key, APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC)


@pytest.fixture
async def apns_server(
    sandbox_state_dir: Path, apns_signing_key: str
) -> AsyncIterator[SandboxServer]:
    """A fake APNs on port 0 that accepts ``apns_signing_key`` for ``APNS_TOPIC``."""
    key = ApnsKey.from_private_pem(APNS_KEY_ID, APNS_TEAM_ID, apns_signing_key, [APNS_TOPIC])
    server = await start_apns([key], state_dir=sandbox_state_dir)
    try:
        yield server
    finally:
        await server.close()
