"""Storage adapters of the consent service: the unit of work and its repositories."""
