"""Escalation: one home for unacknowledged-alert escalation, responder call-outs, SMS and calls through
Twilio, its webhooks, and service levels.

- :mod:`.states` -- closed sets of values and the state tables of steps, notifications, call-outs
- :mod:`.policy` -- policy steps and their one validation (config and API)
- :mod:`.engine` -- :class:`~.engine.Escalation`: snapshot at raise, due steps, call-outs, notifications
- :mod:`.store` -- every SQL statement of the feature (the engine decides, the store reads and writes)
- :mod:`.responders` -- a resident's responders and the texts they get
- :mod:`.notify` -- sending SMS and placing calls (Twilio's async client)
- :mod:`.twilio` -- verifying and reading Twilio's webhooks, and their routes
- :mod:`.service_levels` -- the service-level arithmetic, its report routes and page, the policy routes
- :mod:`.runner` -- the escalation loop
- :mod:`.metrics` -- its Prometheus metrics
"""
