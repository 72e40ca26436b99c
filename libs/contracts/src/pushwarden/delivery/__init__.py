"""Generated from protos/pushwarden/delivery: do not edit; run `make protos`."""
