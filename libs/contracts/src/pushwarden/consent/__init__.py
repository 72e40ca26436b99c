"""Generated from protos/pushwarden/consent: do not edit; run `make protos`."""
