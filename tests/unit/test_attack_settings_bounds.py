"""Attack review (issue 10): housekeeping settings whose large values overflow the date arithmetic.

audit_retention_days = 999999 ("keep them forever") made `utcnow() - timedelta(days=...)` raise
OverflowError in every housekeeping run, after the upload purge and before the throttle purge, so the
job failed every interval; a huge interval or upload age failed at start or in every run alike."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from dockyard.metadata.db import utcnow
from dockyard.settings import Settings


@pytest.mark.parametrize("field, value", [
    ("audit_retention_days", 999_999),
    ("upload_max_age_seconds", 10**12),
    ("upload_purge_interval_seconds", 10**13),
])
def test_values_the_housekeeping_cannot_compute_are_refused(field, value):
    with pytest.raises(ValidationError):
        Settings(**{field: value})


def test_the_largest_allowed_values_compute():
    top = {name: Settings.model_fields[name].metadata for name in
           ("audit_retention_days", "upload_max_age_seconds", "upload_purge_interval_seconds")}
    le = {name: next(m.le for m in meta if getattr(m, "le", None) is not None) for name, meta in top.items()}
    now = utcnow()
    assert now - timedelta(days=le["audit_retention_days"]) < now
    assert now - timedelta(seconds=le["upload_max_age_seconds"]) < now
    assert now + timedelta(seconds=le["upload_purge_interval_seconds"]) > now
