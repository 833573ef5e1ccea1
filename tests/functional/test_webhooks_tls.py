"""An https webhook is sent to the address that was checked, with the host name kept for TLS: the
server's certificate (for the name only, no IP address in it) must verify, and SNI and Host carry the name."""

from __future__ import annotations

import datetime
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dockyard.app import create_app
from dockyard.settings import Settings

NAME = "hooks.test"


def _certificates(tmp: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for NAME only, signed by it."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dockyard test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False).sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "server.pem", tmp / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


async def test_https_delivery_to_the_checked_address_verifies_the_name(tmp_path: Path):
    ca, cert, key = _certificates(tmp_path)
    seen: list[tuple[str | None, str | None]] = []  # (SNI, Host)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append((getattr(self.connection, "dockyard_sni", None), self.headers.get("Host")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    def remember_sni(sock, server_name, _ctx):
        sock.dockyard_sni = server_name  # read back by the handler through the connection

    server_ctx.sni_callback = remember_sni
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(data_dir=tmp_path / "data", admin_password="admin-password-1", worker_enabled=False,
                            webhook_allow_private_targets=True)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            services = app.state.services
            services.webhooks.resolver = lambda host, p: ["127.0.0.1"] if host == NAME else []
            services.webhook_dispatcher.transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(ca)))
            hook, _ = services.webhooks.create(None, name="tls", url=f"https://{NAME}:{port}/in", caller_is_admin=True)
            delivery = services.webhook_dispatcher.ping(hook.id, None)
            assert delivery["state"] == "succeeded", delivery
            assert seen == [(NAME, f"{NAME}:{port}")]

            # A certificate for another name fails the attempt (the name is what is verified, not the address).
            services.webhooks.resolver = lambda host, p: ["127.0.0.1"]
            other, _ = services.webhooks.create(None, name="other", url=f"https://other.test:{port}/in", caller_is_admin=True)
            failed = services.webhook_dispatcher.ping(other.id, None)
            assert failed["state"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in failed["log"][0]["error"], failed
    finally:
        server.shutdown()
        server.server_close()
