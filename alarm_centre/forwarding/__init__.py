"""Forwarding alerts to an upstream monitoring centre (SIA DC-09): what is queued, and the queue.

- :mod:`.queue` -- every SQL statement on ``dc09_forwards``: add in the raising (or resolving)
  transaction, claim with a lease, finish or retry with the steps on the alert's timeline
- :mod:`.hooks` -- the raise and resolve hooks that decide what is forwarded

The sending (paths, link tests, the path-down alert) is in :mod:`bridge.dc09_forwarder`.
"""
