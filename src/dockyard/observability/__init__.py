"""Metrics, health checks and request-scoped logging: what an operator watches (docs/metrics.md)."""
