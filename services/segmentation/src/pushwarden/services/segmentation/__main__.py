"""``python -m pushwarden.services.segmentation``: configure, migrate, serve."""

import sys

from pushwarden.runtime.app import run_main
from pushwarden.services.segmentation.bootstrap import bootstrap
from pushwarden.services.segmentation.config import SERVICE, SegmentationConfig

if __name__ == "__main__":
    sys.exit(run_main(SegmentationConfig, SERVICE, bootstrap))
