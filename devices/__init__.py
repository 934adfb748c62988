"""What devices are and say: the event vocabulary and sans-I/O codecs for each wire format.

Nothing in this package does I/O or imports asyncio.
"""
