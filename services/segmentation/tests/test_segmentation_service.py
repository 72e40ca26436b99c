"""The segmentation service as a deployable: boots from its composition root on a real
database, serves health and reflection, answers each RPC it does not implement yet
with UNIMPLEMENTED naming it, and refuses bad configuration at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pushwarden.runtime.migrations import schema_diff
from pushwarden.runtime.servicetest import (
    assert_one_line_refusal,
    assert_serving_and_reflected,
    assert_unimplemented_rpcs,
    local_test_config,
    run_service_module,
    serving,
)
from pushwarden.services.segmentation.bootstrap import MIGRATIONS, bootstrap
from pushwarden.services.segmentation.config import SegmentationConfig
from pushwarden.services.segmentation.models import Base, include_in_schema_diff
from pushwarden.services.segmentation.servicer import (
    SERVICE_DESCRIPTOR,
    SERVICE_NAME,
    SegmentationServicer,
)

MODULE = "pushwarden.services.segmentation"
PREFIX = "PUSHWARDEN_SEGMENTATION_"
# The RPCs DESIGN.md's API sketch names for this service.
SKETCH_RPCS = {
    "UpsertProfiles", "TrackEvents", "CreateSegment", "GetSegment", "ListSegments",
    "DeleteSegment", "EvaluateSegment", "CountSegment", "CheckMembership", "CreateList",
    "AddToList", "RemoveFromList", "StreamEvents",
}  # fmt: skip


def make_config(database_url: str) -> SegmentationConfig:
    return local_test_config(SegmentationConfig, database_url)


@pytest.fixture
async def channel(database_url: str) -> AsyncIterator[grpc.aio.Channel]:
    async with serving(bootstrap(make_config(database_url))) as open_channel:
        yield open_channel


async def test_health_and_reflection_serve_the_segmentation_service(
    channel: grpc.aio.Channel,
) -> None:
    assert SERVICE_NAME == "pushwarden.segmentation.v1.SegmentationService"
    await assert_serving_and_reflected(channel, SERVICE_NAME)


async def test_rpcs_not_built_yet_answer_unimplemented_naming_themselves(
    channel: grpc.aio.Channel,
) -> None:
    await assert_unimplemented_rpcs(channel, SERVICE_DESCRIPTOR, SegmentationServicer, SKETCH_RPCS)


async def test_migrations_give_exactly_the_models_and_rerun_cleanly(any_database_url: str) -> None:
    config = make_config(any_database_url)
    await bootstrap(config).aclose()
    await bootstrap(config).aclose()  # a second start finds nothing to migrate
    assert (
        schema_diff(
            any_database_url, Base.metadata, MIGRATIONS, include_object=include_in_schema_diff
        )
        == []
    )


def test_a_bad_port_stops_the_process_with_one_line_naming_the_variable(tmp_path: Path) -> None:
    result = run_service_module(MODULE, PREFIX, {f"{PREFIX}PORT": "abc"}, tmp_path)
    line = assert_one_line_refusal(result, f"{PREFIX}PORT: ")
    assert "'abc' is not an integer" in line
    assert not (tmp_path / "var").exists()  # nothing was created before the check


def test_an_unreachable_database_stops_the_process_with_one_line(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:1/segmentation"
    result = run_service_module(MODULE, PREFIX, {f"{PREFIX}DATABASE_URL": url}, tmp_path)
    assert_one_line_refusal(result, f"{PREFIX}DATABASE_URL: cannot connect")
