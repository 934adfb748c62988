"""Telephony: the speech call on the alert (issue 15). See docs/telephony.md."""
