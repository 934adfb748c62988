"""Schema migrations, one module per feature, each with ``MIGRATIONS = [(version, sql), ...]``.

Version ranges, so features never collide:
  1-9 core alarm path, 10-19 installers' registry and commissioning, 20-29 escalation and notifications,
  30-39 console users and sessions, 40-49 voice, 50-59 serial and GSM, 60-69 scale-out and floods,
  70-79 data repairs (a :class:`~alarm_centre.store.schema.JsonRepair` instead of SQL), 85-89 telephony,
  90-94 data protection (audit of reads, erasures, retention).
"""
