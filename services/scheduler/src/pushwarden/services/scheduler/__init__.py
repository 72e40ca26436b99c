"""Pushwarden scheduler service: campaigns, triggers, transactional sends, contact
history and the dispatch queue; turns intents into per-user sends at the right moment
through the policy library, asking consent, segmentation and delivery over gRPC.

Run it with ``python -m pushwarden.services.scheduler``; configure it with
``PUSHWARDEN_SCHEDULER_*`` variables (see :mod:`pushwarden.services.scheduler.config`).
"""
