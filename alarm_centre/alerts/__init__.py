"""Alerts: the model, the lifecycle table, intake from transports and the change feed."""
