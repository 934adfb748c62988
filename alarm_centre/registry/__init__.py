"""The installers' registry feature: residents, devices, links, commissioning visits, remote configuration,
per-device credentials and heartbeat supervision.

- ``store``: every SQL statement of the feature (a repository over the store's portable ``Tx``);
- ``service``: :class:`~alarm_centre.registry.service.Registry`, the operations and the store event hook;
- ``commissioning``: the visit states, their transition table, and the checklist;
- ``config``: remote configuration versions and their states;
- ``supervision``: the heartbeat sweep;
- ``routes`` and ``pages``: the HTTP API and the installers' console pages (aiohttp).

``bridge/feature_registry.py`` plugs it into the bridge through the host interface.
"""
