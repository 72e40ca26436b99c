"""Generated from protos/pushwarden/consent/v1: do not edit; run `make protos`."""
