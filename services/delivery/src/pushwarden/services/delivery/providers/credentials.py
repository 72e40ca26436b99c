"""The provider credentials file (TOML): one ``[apps.<app_id>]`` table per app.

::

    [apps.shop.apns]
    key_file = "AuthKey_ABC123DEFG.p8"   # the .p8 key; relative to this file
    key_id = "ABC123DEFG"
    team_id = "TEAM123456"
    topic = "com.example.shop"           # the app's bundle id
    environment = "production"           # or "sandbox" (Apple's development host)
    # endpoint = "https://127.0.0.1:50061"  # a fake APNs instead of Apple

    [apps.shop.fcm]
    service_account_file = "shop-firebase.json"
    project_id = "shop-prod"
    # endpoint = "https://127.0.0.1:50062"  # a fake FCM instead of Google

An app has either table or both.  Keys and service accounts are read and
checked when the file is loaded, so a bad file stops the service at start
with one line naming the file and the key.  TLS trust for an overridden
endpoint comes from the process (``SSL_CERT_FILE`` / ``REQUESTS_CA_BUNDLE``),
which is how google-auth's token requests can be made to trust a fake too.
"""

from __future__ import annotations

import json
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

ApnsEnvironment = Literal["production", "sandbox"]


class CredentialsError(ValueError):
    """The credentials file is wrong; ``str()`` is one line naming the file and the key."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a provider client connects instead of the provider's own host (HTTPS)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """``https://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ApnsCredentials:
    """An APNs token-auth key of one app: the .p8 PEM text, its ids and the app's topic."""

    key_pem: str = field(repr=False)
    key_id: str
    team_id: str
    topic: str
    environment: ApnsEnvironment = "production"
    endpoint: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class FcmCredentials:
    """A Firebase project of one app: its service-account key file and project id."""

    service_account_file: Path
    project_id: str
    endpoint: Endpoint | None = None


@dataclass(frozen=True, slots=True)
class AppCredentials:
    """What one app delivers with; either provider may be absent."""

    app_id: str
    apns: ApnsCredentials | None = None
    fcm: FcmCredentials | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every app's credentials, by app id (read-only)."""

    apps: Mapping[str, AppCredentials] = field(default_factory=lambda: types.MappingProxyType({}))


def load_credentials(path: Path) -> Credentials:
    """Read and check the credentials file; :class:`CredentialsError` on the first problem."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialsError(f"file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"cannot read {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialsError(f"{path}: invalid TOML: {exc}") from None
    reader = _Reader(path)
    reader.only(document, "", {"apps"})
    apps = reader.table(document, "apps", required=False)
    parsed = {
        app_id: reader.app(app_id, reader.table(apps, app_id, prefix="apps.")) for app_id in apps
    }
    return Credentials(types.MappingProxyType(parsed))


class _Reader:
    """Typed reads from the parsed TOML, each failure naming the file and the dotted key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> CredentialsError:
        return CredentialsError(f"{self.path}: {key}: {problem}")

    def only(self, table: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            expected = ", ".join(sorted(allowed))
            raise self.fail(where + unknown[0], f"unknown key (expected {expected})")

    def table(
        self, parent: Mapping[str, Any], key: str, *, prefix: str = "", required: bool = True
    ) -> Mapping[str, Any]:
        value = parent.get(key)
        if value is None and not required:
            return {}
        if not isinstance(value, dict):
            raise self.fail(prefix + key, "must be a table")
        return value

    def string(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}.{key}", "must be a non-empty string")
        return value.strip()

    def file(self, table: Mapping[str, Any], key: str, where: str) -> Path:
        path = Path(self.string(table, key, where)).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path
        if not path.is_file():
            raise self.fail(f"{where}.{key}", f"file {str(path)!r} does not exist")
        return path

    def endpoint(self, table: Mapping[str, Any], where: str) -> Endpoint | None:
        if "endpoint" not in table:
            return None
        raw = self.string(table, "endpoint", where)
        parts = urlsplit(raw if "://" in raw else f"https://{raw}")
        try:
            port = parts.port or 443
        except ValueError:
            port = -1
        if parts.scheme != "https" or not parts.hostname or port < 1 or parts.path not in ("", "/"):
            raise self.fail(f"{where}.endpoint", f"{raw!r} is not https://host:port")
        return Endpoint(parts.hostname, port)

    def app(self, app_id: str, table: Mapping[str, Any]) -> AppCredentials:
        where = f"apps.{app_id}"
        self.only(table, where + ".", {"apns", "fcm"})
        if not table:
            raise self.fail(where, "has neither an [apns] nor an [fcm] table")
        apns = (
            self.apns(self.table(table, "apns", prefix=where + "."), where + ".apns")
            if ("apns" in table)
            else None
        )
        fcm = (
            self.fcm(self.table(table, "fcm", prefix=where + "."), where + ".fcm")
            if ("fcm" in table)
            else None
        )
        return AppCredentials(app_id, apns=apns, fcm=fcm)

    def apns(self, table: Mapping[str, Any], where: str) -> ApnsCredentials:
        keys = {"key_file", "key_id", "team_id", "topic", "environment", "endpoint"}
        self.only(table, where + ".", keys)
        key_path = self.file(table, "key_file", where)
        pem = key_path.read_text(encoding="utf-8")
        if "-----BEGIN PRIVATE KEY-----" not in pem:
            raise self.fail(f"{where}.key_file", f"{str(key_path)!r} is not a .p8 (PKCS#8 PEM) key")
        environment = table.get("environment", "production")
        if environment not in ("production", "sandbox"):
            raise self.fail(f"{where}.environment", f"{environment!r} is not production or sandbox")
        return ApnsCredentials(
            key_pem=pem,
            key_id=self.string(table, "key_id", where),
            team_id=self.string(table, "team_id", where),
            topic=self.string(table, "topic", where),
            environment=environment,
            endpoint=self.endpoint(table, where),
        )

    def fcm(self, table: Mapping[str, Any], where: str) -> FcmCredentials:
        self.only(table, where + ".", {"service_account_file", "project_id", "endpoint"})
        account_path = self.file(table, "service_account_file", where)
        try:
            account = json.loads(account_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self.fail(f"{where}.service_account_file", f"unreadable JSON: {exc}") from None
        if not isinstance(account, dict) or account.get("type") != "service_account":
            raise self.fail(
                f"{where}.service_account_file",
                f"{str(account_path)!r} is not a service-account key (type service_account)",
            )
        return FcmCredentials(
            service_account_file=account_path,
            project_id=self.string(table, "project_id", where),
            endpoint=self.endpoint(table, where),
        )
