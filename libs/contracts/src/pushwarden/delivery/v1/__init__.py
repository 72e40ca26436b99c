"""Generated from protos/pushwarden/delivery/v1: do not edit; run `make protos`."""
