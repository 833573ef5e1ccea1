"""`dockyard generate-key-pair`, `dockyard sign` and `dockyard verify`: cosign-compatible image
signing from the command line (key files and signatures interoperate with cosign; see docs/signing.md).

The registry and its saved credentials come from the image reference's host (dockyard.cli.remote.credentials).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import httpx
import typer
from rich.markup import escape

from dockyard.cli.options import JsonOpt, PassOpt, PassStdinOpt, PlainHttpOpt, UserOpt
from dockyard.client.tls import describe_connection_error
from dockyard.safe_text import safe_console

err = safe_console(stderr=True, highlight=False, soft_wrap=True)
PASSWORD_ENV = "COSIGN_PASSWORD"


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)
    raise typer.Exit(code)


def _key_password(confirm: bool) -> bytes:
    """COSIGN_PASSWORD (may be empty, as in cosign), else a prompt on the terminal."""
    value = os.environ.get(PASSWORD_ENV)
    if value is not None:
        return value.encode()
    if not sys.stdin.isatty():
        _fail(f"no key password: set {PASSWORD_ENV} or run on a terminal", 2)
    return typer.prompt("Password for the private key", hide_input=True, confirmation_prompt=confirm,
                        default="", show_default=False).encode()


def _client(ref, username, password, password_stdin, plain_http):
    from dockyard.cli.remote import credentials
    from dockyard.client.credentials import CredentialError, base_url, refuse_clear_text
    from dockyard.signing.registry import RegistryClient

    login = credentials(ref.registry, username, password, password_stdin)
    url = base_url(ref.registry, plain_http)
    if login.saved:
        try:
            refuse_clear_text(url, ref.registry)
        except CredentialError as exc:
            _fail(str(exc))
    return RegistryClient(url, login.username, login.password)


def _parse_ref(text: str, plain_http: bool | None):
    """(reference, plain_http) for `host[:port]/repo[:tag|@digest]`, or for `repo[:tag|@digest]` on the default
    registry (DOCKYARD_URL, else the last `dockyard login`'s, with its scheme), as every remote command defaults."""
    from dockyard.cli.remote import resolve_server
    from dockyard.client.credentials import server_key
    from dockyard.signing.registry import parse_reference

    try:
        return parse_reference(text), plain_http
    except ValueError as exc:
        server = resolve_server(os.environ.get("DOCKYARD_URL"))
        try:
            ref = parse_reference(f"{server_key(server)}/{text}")
        except ValueError:
            _fail(str(exc), 2)
        if plain_http is None and "://" in server:
            plain_http = server.startswith("http://")
        return ref, plain_http


def _annotations(items: list[str] | None) -> dict[str, str] | None:
    result = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            _fail(f"annotation {item!r} is not KEY=VALUE", 2)
        result[k] = v
    return result or None


def generate_key_pair(
    output_key_prefix: Annotated[str, typer.Option("--output-key-prefix", help="Write PREFIX.key and PREFIX.pub.")] = "cosign",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing key files.")] = False,
) -> None:
    """Generate an ECDSA P-256 key pair as cosign does: PREFIX.key (encrypted with COSIGN_PASSWORD
    or a prompted password) and PREFIX.pub."""
    from dockyard.signing.cosign_keys import encrypt_private_key, generate_private_key, public_key_pem

    key_path, pub_path = Path(f"{output_key_prefix}.key"), Path(f"{output_key_prefix}.pub")
    for path in (key_path, pub_path):
        if path.exists() and not force:
            _fail(f"{path} exists (use --force to overwrite)", 2)
    password = _key_password(confirm=True)
    key = generate_private_key()
    encrypted = encrypt_private_key(key, password)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(encrypted)
    pub_path.write_bytes(public_key_pem(key))
    err.print(f"Private key written to {key_path}\nPublic key written to {pub_path}")


def sign(
    image: Annotated[str, typer.Argument(help="[host[:port]/]repository[:tag|@sha256:…] (default host: the last `dockyard login`'s)")],
    key: Annotated[Path, typer.Option("--key", help="cosign private key file (cosign.key).")],
    tag_layout: Annotated[bool, typer.Option("--tag-layout", help="Write the legacy sha256-<hex>.sig tag layout "
                                             "(cosign --new-bundle-format=false) instead of a Sigstore bundle referrer.")] = False,
    annotation: Annotated[Optional[list[str]], typer.Option("--annotation", "-a", help="KEY=VALUE to sign along (repeatable).")] = None,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Sign an image in a registry with a cosign key (no transparency log)."""
    from dockyard.signing.cosign_keys import KeyFileError, decrypt_private_key
    from dockyard.signing.registry import RegistryError
    from dockyard.signing.sign import sign_image
    from dockyard.signing.verify import Layout

    ref, plain_http = _parse_ref(image, plain_http)
    annotations = _annotations(annotation)
    try:
        private_key = decrypt_private_key(key.read_bytes(), _key_password(confirm=False))
    except OSError as exc:
        _fail(f"cannot read {key}: {exc.strerror}", 2)
    except KeyFileError as exc:
        _fail(f"{key}: {exc}", 2)
    with _client(ref, username, password, password_stdin, plain_http) as client:
        try:
            result = sign_image(client, ref, private_key, layout=Layout.TAG if tag_layout else Layout.BUNDLE,
                                annotations=annotations)
        except RegistryError as exc:
            _fail(str(exc))
        except httpx.HTTPError as exc:
            _fail(describe_connection_error(client.base_url, exc))
    where = f"{ref.registry}/{ref.repository}:{result.signature_ref}" if result.layout is Layout.TAG \
        else f"{ref.registry}/{ref.repository}@{result.signature_ref}"
    if json_output:
        print(json.dumps({"image": f"{ref.registry}/{ref.repository}@{result.image_digest}", "layout": str(result.layout),
                          "signature": where}, indent=2))
        return
    err.print(f"Signed {ref.registry}/{ref.repository}@{result.image_digest} ({result.layout} layout): {where}")


def verify(
    image: Annotated[str, typer.Argument(help="[host[:port]/]repository[:tag|@sha256:…] (default host: the last `dockyard login`'s)")],
    key: Annotated[list[Path], typer.Option("--key", help="Trusted cosign public key (cosign.pub); repeatable, any one suffices.")],
    json_output: JsonOpt = False,
    username: UserOpt = None,
    password: PassOpt = None,
    password_stdin: PassStdinOpt = False,
    plain_http: PlainHttpOpt = None,
) -> None:
    """Verify an image's cosign signatures (tag and bundle layouts) against public keys.
    Exits 0 when a trusted key signed this image's digest, 1 otherwise."""
    from dockyard.signing.cosign_keys import KeyFileError, load_public_key
    from dockyard.signing.registry import RegistryError
    from dockyard.signing.sign import resolve
    from dockyard.signing.verify import verify as verify_signatures

    ref, plain_http = _parse_ref(image, plain_http)
    keys = []
    for path in key:
        try:
            keys.append(load_public_key(path.read_bytes()))
        except OSError as exc:
            _fail(f"cannot read {path}: {exc.strerror}", 2)
        except KeyFileError as exc:
            _fail(f"{path}: {exc}", 2)
    with _client(ref, username, password, password_stdin, plain_http) as client:
        try:
            digest = resolve(client, ref)["digest"]
            verdict = verify_signatures(client, ref.repository, digest, keys)
        except RegistryError as exc:
            _fail(str(exc))
        except httpx.HTTPError as exc:
            _fail(describe_connection_error(client.base_url, exc))
    name = f"{ref.registry}/{ref.repository}@{digest}"
    if json_output:
        print(json.dumps({"image": name, "verified": verdict.verified, "signed": verdict.signed,
                          "verified_by": verdict.verified_by, "layouts": sorted(map(str, verdict.layouts)),
                          "verified_layouts": sorted(map(str, verdict.verified_layouts)),
                          "reasons": verdict.reasons}, indent=2))
    if not verdict.verified:
        if not json_output:
            err.print(f"Verification failed for {name}:", markup=False, highlight=False)
            for reason in verdict.reasons:
                err.print(f"  - {reason}", markup=False, highlight=False)  # may quote what a pusher wrote
        raise typer.Exit(1)
    if not json_output:
        err.print(f"Verified {name}: signed by {', '.join(verdict.verified_by)} "
                  f"({', '.join(sorted(map(str, verdict.verified_layouts)))} layout)", markup=False, highlight=False)


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("generate-key-pair")(generate_key_pair)
    app.command("sign")(sign)
    app.command("verify")(verify)


def main() -> None:
    """`python -m dockyard.cli.signing …`: the three commands on their own."""
    app = typer.Typer(help="cosign-compatible signing.", no_args_is_help=True, add_completion=False)
    register(app, app)
    app()


if __name__ == "__main__":
    main()
