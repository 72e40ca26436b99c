"""Generated from protos/pushwarden/segmentation: do not edit; run `make protos`."""
