"""Every kind of record the retention job handles: the one list, read by the configuration (which
checks the names under ``retention.days``) and by ``bridge/feature_privacy.py`` (which runs them).

A feature that stores records of its own with personal data in them (call recordings, for one)
declares a :class:`~alarm_centre.privacy.retention.RetentionKind` in its own package -- a name, what
it covers, a default period in days, and the function that deletes or anonymises a batch older than
a cutoff, never anything of an open alert -- and adds it here. Its days are then set under
``retention.days.<name>`` like any other kind, and docs/data-protection.md lists it.
"""

from __future__ import annotations

from alarm_centre.privacy.kinds import BUILT_IN_KINDS
from alarm_centre.privacy.retention import RetentionKind, check_kinds

RETENTION_KINDS: tuple[RetentionKind, ...] = (
    *BUILT_IN_KINDS,
    # Other features' kinds go here, e.g. *telephony.RETENTION_KINDS (call recordings).
)
check_kinds(RETENTION_KINDS)


def kind_names() -> list[str]:
    return [kind.name for kind in RETENTION_KINDS]
