"""The consent service's domain: plain types, their rules, and their proto mappings."""
