"""Alerts: model and lifecycle, the store, intake with group commit, the REST API and the console."""
