"""Categories end to end through real gRPC, on SQLite and PostgreSQL: DefineCategory,
ListCategories and BatchGetCategories with their documented errors, apps side by side,
app grants, and the service clock behind the timestamps."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from pushwarden.common.v1 import types_pb2
from pushwarden.consent.v1 import consent_pb2_grpc, messages_pb2, resources_pb2
from pushwarden.runtime.clock import shift_clock_file
from pushwarden.runtime.servicetest import local_test_config, rich_error, serving
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import ConsentConfig

KEY = "k" * 64
TRANSACTIONAL = types_pb2.CATEGORY_KIND_TRANSACTIONAL
MARKETING = types_pb2.CATEGORY_KIND_MARKETING
OPTED_IN = resources_pb2.DEFAULT_STATE_OPTED_IN
OPTED_OUT = resources_pb2.DEFAULT_STATE_OPTED_OUT

if TYPE_CHECKING:  # the async stub type exists in the typed stubs only
    from pushwarden.consent.v1.consent_pb2_grpc import ConsentServiceAsyncStub as Stub


@pytest.fixture
async def stub(any_database_url: str) -> AsyncIterator[Stub]:
    config = local_test_config(ConsentConfig, any_database_url, PSEUDONYM_KEY=KEY)
    async with serving(bootstrap(config)) as channel:
        yield consent_pb2_grpc.ConsentServiceStub(channel)


def category(
    category_id: str,
    kind: types_pb2.CategoryKind.ValueType = MARKETING,
    default_state: resources_pb2.DefaultState.ValueType = OPTED_IN,
    **fields: Any,
) -> resources_pb2.Category:
    return resources_pb2.Category(
        category_id=category_id, kind=kind, default_state=default_state, **fields
    )


async def define(
    stub: Stub, app: str, cat: resources_pb2.Category
) -> messages_pb2.DefineCategoryResponse:
    return await stub.DefineCategory(messages_pb2.DefineCategoryRequest(app_id=app, category=cat))


async def listed(stub: Stub, app: str, **filters: Any) -> list[str]:
    reply = await stub.ListCategories(messages_pb2.ListCategoriesRequest(app_id=app, **filters))
    return [c.category_id for c in reply.categories]


async def test_define_creates_then_updates_only_what_changed(stub: Stub) -> None:
    first = await define(stub, "shop", category("promos", display_name="Promotions"))
    assert first.created
    assert first.category.kind == MARKETING
    assert first.category.user_can_opt_out  # marketing: always
    assert first.category.created_at == first.category.updated_at

    again = await define(stub, "shop", category("promos", display_name="Promotions"))
    assert not again.created
    assert again.category.updated_at == first.category.updated_at  # nothing changed

    changed = await define(
        stub,
        "shop",
        category("promos", MARKETING, OPTED_OUT, display_name="Deals", description="Weekly"),
    )
    assert not changed.created
    assert changed.category.default_state == OPTED_OUT
    assert changed.category.description == "Weekly"
    assert changed.category.created_at == first.category.created_at
    assert changed.category.updated_at.ToDatetime() >= first.category.updated_at.ToDatetime()
    reply = await stub.BatchGetCategories(
        messages_pb2.BatchGetCategoriesRequest(app_id="shop", category_ids=["promos"])
    )
    assert reply.categories[0] == changed.category  # stored as answered


async def test_transactional_categories_default_to_no_opt_out(stub: Stub) -> None:
    plain = await define(stub, "shop", category("orders", TRANSACTIONAL))
    assert not plain.category.user_can_opt_out
    allowing = await define(
        stub, "shop", category("receipts", TRANSACTIONAL, user_can_opt_out=True)
    )
    assert allowing.category.user_can_opt_out


async def test_the_kind_never_changes(stub: Stub) -> None:
    await define(stub, "shop", category("orders", TRANSACTIONAL, description="v1"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await define(stub, "shop", category("orders", MARKETING, description="v2"))
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "CATEGORY_KIND_IMMUTABLE"
    assert error.preconditions == ("CATEGORY_KIND_IMMUTABLE",)
    reply = await stub.BatchGetCategories(
        messages_pb2.BatchGetCategoriesRequest(app_id="shop", category_ids=["orders"])
    )
    assert reply.categories[0].kind == TRANSACTIONAL
    assert reply.categories[0].description == "v1"  # the refused call changed nothing


@pytest.mark.parametrize(
    ("app", "cat", "field"),
    [
        ("", category("promos"), "app_id"),
        ("shop", category(""), "category.category_id"),
        ("shop", category(" promos"), "category.category_id"),
        ("shop", category("x" * 129), "category.category_id"),
        ("shop", category("promos", types_pb2.CATEGORY_KIND_UNSPECIFIED), "category.kind"),
        ("shop", category("promos", 7), "category.kind"),  # type: ignore[arg-type]
        (
            "shop",
            category("promos", default_state=resources_pb2.DEFAULT_STATE_UNSPECIFIED),
            "category.default_state",
        ),
        ("shop", category("promos", user_can_opt_out=False), "category.user_can_opt_out"),
        ("shop", category("promos", description="d" * 1025), "category.description"),
        ("shop", category("promos", display_name="bell\x07"), "category.display_name"),
    ],
)
async def test_bad_categories_are_refused_naming_the_field_and_write_nothing(
    stub: Stub, app: str, cat: resources_pb2.Category, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await define(stub, app, cat)
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.fields, error.fields
    assert field in error.message
    assert await listed(stub, "shop") == []


async def test_every_violation_is_reported_at_once(stub: Stub) -> None:
    bad = resources_pb2.Category(category_id="", description="d" * 2000)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await define(stub, "shop", bad)
    assert set(rich_error(raised.value).fields) == {
        "category.category_id",
        "category.kind",
        "category.default_state",
        "category.description",
    }


async def test_list_pages_in_id_order_and_filters_by_kind(stub: Stub) -> None:
    for name in ("e", "b", "d", "a", "c"):
        kind = TRANSACTIONAL if name in "bd" else MARKETING
        await define(stub, "shop", category(name, kind))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        reply = await stub.ListCategories(
            messages_pb2.ListCategoriesRequest(app_id="shop", page_size=2, page_token=token)
        )
        seen += [c.category_id for c in reply.categories]
        pages += 1
        token = reply.next_page_token
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    assert pages == 3
    assert await listed(stub, "shop", kind=TRANSACTIONAL) == ["b", "d"]
    assert await listed(stub, "shop", kind=MARKETING) == ["a", "c", "e"]


async def test_list_refuses_bad_paging(stub: Stub) -> None:
    await define(stub, "shop", category("a"))
    await define(stub, "shop", category("b"))
    first = await stub.ListCategories(
        messages_pb2.ListCategoriesRequest(app_id="shop", page_size=1)
    )
    cases = [
        (messages_pb2.ListCategoriesRequest(app_id="shop", page_size=-1), "page_size"),
        (messages_pb2.ListCategoriesRequest(app_id="shop", page_token="garbage!"), "page_token"),
        (
            messages_pb2.ListCategoriesRequest(
                app_id="shop", kind=TRANSACTIONAL, page_token=first.next_page_token
            ),
            "page_token",
        ),
        (messages_pb2.ListCategoriesRequest(app_id="shop", kind=9), "kind"),  # type: ignore[arg-type]
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListCategories(request)
        error = rich_error(raised.value)
        assert error.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in error.fields


async def test_batch_get_answers_in_request_order_and_lists_unknown_ids(stub: Stub) -> None:
    for name in ("orders", "promos", "news"):
        await define(stub, "shop", category(name))
    reply = await stub.BatchGetCategories(
        messages_pb2.BatchGetCategoriesRequest(
            app_id="shop", category_ids=["news", "nope", "orders", "gone"]
        )
    )
    assert [c.category_id for c in reply.categories] == ["news", "orders"]
    assert list(reply.unknown_category_ids) == ["nope", "gone"]


@pytest.mark.parametrize(
    "ids", [[], ["a", "a"], [f"c{i}" for i in range(1001)]], ids=["empty", "repeat", "1001"]
)
async def test_batch_get_refuses_bad_batches(stub: Stub, ids: list[str]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.BatchGetCategories(
            messages_pb2.BatchGetCategoriesRequest(app_id="shop", category_ids=ids)
        )
    error = rich_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "BATCH_SIZE"


async def test_apps_never_see_each_other(stub: Stub) -> None:
    await define(stub, "shop", category("promos", TRANSACTIONAL))
    other = await define(stub, "news", category("promos", MARKETING))
    assert other.created  # same id, other app: a different category
    assert await listed(stub, "news") == ["promos"]
    reply = await stub.BatchGetCategories(
        messages_pb2.BatchGetCategoriesRequest(app_id="radio", category_ids=["promos"])
    )
    assert list(reply.unknown_category_ids) == ["promos"]


async def test_a_caller_granted_one_app_may_not_touch_another(
    database_url: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "callers.toml"
    digest = hashlib.sha256(b"shop-secret").hexdigest()
    tokens.write_text(
        f'[[caller]]\nname = "shop-backend"\ntoken_sha256 = "{digest}"\n'
        'methods = ["*"]\napps = ["shop"]\n'
    )
    config = local_test_config(
        ConsentConfig, database_url, PSEUDONYM_KEY=KEY, AUTH_TOKENS_FILE=str(tokens)
    )
    auth = (("authorization", "Bearer shop-secret"),)
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        request = messages_pb2.DefineCategoryRequest(app_id="shop", category=category("a"))
        assert (await stub.DefineCategory(request, metadata=auth)).created
        calls: list[Awaitable[Any]] = [
            stub.DefineCategory(
                messages_pb2.DefineCategoryRequest(app_id="news", category=category("a")),
                metadata=auth,
            ),
            stub.ListCategories(messages_pb2.ListCategoriesRequest(app_id="news"), metadata=auth),
            stub.BatchGetCategories(
                messages_pb2.BatchGetCategoriesRequest(app_id="news", category_ids=["a"]),
                metadata=auth,
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert rich_error(raised.value).reason == "APP_NOT_ALLOWED"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.ListCategories(messages_pb2.ListCategoriesRequest(app_id="shop"))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_timestamps_come_from_the_service_clock(database_url: str, tmp_path: Path) -> None:
    clock_file = tmp_path / "clock.json"
    config = local_test_config(
        ConsentConfig, database_url, PSEUDONYM_KEY=KEY, CLOCK_FILE=str(clock_file)
    )
    async with serving(bootstrap(config)) as channel:
        stub: Stub = consent_pb2_grpc.ConsentServiceStub(channel)
        before = datetime.now(UTC)
        real = (await define(stub, "shop", category("a"))).category.created_at.ToDatetime(UTC)
        assert abs(real - before) < timedelta(minutes=1)  # no file yet: real time
        shift_clock_file(clock_file, to=datetime(2030, 3, 31, 0, 59, tzinfo=UTC))
        shifted = (await define(stub, "shop", category("b"))).category.created_at
        assert datetime(2030, 3, 31, 0, 59, tzinfo=UTC) <= shifted.ToDatetime(UTC)
        assert shifted.ToDatetime(UTC) < datetime(2030, 3, 31, 1, 0, tzinfo=UTC)
