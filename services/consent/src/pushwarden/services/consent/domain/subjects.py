"""The keyed pseudonym that names a user in the ledger and in suppression records.

``subject = HMAC-SHA256(key, app_id NUL user_id)``: stable for a deployment (so an erased
user id that registers again is recognised and stays suppressed), meaningless without
the key, and different per app.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonyms:
    """Turns (app, user) into the subject, with the deployment's secret key."""

    def __init__(self, key: str) -> None:
        if len(key) < 32:
            raise ValueError("the pseudonym key must have at least 32 characters")
        self._key = key.encode()

    @property
    def ledger_key(self) -> bytes:
        """The key of the ledger's entry hashes, derived from the same secret."""
        return hmac.new(self._key, b"pushwarden-ledger-v1", hashlib.sha256).digest()

    def subject(self, app_id: str, user_id: str) -> str:
        """The user's pseudonym (64 hex digits)."""
        message = app_id.encode() + b"\0" + user_id.encode()
        return hmac.digest(self._key, message, "sha256").hex()  # one-shot: no HMAC object
