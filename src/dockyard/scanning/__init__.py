"""Vulnerability scanning: OSV database, per-ecosystem version ordering and matching."""
