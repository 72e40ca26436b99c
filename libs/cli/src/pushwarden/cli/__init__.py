"""Pushwarden's operator CLI (``pushwarden``): apply categories, the policy, segments and
campaigns from YAML or JSON files, start, pause and watch campaigns, explain a decision,
campaign statistics, and GDPR export and erasure, over gRPC with the runtime's client
channels (bearer token, TLS, deadlines, retries of idempotent RPCs)."""
