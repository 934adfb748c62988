"""Data protection (UK GDPR) for the residents' personal data the centre holds (docs/data-protection.md).

- ``need_to_know``: the one table of which resident fields each role may see, and the filters every
  route and page applies;
- ``reads``, ``disclosure``: the audit of reads -- every showing of a resident's data recorded;
- ``retention``, ``kinds``, ``anonymise``: the retention policy per kind of record and the job that
  applies it (never to an open alert);
- ``subject_access``, ``erasure``: everything about one resident as JSON and Markdown; erasure on
  request, keeping anonymised service-level statistics;
- ``routes``: the HTTP API of all of the above. ``bridge/feature_privacy.py`` starts it.
"""
