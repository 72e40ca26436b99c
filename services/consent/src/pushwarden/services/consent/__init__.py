"""Pushwarden consent service: devices and push tokens, OS permission state, categories,
consent and preferences per user, the append-only consent ledger, and eligibility.

Run it with ``python -m pushwarden.services.consent``; configure it with
``PUSHWARDEN_CONSENT_*`` variables (see :mod:`pushwarden.services.consent.config`).
"""
