"""Delivery's domain: plain values and rules, no I/O."""
