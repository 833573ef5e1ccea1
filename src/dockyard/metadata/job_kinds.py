"""Every kind of row in the `jobs` table, in one table: a job kind is named here, and only here.

Handlers are registered, jobs enqueued and schedules set with these constants, never with string
literals; tests/unit/test_job_kinds.py checks that every handler the worker registers is listed
and that docs/api.md documents each. It lives in metadata/ (a leaf, no imports) because the
values are the vocabulary of a table column, and domain, scanning and jobs all name kinds.
"""

from __future__ import annotations

GC = "gc"
RETENTION = "retention"
SCAN = "scan"
RESCAN = "rescan"
VULNDB_UPDATE = "vulndb-update"
HOUSEKEEPING = "housekeeping"
WEBHOOK_DELIVERY = "webhook-delivery"
EVENTS_PRUNE = "events-prune"

# kind -> what one job of it does (docs/api.md "Job kinds" lists the same).
KINDS: dict[str, str] = {
    GC: "garbage-collect unreferenced blobs past gc_grace_seconds (payload {dry_run})",
    RETENTION: "apply one retention policy (payload {policy_id, trigger})",
    SCAN: "scan one image (or each platform image of an index) for vulnerabilities",
    RESCAN: "re-match stored SBOMs after the vulnerability database changed",
    VULNDB_UPDATE: "download the vulnerability database exports from vulndb_url",
    HOUSEKEEPING: "purge stale uploads, expired audit events and old login-throttle rows",
    WEBHOOK_DELIVERY: "send a webhook delivery and the ones behind it in its lane, in batches (payload {delivery, turn})",
    EVENTS_PRUNE: "delete change-feed events past event_retention_days that every durable consumer has read",
}
