"""``python -m pushwarden.services.scheduler``: configure, migrate, serve."""

from __future__ import annotations

import sys

from pushwarden.runtime.config import ConfigError, config_from_env_or_exit, exit_with_config_error
from pushwarden.runtime.logs import configure_logging
from pushwarden.services.scheduler.bootstrap import bootstrap
from pushwarden.services.scheduler.config import SERVICE, SchedulerConfig


def main() -> int:
    """Entry point: exit status 2 with one line naming the variable on a bad setting."""
    config = config_from_env_or_exit(SchedulerConfig, SERVICE)
    configure_logging(config.log_settings(), SERVICE)
    try:
        app = bootstrap(config)
    except ConfigError as error:
        exit_with_config_error(error)
    try:
        return app.serve()
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
