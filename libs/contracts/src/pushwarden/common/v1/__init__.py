"""Generated from protos/pushwarden/common/v1: do not edit; run `make protos`."""
