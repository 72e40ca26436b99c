"""Scheduler handlers: domain logic on plain types, over the unit of work and the peers."""
