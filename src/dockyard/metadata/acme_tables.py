"""Automatic certificates by ACME (issue 16): the account, the issued certificate, the HTTP-01 answers
and the lease that lets one node at a time order.

Private keys (the account key, each certificate's key) are stored only sealed under the KEK, as the
token-signing keys are (auth/secret_box.py). Challenge answers live here, not in a process's memory, so
whichever node the CA's validation request reaches can answer it.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, String, Table, Text

from dockyard.metadata.models import metadata

acme_accounts = Table(
    "acme_accounts",
    metadata,
    Column("directory_url", String(500), primary_key=True),  # one account per ACME server
    Column("key_sealed", Text, nullable=False),  # PKCS#8 PEM, sealed (secret_box)
    Column("uri", String(500), nullable=True),  # the account URL the CA gave (kid of every signed request)
    Column("email", String(320), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

acme_certificates = Table(
    "acme_certificates",
    metadata,
    Column("domain", String(253), primary_key=True),
    Column("fullchain_pem", Text, nullable=False),  # public: leaf first, then the intermediates
    Column("key_sealed", Text, nullable=False),  # the certificate's private key, sealed
    Column("fingerprint", String(64), nullable=False),  # sha256 of the leaf, hex: "is my file the current one?"
    Column("not_after", DateTime(timezone=True), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

acme_challenges = Table(
    "acme_challenges",
    metadata,
    Column("token", String(200), primary_key=True),  # the last path segment of /.well-known/acme-challenge/
    Column("key_authorization", String(500), nullable=False),  # the body the CA expects
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

acme_leases = Table(
    "acme_leases",
    metadata,
    Column("domain", String(253), primary_key=True),  # at most one row, so at most one node orders
    Column("holder", String(200), nullable=False),  # host:pid, for humans and for release
    Column("expires_at", DateTime(timezone=True), nullable=False),  # a killed node's lease lapses
)
