"""The fake providers with one app's credentials, for tests of services that deliver.

:func:`provider_sandbox` starts the fake APNs (on the running loop) and the fake FCM
(on a thread of its own: google-auth blocks), writes the app's APNs key, FCM service
account and the credentials TOML that ``PUSHWARDEN_DELIVERY_CREDENTIALS`` names, and
trusts the fakes' CA process-wide while it runs. Tests assert what the fakes received
through ``sandbox.apns.recorder`` and ``sandbox.fcm.recorder``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pushwarden.sandbox import fcm
from pushwarden.sandbox.apns import ApnsKey, generate_signing_key, start_apns
from pushwarden.sandbox.core import SandboxServer, ThreadedSandbox

KEY_ID = "KEY0000001"
TEAM_ID = "TEAM000001"


@dataclass
class Sandbox:
    """The running fakes and the credentials file that points at them."""

    apns: SandboxServer
    fcm: ThreadedSandbox
    credentials_file: Path


@contextlib.asynccontextmanager
async def provider_sandbox(
    directory: Path, *, app: str, topic: str, project: str
) -> AsyncIterator[Sandbox]:
    """The fakes, serving ``app`` (APNs topic ``topic``, FCM project ``project``), with
    their state and the credentials under ``directory``."""
    pem = generate_signing_key()
    _write_key(directory, app, pem)
    key = ApnsKey.from_private_pem(KEY_ID, TEAM_ID, pem, [topic])
    account, account_key = fcm.new_service_account(project)
    apns_server = await start_apns([key], state_dir=directory / "sandbox")
    assert apns_server.ca_file is not None
    try:
        with (
            fcm.run_fcm_in_thread([account], state_dir=directory / "sandbox") as fcm_server,
            fcm.sandbox_ca_trust(apns_server.ca_file),
        ):
            fcm.write_service_account_file(
                directory / f"{app}-sa.json", account, account_key, f"{fcm_server.url}/token"
            )
            credentials = directory / "credentials.toml"
            credentials.write_text(
                "\n".join(
                    [
                        f"[apps.{app}.apns]",
                        f'key_file = "{app}.p8"',
                        f'key_id = "{KEY_ID}"',
                        f'team_id = "{TEAM_ID}"',
                        f'topic = "{topic}"',
                        'environment = "sandbox"',
                        f"endpoint = '{apns_server.url}'",
                        f"[apps.{app}.fcm]",
                        f'service_account_file = "{app}-sa.json"',
                        f'project_id = "{project}"',
                        f"endpoint = '{fcm_server.url}'",
                    ]
                )
                + "\n"
            )
            yield Sandbox(apns_server, fcm_server, credentials)
    finally:
        await apns_server.close()


def _write_key(directory: Path, app: str, pem: str) -> None:
    """The APNs signing key where the credentials file names it (small, written once)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{app}.p8").write_text(pem)
