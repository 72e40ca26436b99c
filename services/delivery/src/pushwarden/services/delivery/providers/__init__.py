"""The delivery service's provider layer: APNs (aioapns) and FCM (firebase-admin).

One small interface, :class:`PushProvider`, whose ``send`` answers every push
with an :data:`Outcome` (``Delivered``, ``TokenDead``, ``RetryAfter``,
``Failed``) and never raises for one.  What a provider's answer means is in
the tables of :mod:`.classify`; requests are rendered by ``pushwarden.payload``
only.  Retries, backoff, budgets, lanes and storage belong to the service.
"""

from pushwarden.services.delivery.providers.apns import ApnsProvider
from pushwarden.services.delivery.providers.classify import (
    APNS_TABLE,
    FCM_TABLE,
    Verdict,
    classify_apns,
    classify_fcm,
)
from pushwarden.services.delivery.providers.credentials import (
    ApnsCredentials,
    AppCredentials,
    Credentials,
    CredentialsError,
    Endpoint,
    FcmCredentials,
    load_credentials,
)
from pushwarden.services.delivery.providers.fcm import FcmProvider
from pushwarden.services.delivery.providers.model import (
    Delivered,
    Failed,
    Outcome,
    OutgoingPush,
    PushProvider,
    RetryAfter,
    TokenDead,
    apns_id_for,
)
from pushwarden.services.delivery.providers.registry import Providers, ProviderSettings

__all__ = [
    "APNS_TABLE",
    "FCM_TABLE",
    "ApnsCredentials",
    "ApnsProvider",
    "AppCredentials",
    "Credentials",
    "CredentialsError",
    "Delivered",
    "Endpoint",
    "Failed",
    "FcmCredentials",
    "FcmProvider",
    "Outcome",
    "OutgoingPush",
    "ProviderSettings",
    "Providers",
    "PushProvider",
    "RetryAfter",
    "TokenDead",
    "Verdict",
    "apns_id_for",
    "classify_apns",
    "classify_fcm",
    "load_credentials",
]
