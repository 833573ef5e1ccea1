"""A small OCI distribution client for signing and verifying: manifests, blobs, referrers.

Speaks to any registry over HTTP(S) with anonymous, Basic or Docker-token auth (401 challenge →
`GET <realm>?service=…&scope=…` with Basic credentials → Bearer). It implements the
`SignatureSource` protocol of dockyard.signing.verify; the registry itself can implement the same
protocol in-process over its services.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from dockyard.domain.manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from dockyard.signing.formats import FormatError, TooLarge, manifest_json, sha256_digest
from dockyard.client.tls import ssl_context

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
MAX_DOCUMENT = 4 * 1024 * 1024  # signatures, bundles and manifests are small; refuse anything huge

_REF = re.compile(
    r"(?P<registry>[^/\x00-\x20\x7f-\x9f]+)/(?P<repo>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?")


class RegistryError(RuntimeError):
    pass


class DocumentTooLarge(RegistryError, TooLarge):
    """A blob over MAX_DOCUMENT: verification reports it as that signature's error."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    @property
    def repository_name(self) -> str:
        """`registry/repo`: what cosign writes as the simple-signing docker-reference."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.registry}/{self.repository}{tag}{digest}"


def parse_reference(text: str) -> ImageRef:
    """`host[:port]/repo[:tag][@sha256:…]`; the registry host is required (no Docker Hub default)."""
    m = _REF.fullmatch(text.strip())
    host = m and m.group("registry")
    if not m or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"invalid image reference {text!r} (expected host[:port]/repository[:tag|@digest])")
    return ImageRef(host, m.group("repo"), m.group("tag"), m.group("digest"))


@dataclass(frozen=True)
class Fetched:
    data: bytes
    media_type: str
    digest: str


def _error_text(r: httpx.Response) -> str:
    try:
        errors = r.json().get("errors") or []
        if errors:
            return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
    except (ValueError, AttributeError):
        pass
    return f"HTTP {r.status_code}"


class RegistryClient:
    def __init__(self, base_url: str, username: str | None = None, password: str | None = None,
                 *, timeout: float = 60.0, transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        self._creds = (username, password or "") if username else None
        # The CLI's CA choice (docs/tls.md); an in-process transport (tests) ignores it.
        self._http = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True,
                                  verify=ssl_context() if transport is None else True)
        self._tokens: dict[str, str] = {}  # scope → bearer token
        self._basic = False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- auth -------------------------------------------------------------------------------

    def _request(self, method: str, path: str, scope: str, **kwargs) -> httpx.Response:
        url = path if path.startswith("http") else self.base_url + path
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in range(2):
            if scope in self._tokens:
                headers["Authorization"] = f"Bearer {self._tokens[scope]}"
            auth = self._creds if self._basic and self._creds else None
            r = self._http.request(method, url, headers=headers, auth=auth, **kwargs)
            if r.status_code != 401 or attempt:
                return r
            challenge = r.headers.get("www-authenticate", "")
            scheme, _, rest = challenge.partition(" ")
            if scheme.lower() == "bearer":
                params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
                self._tokens[scope] = self._token(params, scope)
            elif scheme.lower() == "basic" and self._creds:
                self._basic = True
            else:
                return r
        return r

    def _token(self, challenge: dict[str, str], scope: str) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise RegistryError("bearer challenge without a realm")
        params = {"service": challenge.get("service", "")}
        # Our own scope first: a read that precedes a push asks for pull,push up front, where the
        # challenge of a GET names pull only.
        wanted = scope or challenge.get("scope")
        if wanted:
            params["scope"] = wanted
        if self._creds:
            params["account"] = self._creds[0]
        r = self._http.get(realm, params=params, auth=self._creds)
        if r.status_code != 200:
            raise RegistryError(f"token request to {realm} failed: {_error_text(r)}")
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token response from {realm} holds no token")
        return token

    @staticmethod
    def _scope(repo: str, push: bool = False) -> str:
        return f"repository:{repo}:{'pull,push' if push else 'pull'}"

    # -- reads (SignatureSource) ------------------------------------------------------------

    def fetch_manifest(self, repo: str, ref: str, *, method: str = "GET", push: bool = False) -> Fetched | None:
        r = self._request(method, f"/v2/{repo}/manifests/{ref}", self._scope(repo, push),
                          headers={"Accept": MANIFEST_ACCEPT})
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RegistryError(f"{method} {repo}:{ref}: {_error_text(r)}")
        media_type = r.headers.get("content-type", "").split(";")[0].strip()
        if method == "HEAD":
            digest = r.headers.get("docker-content-digest")
            if not digest:  # some registries omit it on HEAD
                return self.fetch_manifest(repo, ref, push=push)
            return Fetched(b"", media_type, digest)
        if len(r.content) > MAX_DOCUMENT:
            raise RegistryError(f"manifest {repo}:{ref} is larger than {MAX_DOCUMENT} bytes")
        digest = sha256_digest(r.content)
        if ref.startswith("sha256:") and digest != ref:
            raise RegistryError(f"manifest {repo}@{ref} hashes to {digest}")
        return Fetched(r.content, media_type or _embedded_media_type(r.content), digest)

    def manifest(self, repo: str, ref: str) -> bytes | None:
        fetched = self.fetch_manifest(repo, ref)
        return fetched.data if fetched else None

    def blob(self, repo: str, digest: str) -> bytes | None:
        r = self._request("GET", f"/v2/{repo}/blobs/{digest}", self._scope(repo))
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise RegistryError(f"GET blob {repo}@{digest}: {_error_text(r)}")
        if len(r.content) > MAX_DOCUMENT:
            raise DocumentTooLarge(f"blob {repo}@{digest} is over the {MAX_DOCUMENT}-byte limit for signature data")
        if sha256_digest(r.content) != digest:
            raise RegistryError(f"blob {repo}@{digest} hashes to {sha256_digest(r.content)}")
        return r.content

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        """Descriptors of the manifests whose subject is `digest`. Falls back to the referrers
        tag schema (`sha256-<hex>` index) when the registry has no referrers API."""
        params = {"artifactType": artifact_type} if artifact_type else None
        r = self._request("GET", f"/v2/{repo}/referrers/{digest}", self._scope(repo), params=params)
        if r.status_code == 200:
            try:
                index = manifest_json(r.content)
            except FormatError as exc:
                raise RegistryError(f"GET referrers of {repo}@{digest}: {exc}") from exc
        elif r.status_code in (404, 405):
            fallback = self.manifest(repo, digest.replace(":", "-"))
            index = manifest_json(fallback) if fallback else {}
        else:
            raise RegistryError(f"GET referrers of {repo}@{digest}: {_error_text(r)}")
        manifests = index.get("manifests")
        manifests = [m for m in manifests if isinstance(m, dict)] if isinstance(manifests, list) else []
        if artifact_type:  # the API may ignore the filter (no OCI-Filters-Applied)
            manifests = [m for m in manifests if m.get("artifactType") == artifact_type]
        return manifests

    # -- writes -----------------------------------------------------------------------------

    def blob_exists(self, repo: str, digest: str) -> bool:
        r = self._request("HEAD", f"/v2/{repo}/blobs/{digest}", self._scope(repo, push=True))
        return r.status_code == 200

    def upload_blob(self, repo: str, data: bytes) -> str:
        digest = sha256_digest(data)
        if self.blob_exists(repo, digest):
            return digest
        scope = self._scope(repo, push=True)
        r = self._request("POST", f"/v2/{repo}/blobs/uploads/", scope)
        if r.status_code != 202 or "location" not in r.headers:
            raise RegistryError(f"starting an upload to {repo}: {_error_text(r)}")
        location = str(httpx.URL(self.base_url + "/").join(r.headers["location"]))
        sep = "&" if "?" in location else "?"
        r = self._request("PUT", f"{location}{sep}digest={digest}", scope, content=data,
                          headers={"Content-Type": "application/octet-stream"})
        if r.status_code != 201:
            raise RegistryError(f"uploading blob {digest} to {repo}: {_error_text(r)}")
        return digest

    def put_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        r = self._request("PUT", f"/v2/{repo}/manifests/{ref}", self._scope(repo, push=True),
                          content=data, headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise RegistryError(f"PUT manifest {repo}:{ref}: {_error_text(r)}")
        return sha256_digest(data)


def _embedded_media_type(raw: bytes) -> str:
    try:
        return manifest_json(raw).get("mediaType") or ""
    except FormatError:
        return ""
