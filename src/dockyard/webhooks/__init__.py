"""Webhooks (issue 10 part 2): endpoints and filters (service.py), payload formats (formats.py),
Standard Webhooks signatures (signing.py), the SSRF guard (targets.py), per-endpoint ordering
(lanes.py) and sending (delivery.py). docs/webhooks.md is the user's view."""
