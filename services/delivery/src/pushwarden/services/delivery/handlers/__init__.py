"""Delivery's use cases, each on a unit of work (and, for dispatch, consent and the providers)."""
