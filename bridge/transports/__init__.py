"""The bridge's transports: bytes in and out, never parsing (the codecs in ``devices/`` do that).

- :mod:`bridge.transports.mqtt`: the MQTT link to the broker (events in, acks and commands out).
- :mod:`bridge.transports.embedded_broker`: the loopback broker for the one-command start.
- :mod:`bridge.transports.serial`: units on a serial line (framed, CRC-checked, acked).
- :mod:`bridge.transports.gsm`: a GSM modem on AT commands (SMS alarms in, SMS out).
"""
