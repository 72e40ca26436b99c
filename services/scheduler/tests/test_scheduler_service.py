"""The scheduler service as a deployable: boots from its composition root on a real
database, serves health and reflection, answers every RPC (UNIMPLEMENTED until issue 6),
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
from pushwarden.services.scheduler.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.scheduler.config import SchedulerConfig
from pushwarden.services.scheduler.models import Base
from pushwarden.services.scheduler.servicer import PENDING_ISSUE, SERVICE_DESCRIPTOR, SERVICE_NAME

PREFIX = "PUSHWARDEN_SCHEDULER_"
# The RPCs DESIGN.md's API sketch names for this service.
SKETCH_RPCS = {
    "SendTransactional", "CreateCampaign", "StartCampaign", "PauseCampaign", "ResumeCampaign",
    "CancelCampaign", "GetCampaign", "ListCampaigns", "PreviewCampaign", "ExplainDecision",
    "CreateTrigger", "ListTriggers", "SetTriggerEnabled", "SetPolicy", "GetPolicy",
}  # fmt: skip


def make_config(database_url: str) -> SchedulerConfig:
    return load_config(
        SchedulerConfig,
        environ={
            f"{PREFIX}HOST": "127.0.0.1",
            f"{PREFIX}PORT": "0",
            f"{PREFIX}DATABASE_URL": database_url,
            f"{PREFIX}DB_POOL_SIZE": "2",
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


async def test_reflection_lists_the_scheduler_service(channel: grpc.aio.Channel) -> None:
    assert SERVICE_NAME == "pushwarden.scheduler.v1.SchedulerService"
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
        assert f"SchedulerService/{method.name} is not implemented yet (issue 6)" in str(
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


def test_a_bad_port_stops_the_process_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(PREFIX)}
    env[f"{PREFIX}PORT"] = "abc"
    result = subprocess.run(
        [sys.executable, "-m", "pushwarden.services.scheduler"],
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


def test_peer_addresses_default_to_the_local_ports_and_follow_the_environment() -> None:
    default = load_config(SchedulerConfig, environ={})
    assert (default.consent_addr, default.segmentation_addr, default.delivery_addr) == (
        "127.0.0.1:50051",
        "127.0.0.1:50052",
        "127.0.0.1:50054",
    )
    configured = load_config(
        SchedulerConfig, environ={f"{PREFIX}DELIVERY_ADDR": "dns:///delivery:50054"}
    )
    assert configured.delivery_addr == "dns:///delivery:50054"
    assert configured.port == 50053


def test_a_misspelt_peer_variable_is_refused() -> None:
    with pytest.raises(ConfigError, match=f"did you mean {PREFIX}CONSENT_ADDR"):
        load_config(SchedulerConfig, environ={f"{PREFIX}CONSENT_ADRR": "consent:50051"})
