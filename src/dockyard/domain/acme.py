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
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
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


MAX_RESPONSE_BYTES = 1 << 20  # ACME bodies (directory, order, chain) are kilobytes


class ResponseTooLarge(requests.RequestException):
    """An ACME server's response body past MAX_RESPONSE_BYTES."""


def _bounded_body(response: requests.Response, *args, **kwargs) -> requests.Response:
    """A requests response hook, run before the body is read: read at most MAX_RESPONSE_BYTES of it. The
    conversation runs in the process that supervises the workers; a hostile or broken server's endless body
    must fail the order, not exhaust that process's memory."""
    declared = response.headers.get("Content-Length", "")
    too_large = declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES
    body = b"" if too_large else response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
    if too_large or len(body) > MAX_RESPONSE_BYTES:
        response.close()
        raise ResponseTooLarge(f"the ACME server's response to {response.url} is larger than {MAX_RESPONSE_BYTES} bytes")
    response._content, response._content_consumed = body, True  # what requests would have read, bounded
    return response


def _client(store: AcmeStore, config: AcmeConfig) -> tuple[client.ClientV2, josepy.JWK]:
    key_pem, uri = store.account(config.directory_url, config.email)
    jwk = josepy.JWKEC(key=serialization.load_pem_private_key(key_pem, password=None))
    net = client.ClientNetwork(jwk, alg=josepy.ES256, verify_ssl=str(config.ca_file) if config.ca_file else True,
                               user_agent=f"dockyard/{__version__}", timeout=30)
    net.session.hooks["response"].append(_bounded_body)
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
    except ResponseTooLarge as exc:
        raise AcmeFailure(str(exc)) from exc
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
    fullchain = order.fullchain_pem.encode()
    check_issued(fullchain, key_pem, config.domain, dt.datetime.now(dt.timezone.utc))
    stored = store.save_certificate(config.domain, fullchain, key_pem)
    log.info("ACME: obtained a certificate for %s, valid until %s", config.domain, stored.not_after)
    return stored


MAX_CHAIN_BYTES = 256 << 10  # a chain is a few kilobytes; every node writes it and every worker loads it
# A leaf "not yet valid" by less than this is taken: our clock may run slow (clients judge by theirs), and
# refusing would fail every renewal until the old certificate expired. Days ahead is a broken CA.
NOT_BEFORE_SLACK = dt.timedelta(days=1)


def check_issued(fullchain_pem: bytes, key_pem: bytes, domain: str, now: dt.datetime) -> None:
    """Refuse (AcmeFailure) a chain we must not store: every node would install it and stop renewing while it
    looks valid. The CA is trusted to sign, not to be right: the leaf must hold our new key, name `domain`,
    be valid now, and each certificate must be signed by the next."""
    if len(fullchain_pem) > MAX_CHAIN_BYTES:
        raise AcmeFailure(f"the ACME server sent a {len(fullchain_pem)}-byte chain for {domain}; refusing it")
    try:
        chain = x509.load_pem_x509_certificates(fullchain_pem)
    except ValueError as exc:
        raise AcmeFailure(f"the ACME server sent no PEM certificate chain for {domain}: {exc}") from exc
    leaf = chain[0]
    ours = serialization.load_pem_private_key(key_pem, password=None).public_key()
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if leaf.public_key().public_bytes(*spki) != ours.public_bytes(*spki):
        raise AcmeFailure(f"the certificate the ACME server sent for {domain} is not for the key we asked with")
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if domain.lower() not in (name.lower() for name in names):
        raise AcmeFailure(f"the certificate the ACME server sent names {names or 'no DNS name'}, not {domain}")
    if not leaf.not_valid_before_utc - NOT_BEFORE_SLACK <= now < leaf.not_valid_after_utc:
        raise AcmeFailure(f"the certificate the ACME server sent for {domain} is valid from {leaf.not_valid_before_utc} "
                          f"to {leaf.not_valid_after_utc}, not now ({now:%Y-%m-%d %H:%M:%S} UTC)")
    for cert, issuer in zip(chain, chain[1:]):
        try:
            cert.verify_directly_issued_by(issuer)
        except UnsupportedAlgorithm:
            continue  # a signature scheme this build cannot check (an old cross-sign): clients decide
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise AcmeFailure(f"the chain the ACME server sent for {domain} is broken: {cert.subject.rfc4514_string()} "
                              f"is not signed by {issuer.subject.rfc4514_string()}") from exc
