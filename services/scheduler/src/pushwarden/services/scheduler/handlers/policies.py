"""Policy use cases: SetPolicy, GetPolicy, and the effective rules dispatch decides with.

SetPolicy checks the request (INVALID_ARGUMENT naming every bad field, nothing
written), asks consent about the categories the changed fields name (an unknown one is
INVALID_ARGUMENT, UNKNOWN_REFERENCE; an opt-out confirmation in a category that is not
TRANSACTIONAL is FAILED_PRECONDITION, CATEGORY_KIND_MISMATCH), then, in one
transaction holding the app's row, compares ``expected_version`` (ABORTED,
VERSION_MISMATCH) and stores the new effective policy. The version goes up only when
the effective policy changes: the same policy again (or one that differs only by
spelling out a default) writes nothing and answers the stored version, so a retry is
harmless. The policy is durable before the call answers.

:meth:`PolicyHandlers.rules` serves dispatch: the effective policy and its ``Rules``,
built once per (app, version) and kept in memory. A cached entry is trusted for
``refresh_s`` (1 s by default); after that the next call reads the stored version
alone (one primary-key lookup) and rebuilds only when it moved. A change made through
this process's SetPolicy is seen at once; one made through another replica within
about ``refresh_s``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol

from pushwarden.policy import Rules
from pushwarden.runtime.clock import Clock
from pushwarden.runtime.errors import Aborted, FailedPrecondition, InvalidArgument, Unavailable
from pushwarden.runtime.validation import Violations
from pushwarden.services.scheduler.domain.policy import (
    Policy,
    PolicyChange,
    merge,
    to_rules,
    with_defaults,
)
from pushwarden.services.scheduler.models import PolicyRow
from pushwarden.services.scheduler.peers import PeerUnavailable
from pushwarden.services.scheduler.storage.policies import PolicyRepository

TRANSACTIONAL = "TRANSACTIONAL"
CONSENT_RETRY_AFTER_S = 1.0


class CategoryKinds(Protocol):
    """Consent's answer about categories: ``TRANSACTIONAL`` or ``MARKETING`` by id for
    the ids it knows (unknown ids are absent). Raises PeerUnavailable when consent
    cannot answer."""

    async def kinds(self, app_id: str, category_ids: Sequence[str]) -> dict[str, str]:
        """The kinds of the known categories among ``category_ids``."""
        ...


class PolicyWork(Protocol):
    """What the policy handlers need of a unit of work."""

    @property
    def policies(self) -> PolicyRepository:
        """The policy repository on the unit's session."""
        ...

    async def commit(self) -> None:
        """Make the unit's changes durable."""
        ...


class PolicyUow(Protocol):
    """Opens units of work (the scheduler's ``SchedulerUow`` is one)."""

    def __call__(
        self, *, read_only: bool = False, snapshot: bool = False
    ) -> AbstractAsyncContextManager[PolicyWork]:
        """A unit of work, rolled back unless committed."""
        ...


@dataclass(frozen=True, slots=True)
class _Cached:
    version: int
    rules: Rules
    policy: Policy
    checked_at: float


def _effective(row: PolicyRow | None) -> Policy:
    """The stored policy with its defaults, version and update time (version 0 and
    the defaults when never set)."""
    if row is None:
        return with_defaults(Policy())
    policy = with_defaults(Policy.FromString(row.policy))
    policy.version = row.version
    policy.updated_at.FromDatetime(row.updated_at.astimezone(UTC))
    return policy


class PolicyHandlers:
    """Set, read and apply an app's policy."""

    def __init__(
        self,
        uow: PolicyUow,
        clock: Clock,
        categories: CategoryKinds,
        *,
        refresh_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._categories = categories
        self._refresh_s = refresh_s
        self._monotonic = monotonic
        self._cache: dict[str, _Cached] = {}
        # Bumped by every stored change: a read that began before one must not cache.
        self._changes = 0

    async def get(self, app_id: str) -> Policy:
        """The app's effective policy (the defaults, version 0, when never set)."""
        problems = Violations()
        problems.caller_id("app_id", app_id)
        problems.raise_if_any()
        async with self._uow(read_only=True) as work:
            # Read inside: leaving the unit of work expires the row.
            return _effective(await work.policies.get(app_id))

    async def set(self, change: PolicyChange) -> Policy:
        """Apply a checked SetPolicy request; returns the policy after the call."""
        await self._check_references(change)
        async with self._uow() as work:
            row = await work.policies.get_for_update(change.app_id)
            stored_version = row.version if row is not None else 0
            if change.expected_version and change.expected_version != stored_version:
                raise Aborted(
                    f"the policy is at version {stored_version}, not "
                    f"{change.expected_version}; read it again and retry",
                    reason="VERSION_MISMATCH",
                    metadata={
                        "expected_version": str(change.expected_version),
                        "stored_version": str(stored_version),
                    },
                )
            current = _effective(row)
            new = with_defaults(merge(current, change.policy, change.fields))
            current.ClearField("version")
            current.ClearField("updated_at")
            if new == current:
                return _effective(row)
            now = self._clock.now()
            version = stored_version + 1
            await work.policies.put(
                change.app_id, new.SerializeToString(deterministic=True), version, now
            )
            await work.commit()
        self._changes += 1
        self._cache.pop(change.app_id, None)
        new.version = version
        new.updated_at.FromDatetime(now)
        return new

    async def _check_references(self, change: PolicyChange) -> None:
        """Consent must know every category the change names; the opt-out
        confirmation's must be TRANSACTIONAL."""
        referenced = change.referenced_categories()
        if not referenced:
            return
        try:
            kinds = await self._categories.kinds(change.app_id, sorted(referenced))
        except PeerUnavailable as error:
            raise Unavailable(
                f"consent cannot check the policy's categories right now ({error}); retry",
                retry_after_s=CONSENT_RETRY_AFTER_S,
            ) from error
        unknown = Violations()
        for category_id, paths in referenced.items():
            if category_id not in kinds:
                for path in paths:
                    unknown.add(path, f"no category {category_id!r} is defined for the app")
        if unknown:
            raise InvalidArgument(
                "the policy names unknown categories: "
                + ", ".join(dict.fromkeys(field for field, _ in unknown.items)),
                unknown.items,
                reason="UNKNOWN_REFERENCE",
            )
        confirmation = change.policy.opt_out_confirmation
        if "opt_out_confirmation" in change.fields and confirmation.category_id:
            kind = kinds[confirmation.category_id]
            if kind != TRANSACTIONAL:
                raise FailedPrecondition(
                    f"the opt-out confirmation's category {confirmation.category_id!r} is "
                    f"{kind}; a confirmation goes in a TRANSACTIONAL category",
                    [
                        (
                            "CATEGORY_KIND_MISMATCH",
                            f"categories/{confirmation.category_id}",
                            "policy.opt_out_confirmation.category_id must name a "
                            "TRANSACTIONAL category",
                        )
                    ],
                    reason="CATEGORY_KIND_MISMATCH",
                    metadata={"category_id": confirmation.category_id, "kind": kind},
                )

    async def rules(self, app_id: str) -> tuple[Rules, Policy]:
        """The app's effective ``Rules`` and policy (with version), for dispatch.

        Cached per (app, version): trusted for ``refresh_s``, then the stored version
        is read again (alone) and the rules rebuilt only if it changed. A read that a
        SetPolicy of this process overtook (its commit landed while the read ran) is
        answered but not cached: cached, it would hide the change for ``refresh_s``
        from calls that start after SetPolicy returned."""
        cached = self._cache.get(app_id)
        now = self._monotonic()
        if cached is not None and now - cached.checked_at < self._refresh_s:
            return cached.rules, cached.policy
        changes = self._changes
        async with self._uow(read_only=True) as work:
            version = await work.policies.version(app_id)
            if cached is not None and (version or 0) == cached.version:
                if changes == self._changes:
                    self._cache[app_id] = _Cached(cached.version, cached.rules, cached.policy, now)
                return cached.rules, cached.policy
            row = await work.policies.get(app_id) if version is not None else None
            policy = _effective(row)
        rules = to_rules(policy)
        if changes == self._changes:
            self._cache[app_id] = _Cached(policy.version, rules, policy, now)
        return rules, policy
