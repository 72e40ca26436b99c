"""Generated from protos/pushwarden/segmentation/v1: do not edit; run `make protos`."""
