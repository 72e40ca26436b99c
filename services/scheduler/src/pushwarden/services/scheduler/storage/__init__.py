"""Scheduler storage: the unit of work and its repositories."""
