"""Generated from protos/pushwarden/common: do not edit; run `make protos`."""
