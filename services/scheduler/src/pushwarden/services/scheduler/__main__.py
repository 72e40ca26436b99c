"""``python -m pushwarden.services.scheduler``: configure, migrate, serve."""

import sys

from pushwarden.runtime.app import run_main
from pushwarden.services.scheduler.bootstrap import bootstrap
from pushwarden.services.scheduler.config import SERVICE, SchedulerConfig

if __name__ == "__main__":
    sys.exit(run_main(SchedulerConfig, SERVICE, bootstrap))
