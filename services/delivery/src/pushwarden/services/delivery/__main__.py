"""``python -m pushwarden.services.delivery``: configure, migrate, serve."""

import sys

from pushwarden.runtime.app import run_main
from pushwarden.services.delivery.bootstrap import bootstrap
from pushwarden.services.delivery.config import SERVICE, DeliveryConfig

if __name__ == "__main__":
    sys.exit(run_main(DeliveryConfig, SERVICE, bootstrap))
