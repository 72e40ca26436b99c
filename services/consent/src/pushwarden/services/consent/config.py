"""Settings of the consent service (``PUSHWARDEN_CONSENT_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pushwarden.runtime.config import ConfigError, ServiceConfig, port_setting, setting
from pushwarden.runtime.db import is_sqlite

SERVICE = "consent"
DEFAULT_PORT = 50051
MIN_PSEUDONYM_KEY_CHARS = 32


def parse_pseudonym_key(raw: str) -> str:
    """A pseudonym key is a secret of at least :data:`MIN_PSEUDONYM_KEY_CHARS` characters."""
    key = raw.strip()
    if len(key) < MIN_PSEUDONYM_KEY_CHARS:
        raise ValueError(
            f"too short ({len(key)} characters, expected at least {MIN_PSEUDONYM_KEY_CHARS}; "
            "e.g. 64 hex digits from `openssl rand -hex 32`)"
        )
    return key


@dataclass(frozen=True, kw_only=True)
class ConsentConfig(ServiceConfig):
    """The consent service's configuration: the runtime's settings plus the key that
    turns (app, user) into the pseudonym the consent ledger and suppression records use."""

    SERVICE: ClassVar[str] = SERVICE

    port: int = port_setting(DEFAULT_PORT)
    pseudonym_key: str | None = setting(
        None,
        help="Secret HMAC key that names users in the consent ledger and suppression "
        f"records (at least {MIN_PSEUDONYM_KEY_CHARS} characters); required with "
        "PostgreSQL. Keep it across restarts: a new key forgets every suppression.",
        parse=parse_pseudonym_key,
        type_doc="secret string (optional with SQLite)",
    )
    feed_retention_days: int = setting(
        7,
        help="Days the change feed keeps changes (WatchChanges); an older cursor is "
        "CURSOR_EXPIRED. ERASED changes carry the user id for this long, no longer.",
        minimum=7,
        maximum=365,
    )
    feed_heartbeat_s: float = setting(
        10.0,
        help="Seconds between heartbeats of an idle WatchChanges stream.",
        minimum=0.05,
        maximum=30,
    )
    feed_poll_s: float = setting(
        0.5,
        help="Seconds between checks for changes committed by other replicas while a "
        "WatchChanges stream is idle (changes of this process wake it at once).",
        minimum=0.01,
        maximum=10,
    )

    def validate(self) -> None:
        """The runtime's rules, and a pseudonym key whenever the database is PostgreSQL:
        a production deployment must not fall back to an unkeyed or throwaway pseudonym."""
        super().validate()
        if self.pseudonym_key is None and not is_sqlite(self.database_url):
            raise ConfigError(
                self.env_name("pseudonym_key"),
                f"required when {self.env_name('database_url')} is a PostgreSQL URL",
            )
