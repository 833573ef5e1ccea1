"""The ACME conversation (RFC 8555) that gets a certificate for `acme_domain`, with certbot's `acme`
library: register (or find) the account, order, answer HTTP-01, finalize, download the chain.

The HTTP-01 answer is written to the database (domain/acme_store.py) before the CA is told to validate,
so the plain-HTTP listener of whichever node the CA reaches can serve it. The result, with a new private
key, is stored sealed; nodes install it from there (cli/acme_serve.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

import josepy
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization

from dockyard import __version__
from dockyard.domain.acme_store import AcmeStore, StoredCertificate, new_private_key_pem

log = logging.getLogger("dockyard.acme")


class AcmeFailure(Exception):
    """The ACME server could not be reached, or refused or failed the order; the message says which."""


@dataclass(frozen=True)
class AcmeConfig:
    domain: str
    directory_url: str
    email: str | None = None
    ca_file: Path | None = None  # trust for the ACME server's own HTTPS (a private CA such as Pebble's)
    timeout_seconds: int = 90  # one order, validation and issuance included


def _client(store: AcmeStore, config: AcmeConfig) -> tuple[client.ClientV2, josepy.JWK]:
    key_pem, uri = store.account(config.directory_url, config.email)
    jwk = josepy.JWKEC(key=serialization.load_pem_private_key(key_pem, password=None))
    net = client.ClientNetwork(jwk, alg=josepy.ES256, verify_ssl=str(config.ca_file) if config.ca_file else True,
                               user_agent=f"dockyard/{__version__}", timeout=30)
    acme = client.ClientV2(client.ClientV2.get_directory(config.directory_url, net), net)
    if uri:
        net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        return acme, jwk
    contact = (f"mailto:{config.email}",) if config.email else ()
    try:
        regr = acme.new_account(messages.NewRegistration.from_data(email=config.email, terms_of_service_agreed=True)
                                if config.email else messages.NewRegistration(contact=contact, terms_of_service_agreed=True))
        uri = regr.uri
    except errors.ConflictError as exc:  # the CA already knows this key
        uri = exc.location
        net.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
    store.set_account_uri(config.directory_url, uri)
    log.info("ACME account %s at %s", uri, config.directory_url)
    return acme, jwk


def obtain(store: AcmeStore, config: AcmeConfig) -> StoredCertificate:
    """Order a certificate for config.domain and store it (sealed key). Raises AcmeFailure."""
    try:
        try:
            return _obtain(store, config)
        except messages.Error as exc:
            if exc.code not in ("accountDoesNotExist", "unauthorized") or store.account(config.directory_url, None)[1] is None:
                raise
            # The CA no longer knows the account URL we stored (deactivated, or a test CA restarted): register again.
            log.warning("ACME: the CA does not know account %s any more (%s); registering again",
                        store.account(config.directory_url, None)[1], exc)
            store.set_account_uri(config.directory_url, None)
            return _obtain(store, config)
    except AcmeFailure:
        raise
    except errors.ValidationError as exc:
        problems = [str(ch.error) for authz in exc.failed_authzrs for ch in authz.body.challenges if ch.error]
        raise AcmeFailure(f"the CA could not validate {config.domain}: {'; '.join(problems) or exc}") from exc
    except (errors.Error, messages.Error) as exc:
        raise AcmeFailure(f"ACME order for {config.domain} failed: {exc}") from exc
    except OSError as exc:  # requests' ConnectionError and SSLError are OSErrors
        raise AcmeFailure(f"cannot reach the ACME directory {config.directory_url}: {exc}") from exc


def _obtain(store: AcmeStore, config: AcmeConfig) -> StoredCertificate:
    acme, jwk = _client(store, config)
    key_pem = new_private_key_pem()
    order = acme.new_order(crypto_util.make_csr(key_pem, [config.domain]))
    tokens: list[str] = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue  # validated recently (the CA reuses authorizations)
            challb = next((c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challb is None:
                raise AcmeFailure(f"the ACME server offers no HTTP-01 challenge for {authz.body.identifier.value}")
            response, validation = challb.response_and_validation(jwk)
            token = challb.chall.encode("token")
            store.put_challenge(token, validation)
            tokens.append(token)
            acme.answer_challenge(challb, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=config.timeout_seconds)
        order = acme.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            store.drop_challenge(token)
    stored = store.save_certificate(config.domain, order.fullchain_pem.encode(), key_pem)
    log.info("ACME: obtained a certificate for %s, valid until %s", config.domain, stored.not_after)
    return stored
