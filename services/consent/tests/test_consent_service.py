"""The consent service as a deployable: boots from its composition root on a real
database, serves health and reflection, answers every RPC (UNIMPLEMENTED until issue 4),
and refuses bad configuration at start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.config import ConfigError, load_config
from pushwarden.runtime.healthprobe import health_status, reflected_services
from pushwarden.runtime.migrations import schema_diff
from pushwarden.runtime.server import create_server
from pushwarden.runtime.unimplemented import call_with_empty_request, unimplemented_message
from pushwarden.services.consent.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.models import Base
from pushwarden.services.consent.servicer import PENDING_ISSUE, SERVICE_DESCRIPTOR, SERVICE_NAME

PREFIX = "PUSHWARDEN_CONSENT_"
KEY = "k" * 64
# The RPCs DESIGN.md's API sketch names for this service.
SKETCH_RPCS = {
    "RegisterDevice", "UpdateDevice", "UnregisterDevice", "InvalidateDevice", "ListDevices",
    "DefineCategory", "ListCategories", "RecordConsent", "GetConsentState", "SetPreferences",
    "GetPreferences", "CheckEligibility", "GetLedger", "ExportUserData", "EraseUser",
    "RecordPermissionPrompt", "GetOptInFunnel", "GetAudienceHealth", "WatchChanges",
}  # fmt: skip


def make_config(database_url: str) -> ConsentConfig:
    return load_config(
        ConsentConfig,
        environ={
            f"{PREFIX}HOST": "127.0.0.1",
            f"{PREFIX}PORT": "0",
            f"{PREFIX}DATABASE_URL": database_url,
            f"{PREFIX}DB_POOL_SIZE": "2",
            f"{PREFIX}PSEUDONYM_KEY": KEY,
        },
    )


@pytest.fixture
async def channel(database_url: str) -> AsyncIterator[grpc.aio.Channel]:
    app = bootstrap(make_config(database_url))
    runtime = create_server(
        app.config.server_settings(), register=app.register, service_names=app.service_names
    )
    await runtime.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{runtime.port}") as open_channel:
            yield open_channel
    finally:
        await runtime.stop(0)
        app.close()


async def test_health_is_serving_for_the_server_and_the_service(
    channel: grpc.aio.Channel,
) -> None:
    assert await health_status(channel, "") == "SERVING"
    assert await health_status(channel, SERVICE_NAME) == "SERVING"


async def test_reflection_lists_the_consent_service(channel: grpc.aio.Channel) -> None:
    assert SERVICE_NAME == "pushwarden.consent.v1.ConsentService"
    assert SERVICE_NAME in await reflected_services(channel)


async def test_every_rpc_answers_unimplemented_naming_itself(channel: grpc.aio.Channel) -> None:
    methods = list(SERVICE_DESCRIPTOR.methods)
    missing = SKETCH_RPCS - {method.name for method in methods}
    assert not missing, f"RPCs of the API sketch missing from the contract: {missing}"
    for method in methods:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call_with_empty_request(channel, method)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED, method.name
        assert raised.value.details() == unimplemented_message(
            f"{SERVICE_NAME}/{method.name}", PENDING_ISSUE
        )
        assert f"ConsentService/{method.name} is not implemented yet (issue 4)" in str(
            raised.value.details()
        )


def test_migrations_give_exactly_the_models_and_rerun_cleanly(any_database_url: str) -> None:
    config = make_config(any_database_url)
    bootstrap(config).close()
    app = bootstrap(config)  # a second start finds nothing to migrate
    try:
        assert schema_diff(app.engine, Base.metadata, MIGRATIONS) == []
    finally:
        app.close()


def test_postgresql_without_a_pseudonym_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(
            ConsentConfig,
            environ={f"{PREFIX}DATABASE_URL": "postgresql+psycopg://pw@db:5432/consent"},
        )
    assert raised.value.env_name == f"{PREFIX}PSEUDONYM_KEY"
    assert "PostgreSQL" in str(raised.value)


def test_a_short_pseudonym_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=f"^{PREFIX}PSEUDONYM_KEY: too short"):
        load_config(ConsentConfig, environ={f"{PREFIX}PSEUDONYM_KEY": "short"})


def test_sqlite_runs_without_a_pseudonym_key() -> None:
    assert load_config(ConsentConfig, environ={}).pseudonym_key is None


def test_a_bad_port_stops_the_process_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(PREFIX)}
    env[f"{PREFIX}PORT"] = "abc"
    result = subprocess.run(
        [sys.executable, "-m", "pushwarden.services.consent"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PREFIX}PORT: "), lines[0]
    assert "'abc' is not an integer" in lines[0]
    assert not (tmp_path / "var").exists()  # nothing was created before the check


def test_an_unreachable_database_stops_the_process_with_one_line(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(PREFIX)}
    env[f"{PREFIX}DATABASE_URL"] = "postgresql+psycopg://nobody@127.0.0.1:1/consent"
    env[f"{PREFIX}PSEUDONYM_KEY"] = KEY
    result = subprocess.run(
        [sys.executable, "-m", "pushwarden.services.consent"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PREFIX}DATABASE_URL: cannot connect"), lines[0]
