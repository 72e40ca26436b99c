"""Generated from protos/pushwarden/scheduler: do not edit; run `make protos`."""
