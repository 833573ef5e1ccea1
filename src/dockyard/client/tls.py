"""Which certificate authorities the CLI's HTTPS requests trust (docs/tls.md): the system's (certifi's) by
default; `SSL_CERT_FILE` / `SSL_CERT_DIR` replace them, as for curl, git and Go tools; `DOCKYARD_CA_FILE` adds
one PEM bundle (a private CA) to the defaults. The management client turns `trust_env` off (no proxy
variables), so the choice is made here, once, for every client the CLI builds."""

from __future__ import annotations

import os
import ssl

CA_FILE_ENV = "DOCKYARD_CA_FILE"


def ssl_context() -> ssl.SSLContext:
    """A client SSLContext for the CA choice above (an unreadable file is an error naming it, not a silent
    fallback to the defaults)."""
    import certifi

    cafile = os.environ.get("SSL_CERT_FILE") or None
    capath = os.environ.get("SSL_CERT_DIR") or None
    ctx = ssl.create_default_context(cafile=cafile, capath=capath) if (cafile or capath) else \
        ssl.create_default_context(cafile=certifi.where())
    extra = os.environ.get(CA_FILE_ENV)
    if extra:
        try:
            ctx.load_verify_locations(cafile=extra)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{CA_FILE_ENV}={extra}: cannot load it as PEM certificates: {exc}") from exc
    return ctx


def describe_connection_error(url: str, exc: BaseException) -> str:
    """One line for a request that never got an answer. A certificate the client does not trust is the usual
    first failure against a registry with a private CA, so it says which certificate check failed and how to
    trust the CA, instead of OpenSSL's `[SSL: CERTIFICATE_VERIFY_FAILED] …`."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLCertVerificationError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        why = getattr(cause, "verify_message", None) or str(cause)
        return (f"cannot reach {url}: certificate verify failed ({why}); trust the registry's CA with "
                f"{CA_FILE_ENV}=/path/ca.pem (see docs/tls.md)")
    return f"cannot reach {url}: {exc or type(exc).__name__}"
