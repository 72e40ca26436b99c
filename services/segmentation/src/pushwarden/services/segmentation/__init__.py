"""Pushwarden segmentation service: user profiles with typed attributes, behaviour
events, segment definitions and static (suppression) lists; evaluates segments as
streams of user ids and feeds triggers with its event stream.

Run it with ``python -m pushwarden.services.segmentation``; configure it with
``PUSHWARDEN_SEGMENTATION_*`` variables (see :mod:`pushwarden.services.segmentation.config`).
"""
