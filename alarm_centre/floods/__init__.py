"""The alarm floods feature: many units' technical alarms grouped into incidents.

- ``model``: the rules (:class:`~alarm_centre.floods.model.FloodRules`), incidents and their states;
- ``grouping``: :class:`~alarm_centre.floods.grouping.FloodGrouper`, the store hooks and the reads;
- ``store``: every SQL statement of the feature;
- ``routes``: ``/api/v1/incidents`` and ``/api/v1/queue`` (aiohttp).

``bridge/feature_floods.py`` plugs it into the bridge through the host interface.
"""
