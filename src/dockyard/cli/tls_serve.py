"""`dockyard serve` over HTTPS (docs/tls.md): granian's TLS options from the settings, certificate reload on
SIGHUP, and the plain-HTTP listener that only redirects to HTTPS.

Reload: granian reads the certificate files when a worker starts and cannot swap them in a running worker.
On SIGHUP its main process respawns the workers one at a time (start the new worker, wait
`respawn_interval`, then SIGTERM the old one, which stops accepting and finishes its in-flight requests).
New connections then get the certificate on disk; established ones keep theirs until they close. We check
the files first and keep the running workers when the new pair does not load, so a bad renewal never
takes the registry down."""

from __future__ import annotations

import logging
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from dockyard.api.tls import https_location

log = logging.getLogger("dockyard.serve")


class _EncryptedKey(Exception):
    pass


def _no_pass_phrase() -> bytes:
    raise _EncryptedKey  # OpenSSL would otherwise prompt on the terminal, blocking the serving process


MAX_PEM_BYTES = 4 << 20  # PEM chains and CA bundles are kilobytes (all of Mozilla's roots: ~220 KB)


def _not_a_pem_file(path: Path) -> str | None:
    """Refuse what would block or take long to read (the check runs in the process supervising the workers)."""
    try:
        st = path.stat()  # follows symlinks: certbot's live/ links are fine
    except OSError:
        return None  # load_cert_chain names the problem
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_size > MAX_PEM_BYTES:
        return f"{path} is too large for a PEM file ({st.st_size} bytes)"
    return None


def check_pair(cert: Path, key: Path, client_ca: Path | None = None) -> str | None:
    """Why this certificate, key (and client CA) would not load, or None when they do. The message names the
    file at fault in words: OpenSSL's own (`[SSL] PEM lib (_ssl.c:3926)`) names neither file nor reason."""
    for path in (cert, key, client_ca):
        if path is None:
            continue
        if problem := _not_a_pem_file(Path(path)):
            return problem
        if not Path(path).exists():
            return f"{path}: no such file"
        try:
            open(path, "rb").close()
        except OSError as exc:
            return f"{path}: cannot read it ({exc.strerror or exc})"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert), str(key), password=_no_pass_phrase)
    except _EncryptedKey:
        return f"the private key {key} is encrypted: give it unencrypted (the server cannot ask for a pass phrase)"
    except ssl.SSLError as exc:
        return _which_file(Path(cert), Path(key), exc)
    except OSError as exc:
        return f"{exc.__class__.__name__}: {exc}"
    if client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(client_ca))
        except (OSError, ssl.SSLError) as exc:
            return f"the client CA file {client_ca} holds no usable PEM certificate ({_reason(exc)})"
    return None


def _pem_labels(path: Path) -> str:
    try:
        return path.read_bytes().decode("ascii", "replace")
    except OSError:
        return ""


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None)
    return reason.lower().replace("_", " ") if reason else str(exc)


def _which_file(cert: Path, key: Path, exc: ssl.SSLError) -> str:
    """Tell which of the two files OpenSSL refused, and why, in words."""
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"the private key {key} does not match the certificate {cert}"
    swapped = " (are tls_cert_file and tls_key_file swapped?)"
    cert_text, key_text = _pem_labels(cert), _pem_labels(key)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert))  # the certificate alone
    except ssl.SSLError:
        hint = swapped if "PRIVATE KEY-----" in cert_text else ""
        return f"the certificate file {cert} holds no PEM certificate{hint}"
    if "PRIVATE KEY-----" not in key_text:
        hint = swapped if "CERTIFICATE-----" in key_text else ""
        return f"the private key file {key} holds no PEM private key{hint}"
    return f"the private key {key} does not load ({_reason(exc)})"


def tls_files_problem(settings) -> str | None:
    """Why `dockyard serve` would refuse the TLS settings' files, or None (also None when none are set).
    `serve` and `check-config` both ask this, so check-config passes only what serve loads."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None  # TLS off, or ACME (acme_domain): the certificate is fetched after this check
    problem = check_pair(Path(settings.tls_cert_file), Path(settings.tls_key_file),
                         Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None)
    if problem is None:
        return None
    return f"cannot load the TLS certificate {settings.tls_cert_file} and key {settings.tls_key_file}: {problem}"


def key_file_warning(key: Path) -> str | None:
    """A warning when other users may read the private key. Only a warning: Kubernetes mounts secrets 0644
    unless told otherwise (defaultMode), and the file may belong to a group made for that purpose."""
    mode = key.stat().st_mode & 0o777
    if mode & 0o077:
        return f"the TLS private key {key} is readable by other users (mode {mode:o}); chmod 600 it"
    return None


def granian_tls_options(settings) -> dict:
    """The granian.Server keyword arguments for the TLS settings (none when TLS is off)."""
    from granian.constants import SSLProtocols

    if not settings.tls_enabled:
        return {}
    return {
        "ssl_cert": Path(settings.tls_cert_file),
        "ssl_key": Path(settings.tls_key_file),
        "ssl_protocol_min": SSLProtocols.tls12 if settings.tls_min_version == "1.2" else SSLProtocols.tls13,
        "ssl_ca": Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
        "ssl_client_verify": settings.tls_client_ca_file is not None,
    }


def granian_server(settings, **kwargs):
    """A granian Server whose SIGHUP first checks the certificate files, and which reads them by the path
    given (granian resolves symlinks once at start, which would pin a certbot `live/` link to the old file)."""
    from granian.server import Server

    class TlsServer(Server):  # type: ignore[misc, valid-type]
        def signal_handler_reload(self, *args, **kwargs):
            if settings.tls_enabled:
                problem = check_pair(Path(settings.tls_cert_file), Path(settings.tls_key_file),
                                     Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None)
                if problem:
                    log.error("SIGHUP: the certificate files do not load (%s); keeping the running workers", problem)
                    return
                if warning := key_file_warning(Path(settings.tls_key_file)):
                    log.warning("SIGHUP: %s", warning)  # as at start: a renewal may have rewritten it 0644
                log.info("SIGHUP: restarting the workers one at a time to load the certificate on disk")
            super().signal_handler_reload(*args, **kwargs)

        def _reload(self, *args, **kwargs):  # granian 2.8: runs the rolling restart, returns when it is done
            result = super()._reload(*args, **kwargs)
            log.info("SIGHUP: reload finished, every worker restarted%s",
                     " with the certificate on disk" if settings.tls_enabled else "")
            return result

        def signal_handler_interrupt(self, *args, **kwargs):
            log.info("stopping (SIGTERM/SIGINT): no new connections; requests in flight get up to %s s to finish",
                     settings.shutdown_timeout_seconds)
            super().signal_handler_interrupt(*args, **kwargs)

    server = TlsServer(**kwargs, **granian_tls_options(settings))
    if settings.tls_enabled:
        # granian 2.8's internal (enabled, cert, key, password, proto, ca, crl, verify) tuple, passed to each
        # worker it spawns; tests/e2e/test_tls.py::test_sighup_follows_a_certbot_style_symlink_swap guards it.
        enabled, _cert, _key, password, proto, ca, crl, verify = server.ssl_ctx
        server.ssl_ctx = (enabled, str(Path(settings.tls_cert_file).absolute()), str(Path(settings.tls_key_file).absolute()),
                          password, proto,
                          str(Path(settings.tls_client_ca_file).absolute()) if settings.tls_client_ca_file else ca,
                          crl, verify)
    return server


ACME_CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def start_redirect_listener(host: str, port: int, https_port: int, public_url: str | None, *,
                            idle_timeout: float = 10.0, max_connections: int = 256,
                            challenge: Callable[[str], str | None] | None = None) -> ThreadingHTTPServer:
    """Serve plain HTTP on host:port in a daemon thread of the serving process: every request gets a 308 to the
    same path over HTTPS (308 keeps the method and body, so a client's PUT is retried as a PUT), nothing else.
    With `challenge` (ACME, cli/acme_serve.py), GET /.well-known/acme-challenge/<token> is answered with what
    it returns for the token (404 for None) instead: the CA validates HTTP-01 over plain HTTP.

    A thread per connection, so bounded: a connection silent for `idle_timeout` seconds is closed, and past
    `max_connections` open ones a new connection is closed at once (idle clients must not pile up threads in
    the process that supervises the workers)."""

    class Redirect(BaseHTTPRequestHandler):
        server_version = "dockyard"
        timeout = idle_timeout  # StreamRequestHandler sets it on the socket: every read times out

        def version_string(self) -> str:
            return self.server_version  # the stdlib appends " " + sys_version: `Server: dockyard ` otherwise

        def _challenge(self) -> None:
            token = self.path[len(ACME_CHALLENGE_PREFIX):].partition("?")[0]
            try:
                answer = challenge(token) if challenge is not None and "/" not in token else None
            except Exception:  # the database is away: the CA retries, or fails this order and we order again
                log.exception("ACME challenge lookup failed")
                answer = None
            body = answer.encode() if answer is not None else b"not found\n"
            self.send_response(200 if answer is not None else 404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def _get(self) -> None:
            if challenge is not None and self.path.startswith(ACME_CHALLENGE_PREFIX):
                self._challenge()
            else:
                self._redirect()

        def _redirect(self) -> None:
            location = https_location(public_url, https_port, self.headers.get("Host"), self.path if self.path.startswith("/") else "/")
            self.send_response(308 if location else 400)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()

        do_GET = do_HEAD = _get
        do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _redirect

        def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
            log.debug("redirect listener: " + format, *args)

    class Listener(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        daemon_threads = True
        slots = threading.BoundedSemaphore(max_connections)

        def process_request(self, request, client_address):
            if not self.slots.acquire(blocking=False):
                self.shutdown_request(request)  # full: no thread for this one
                return
            try:
                super().process_request(request, client_address)
            except BaseException:
                self.slots.release()
                raise

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.slots.release()

    httpd = Listener((host, port), Redirect)
    threading.Thread(target=httpd.serve_forever, name="dockyard-http-redirect", daemon=True).start()
    return httpd
