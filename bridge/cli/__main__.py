"""``python -m bridge.cli``: the same as the ``telecare-bridge`` script."""

from bridge.cli.main import main

main()
