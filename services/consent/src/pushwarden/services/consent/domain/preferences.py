"""The preference center: topics, quiet hours, a zone override and the opt-down
frequency, checked as the contract says.

Topic subscriptions have one state, kept as TOPIC-scope consent choices: a topic listed
in Preferences.topics and a RecordConsent with that topic write the same thing (the later
one wins), and GetPreferences reads the topics back from those choices. The rest of the
preferences is stored as the contract's own message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pushwarden.common.v1 import policy_pb2, types_pb2
from pushwarden.consent.v1 import messages_pb2, resources_pb2
from pushwarden.runtime.validation import Violations
from pushwarden.services.consent.domain.consent import (
    ACTOR_TYPES,
    SOURCES,
    Action,
    Choice,
    ScopeKind,
)

MAX_TOPICS = 200
MAX_WINDOWS = 14
MAX_OPT_DOWN_COUNT = 100
FIELDS = ("topics", "quiet_hours", "time_zone_override", "frequency")
_DAYS = {value for value in types_pb2.DayOfWeek.values() if value}
_MODES = {value for value in policy_pb2.FrequencyMode.values() if value}
_PERIODS = {value for value in policy_pb2.DigestPeriod.values() if value}


def _local_time(problems: Violations, path: str, value: types_pb2.LocalTime) -> None:
    if not 0 <= value.hours <= 23:
        problems.add(f"{path}.hours", "must be 0..23")
    if not 0 <= value.minutes <= 59:
        problems.add(f"{path}.minutes", "must be 0..59")


def check_quiet_hours(problems: Violations, path: str, hours: policy_pb2.QuietHours) -> None:
    """Windows with valid times, an end different from the start, known weekdays."""
    if len(hours.windows) > MAX_WINDOWS:
        problems.add(f"{path}.windows", f"at most {MAX_WINDOWS} windows")
    for index, window in enumerate(hours.windows):
        where = f"{path}.windows[{index}]"
        problems.required(f"{where}.start", window.HasField("start"))
        problems.required(f"{where}.end", window.HasField("end"))
        _local_time(problems, f"{where}.start", window.start)
        _local_time(problems, f"{where}.end", window.end)
        if (window.start.hours, window.start.minutes) == (window.end.hours, window.end.minutes):
            problems.add(
                f"{where}.end",
                "equals start: an empty window or a whole day? set them apart "
                "(an end before start crosses midnight)",
            )
        for day_index, day in enumerate(window.days):
            if day not in _DAYS:
                problems.add(f"{where}.days[{day_index}]", "must be a weekday (not UNSPECIFIED)")


def check_frequency(
    problems: Violations, path: str, frequency: policy_pb2.FrequencyPreference
) -> None:
    """A known mode with the numbers it needs."""
    if not problems.enum(f"{path}.mode", frequency.mode, _MODES):
        return
    if frequency.max_count > MAX_OPT_DOWN_COUNT:
        problems.add(f"{path}.max_count", f"must be 0..{MAX_OPT_DOWN_COUNT}")
    if frequency.mode == policy_pb2.FREQUENCY_MODE_DIGEST:
        problems.enum(f"{path}.digest_period", frequency.digest_period, _PERIODS)
        if frequency.HasField("digest_slot"):
            _local_time(problems, f"{path}.digest_slot", frequency.digest_slot)
        if frequency.digest_weekday and frequency.digest_weekday not in _DAYS:
            problems.add(f"{path}.digest_weekday", "unknown weekday")


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    """A checked SetPreferences request: the fields to replace, with their values."""

    app_id: str
    user_id: str
    fields: frozenset[str]
    preferences: resources_pb2.Preferences

    @classmethod
    def from_proto(cls, request: messages_pb2.SetPreferencesRequest) -> PreferenceChange:
        """Check a SetPreferencesRequest; raises InvalidArgument naming every bad field."""
        problems = Violations()
        problems.caller_id("app_id", request.app_id)
        problems.caller_id("user_id", request.user_id)
        problems.caller_id("idempotency_key", request.idempotency_key, required=False)
        fields = set(FIELDS)
        if request.HasField("update_mask"):
            fields = set()
            for index, path in enumerate(request.update_mask.paths):
                if path in FIELDS:
                    fields.add(path)
                else:
                    problems.add(
                        f"update_mask.paths[{index}]",
                        f"{path!r} is not one of {', '.join(FIELDS)}",
                    )
            if not request.update_mask.paths:
                problems.add("update_mask.paths", "empty: name the fields to change")
        prefs = request.preferences
        if "topics" in fields:
            if len(prefs.topics) > MAX_TOPICS:
                problems.add("preferences.topics", f"at most {MAX_TOPICS} topics")
            seen: set[str] = set()
            for index, topic in enumerate(prefs.topics):
                path = f"preferences.topics[{index}].topic_id"
                if problems.caller_id(path, topic.topic_id) and topic.topic_id in seen:
                    problems.add(path, f"repeats {topic.topic_id!r}")
                seen.add(topic.topic_id)
        if "quiet_hours" in fields:
            check_quiet_hours(problems, "preferences.quiet_hours", prefs.quiet_hours)
        if "time_zone_override" in fields:
            problems.time_zone("preferences.time_zone_override", prefs.time_zone_override)
        if "frequency" in fields and prefs.HasField("frequency"):
            check_frequency(problems, "preferences.frequency", prefs.frequency)
        problems.enum("source", request.source, SOURCES, required=False)
        problems.enum("actor.type", request.actor.type, ACTOR_TYPES, required=False)
        problems.raise_if_any("the preferences are invalid")
        return cls(request.app_id, request.user_id, frozenset(fields), prefs)


def stored_part(preferences: resources_pb2.Preferences) -> resources_pb2.Preferences:
    """What the preferences table keeps: everything but topics and the timestamp."""
    kept = resources_pb2.Preferences()
    kept.CopyFrom(preferences)
    del kept.topics[:]
    kept.ClearField("updated_at")
    return kept


def topics_of(choices: Mapping[str, Choice]) -> dict[str, bool]:
    """The user's topic subscriptions (every-channel choices) by topic id."""
    return {
        choice.scope.topic_id: choice.action is Action.OPT_IN
        for choice in choices.values()
        if choice.scope.kind is ScopeKind.TOPIC and not choice.scope.channel
    }


def merged(
    current: resources_pb2.Preferences, change: PreferenceChange
) -> resources_pb2.Preferences:
    """``current`` with the changed fields replaced (topics replaced as a whole)."""
    result = resources_pb2.Preferences()
    result.CopyFrom(current)
    result.ClearField("updated_at")
    new = change.preferences
    if "topics" in change.fields:
        # Replaced as a whole: a topic known before and not listed now is unsubscribed,
        # and stays listed as such, so that the same state again compares equal.
        listed = {topic.topic_id: topic.subscribed for topic in new.topics}
        for topic in current.topics:
            listed.setdefault(topic.topic_id, False)
        del result.topics[:]
        result.topics.extend(
            resources_pb2.TopicSubscription(topic_id=topic_id, subscribed=subscribed)
            for topic_id, subscribed in sorted(listed.items())
        )
    if "quiet_hours" in change.fields:
        result.ClearField("quiet_hours")
        if new.HasField("quiet_hours"):
            result.quiet_hours.CopyFrom(new.quiet_hours)
    if "time_zone_override" in change.fields:
        result.time_zone_override = new.time_zone_override
    if "frequency" in change.fields:
        result.ClearField("frequency")
        if new.HasField("frequency"):
            result.frequency.CopyFrom(new.frequency)
    return result
