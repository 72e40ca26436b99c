"""Scheduler RPCs: one mixin per area, proto in and proto out."""
