"""The credentials file and the classification tables, without any network.

A bad credentials file stops the service at start with one ConfigError line that
names the variable, the file and the key; the tables answer every row they list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pushwarden.runtime.config import ConfigError, load_config
from pushwarden.sandbox.apns import generate_signing_key
from pushwarden.services.delivery.config import DeliveryConfig
from pushwarden.services.delivery.providers import (
    ApnsCredentials,
    Endpoint,
    Verdict,
    apns_id_for,
    classify_apns,
    classify_fcm,
)
from pushwarden.services.delivery.providers.classify import retry_after_seconds

VAR = "PUSHWARDEN_DELIVERY_CREDENTIALS"

APNS = """
[apps.shop.apns]
key_file = "key.p8"
key_id = "ABC123DEFG"
team_id = "TEAM123456"
topic = "com.example.shop"
"""
FCM = """
[apps.shop.fcm]
service_account_file = "sa.json"
project_id = "shop-prod"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "key.p8").write_text(generate_signing_key())
    (tmp_path / "sa.json").write_text(json.dumps({"type": "service_account"}))
    return tmp_path


def load(folder: Path, text: str) -> DeliveryConfig:
    path = folder / "credentials.toml"
    path.write_text(text)
    return load_config(DeliveryConfig, environ={VAR: str(path)})


def test_a_file_with_both_providers_gives_typed_frozen_settings(folder: Path) -> None:
    text = APNS + 'environment = "sandbox"\nendpoint = "https://127.0.0.1:50061"\n' + FCM
    apps = load(folder, text).provider_credentials().apps
    shop = apps["shop"]
    assert isinstance(shop.apns, ApnsCredentials)
    assert (shop.apns.key_id, shop.apns.team_id, shop.apns.topic, shop.apns.environment) == (
        "ABC123DEFG",
        "TEAM123456",
        "com.example.shop",
        "sandbox",
    )
    assert shop.apns.endpoint == Endpoint("127.0.0.1", 50061)
    assert shop.apns.key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert "PRIVATE" not in repr(shop.apns)  # the key never reaches a log line
    assert shop.fcm is not None
    assert shop.fcm.service_account_file == folder / "sa.json"
    assert (shop.fcm.project_id, shop.fcm.endpoint) == ("shop-prod", None)
    with pytest.raises(TypeError):
        apps["other"] = shop  # type: ignore[index]


def test_no_file_and_an_empty_file_mean_no_apps(folder: Path) -> None:
    assert load_config(DeliveryConfig, environ={}).provider_credentials().apps == {}
    assert load(folder, "# no app yet\n").provider_credentials().apps == {}


BAD_FILES = [
    ("[apps.shop]\n", "apps.shop: has neither an [apns] nor an [fcm] table"),
    (APNS.replace('key_id = "ABC123DEFG"\n', ""), "apps.shop.apns.key_id: must be a non-empty"),
    (APNS.replace("key.p8", "missing.p8"), "apps.shop.apns.key_file: file '"),
    (APNS.replace("key.p8", "sa.json"), "apps.shop.apns.key_file: '"),
    (APNS + 'environment = "staging"\n', "apps.shop.apns.environment: 'staging' is not"),
    (APNS + 'endpoint = "http://x:1"\n', "apps.shop.apns.endpoint: 'http://x:1' is not"),
    (APNS + "colour = 1\n", "apps.shop.apns.colour: unknown key"),
    (FCM.replace("sa.json", "key.p8"), "apps.shop.fcm.service_account_file: unreadable JSON"),
    (FCM.replace('project_id = "shop-prod"\n', ""), "apps.shop.fcm.project_id: must be"),
    ("[tenants.shop]\n", "tenants: unknown key"),
    ("[apps\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_FILES)
def test_a_bad_file_is_one_config_error_line_naming_the_file_and_key(
    folder: Path, text: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(folder, text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{VAR}: ")
    assert problem in message
    assert str(folder / "credentials.toml") in message


def test_apns_id_is_the_send_id_when_a_uuid_else_derived_and_stable() -> None:
    send_id = "6f1c0a2e-0d55-4f0c-9a77-1b2c3d4e5f60"
    assert apns_id_for(send_id) == send_id
    assert apns_id_for("order-42") == apns_id_for("order-42") != apns_id_for("order-43")


@pytest.mark.parametrize(
    ("status", "reason", "verdict"),
    [
        ("200", None, Verdict.DELIVERED),
        ("410", "Unregistered", Verdict.TOKEN_DEAD),
        ("410", "ExpiredToken", Verdict.TOKEN_DEAD),
        ("400", "BadDeviceToken", Verdict.TOKEN_DEAD),
        ("400", "DeviceTokenNotForTopic", Verdict.TOKEN_DEAD),
        ("400", "BadTopic", Verdict.PERMANENT),
        ("413", "PayloadTooLarge", Verdict.PERMANENT),
        ("403", "ExpiredProviderToken", Verdict.REFRESH_CREDENTIALS),
        ("403", "InvalidProviderToken", Verdict.REFRESH_CREDENTIALS),
        ("403", "BadCertificate", Verdict.PERMANENT),
        ("429", "TooManyProviderTokenUpdates", Verdict.RETRY),
        ("500", "InternalServerError", Verdict.RETRY),
        ("503", "Shutdown", Verdict.RETRY),
    ],
)
def test_apns_table(status: str, reason: str | None, verdict: Verdict) -> None:
    assert classify_apns(status, reason) is verdict


@pytest.mark.parametrize(
    ("code", "status", "verdict"),
    [
        ("UNREGISTERED", 404, Verdict.TOKEN_DEAD),
        ("INVALID_ARGUMENT", 400, Verdict.PERMANENT),
        ("QUOTA_EXCEEDED", 429, Verdict.RETRY),
        ("UNAVAILABLE", 503, Verdict.RETRY),
        ("THIRD_PARTY_AUTH_ERROR", 401, Verdict.PERMANENT),
        ("SOMETHING_NEW", 409, Verdict.PERMANENT),
        ("SOMETHING_NEW", 502, Verdict.RETRY),
        ("SOMETHING_NEW", None, Verdict.RETRY),
    ],
)
def test_fcm_table(code: str, status: int | None, verdict: Verdict) -> None:
    assert classify_fcm(code, status) is verdict


def test_retry_after_takes_seconds_or_an_http_date() -> None:
    import datetime as dt

    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert retry_after_seconds("30") == 30.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:45 GMT", now=now) == 45.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
