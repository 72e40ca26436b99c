"""``python -m pushwarden.cli``: the same as the ``pushwarden`` console script."""

from pushwarden.cli.main import main

main()
