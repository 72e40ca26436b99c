"""Use cases of the consent service, one module per area, each on a unit of work."""
