"""Voice: the Alexa interaction model, request verification, the ask-sdk-core intent handlers and the
``POST /alexa`` endpoint. (The local utterance matcher that stands in for Alexa is
:mod:`simulators.alexa_matcher`.)

The pure parts here do no I/O at import; :mod:`skills.verification` fetches certificates with aiohttp only
when asked to verify a request.
"""
