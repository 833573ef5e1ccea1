"""Which cron expressions a schedule may have: five fields, or a nickname such as @daily.

croniter also takes a sixth field of seconds (and a seventh of years): a user-set schedule (a retention
policy's, set by a project admin) written `* * * * * *` would enqueue a job every second.
"""

from __future__ import annotations

from croniter import croniter

NICKNAMES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def is_cron(cron: object) -> bool:
    if not isinstance(cron, str) or not croniter.is_valid(cron):
        return False
    return len(cron.split()) == 5 or cron.strip() in NICKNAMES
