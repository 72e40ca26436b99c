"""Generated from protos/pushwarden/scheduler/v1: do not edit; run `make protos`."""
