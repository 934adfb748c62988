"""Voice: the Alexa interaction model, request verification, a local utterance matcher, and (later) the
ask-sdk-core intent handlers and the ``POST /alexa`` endpoint.

The pure parts here do no I/O at import; :mod:`skills.verification` fetches certificates with aiohttp only
when asked to verify a request.
"""
