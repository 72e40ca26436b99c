"""Scheduler domain: plain values and pure rules, no I/O."""
