"""``python -m pushwarden.services.consent``: configure, migrate, serve."""

import sys

from pushwarden.runtime.app import run_main
from pushwarden.services.consent.bootstrap import bootstrap
from pushwarden.services.consent.config import SERVICE, ConsentConfig

if __name__ == "__main__":
    sys.exit(run_main(ConsentConfig, SERVICE, bootstrap))
