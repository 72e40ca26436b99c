"""The custom data a notification carries, the same for APNs and FCM."""

from __future__ import annotations

from pushwarden.common.v1 import content_pb2
from pushwarden.payload.model import DeliveryOptions

#: Custom data keys the contract reserves (see ``Content.custom_data``).
RESERVED_DATA_KEYS = frozenset(
    {"aps", "deep_link", "from", "message_type", "notification", "collapse_key"}
)
#: Prefixes the contract reserves: ours, then FCM's.
RESERVED_DATA_PREFIXES = ("pw_", "google.", "gcm.")


def is_reserved_data_key(key: str) -> bool:
    """Whether ``key`` may not appear in ``Content.custom_data`` (the services refuse it)."""
    return key in RESERVED_DATA_KEYS or key.startswith(RESERVED_DATA_PREFIXES)


def custom_data(content: content_pb2.Content, options: DeliveryOptions) -> dict[str, str]:
    """The content's custom data plus ``deep_link`` and the ``pw_*`` keys, sorted by key.

    Sorted so that the same content always renders to the same bytes, whatever
    the order protobuf's map kept.  The keys added here win over a custom key
    of the same name (which the services refuse before it gets here).
    """
    data = dict(content.custom_data)
    added = (
        ("deep_link", content.deep_link),
        ("pw_send_id", options.send_id),
        ("pw_campaign_id", options.campaign_id),
        ("pw_variant_id", options.variant_id),
    )
    data.update((key, value) for key, value in added if value)
    return dict(sorted(data.items()))
