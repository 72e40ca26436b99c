"""The consent service as a deployable: boots from its composition root on a real
database, serves health and reflection, answers each RPC it does not implement yet
with UNIMPLEMENTED naming it, and refuses bad configuration at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.config import ConfigError, load_config
from pushwarden.runtime.migrations import schema_diff
from pushwarden.runtime.servicetest import (
    assert_one_line_refusal,
    assert_serving_and_reflected,
    assert_unimplemented_rpcs,
    local_test_config,
    run_service_module,
    serving,
)
from pushwarden.services.consent.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.consent.config import ConsentConfig
from pushwarden.services.consent.models import Base
from pushwarden.services.consent.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    ConsentServicer,
)

# The migration tests start from empty databases, not the suite's migrated template.
PUSHWARDEN_TEST_MIGRATIONS = None
MODULE = "pushwarden.services.consent"
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
    return local_test_config(ConsentConfig, database_url, PSEUDONYM_KEY=KEY)


@pytest.fixture
async def channel(database_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with serving(bootstrap(make_config(database_url))) as open_channel:
        yield open_channel


async def test_health_and_reflection_serve_the_consent_service(
    channel: grpc.aio.Channel,
) -> None:
    assert SERVICE_NAME == "pushwarden.consent.v1.ConsentService"
    await assert_serving_and_reflected(channel, SERVICE_NAME)


async def test_rpcs_not_built_yet_answer_unimplemented_naming_themselves(
    channel: grpc.aio.Channel,
) -> None:
    await assert_unimplemented_rpcs(channel, SERVICE_DESCRIPTOR, ConsentServicer, SKETCH_RPCS)


async def test_migrations_give_exactly_the_models_and_rerun_cleanly(any_database_url: str) -> None:
    config = make_config(any_database_url)
    await bootstrap(config).aclose()
    await bootstrap(config).aclose()  # a second start finds nothing to migrate
    assert schema_diff(any_database_url, Base.metadata, MIGRATIONS) == []


def test_a_bad_port_stops_the_process_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_service_module(MODULE, PREFIX, {f"{PREFIX}PORT": "abc"}, tmp_path)
    line = assert_one_line_refusal(result, f"{PREFIX}PORT: ")
    assert "'abc' is not an integer" in line
    assert not (tmp_path / "var").exists()  # nothing was created before the check


def test_an_unreachable_database_stops_the_process_with_one_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/consent"
    result = run_service_module(
        MODULE, PREFIX, {f"{PREFIX}DATABASE_URL": url, f"{PREFIX}PSEUDONYM_KEY": KEY}, tmp_path
    )
    assert_one_line_refusal(result, f"{PREFIX}DATABASE_URL: cannot connect")


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
