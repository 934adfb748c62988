"""``telecare-bridge``: the command line, one package.

- :mod:`bridge.cli.main`: the parser and ``main`` (the console script), ``run``, ``demo``, ``simulate``;
- :mod:`bridge.cli.common`: what every command shares (configuration, store, :func:`~bridge.cli.common.fail`
  and the exit-status convention);
- :mod:`bridge.cli.check`, :mod:`bridge.cli.users`, :mod:`bridge.cli.registry`, :mod:`bridge.cli.voice`:
  the command groups, each adding its subcommands with ``register``;
- :mod:`bridge.cli.serial_demo`: the simulated serial unit and GSM modem of ``demo --with-serial``.
- :mod:`bridge.cli.dc09_demo`, :mod:`bridge.cli.scaip_demo`: the simulated panels and social alarms of
  ``demo --with-dc09`` and ``--with-scaip``; :mod:`bridge.cli.demo_listen`: what those share.

Commands import :mod:`bridge.cli.common`, never the main module.
"""
