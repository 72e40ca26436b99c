"""Pushwarden delivery service: fans sends out to a user's devices over APNs and FCM
with retries and idempotency, records attempts, outcomes and engagement, and computes
campaign statistics; asks consent for eligibility right before each provider call.

Run it with ``python -m pushwarden.services.delivery``; configure it with
``PUSHWARDEN_DELIVERY_*`` variables (see :mod:`pushwarden.services.delivery.config`).
"""
