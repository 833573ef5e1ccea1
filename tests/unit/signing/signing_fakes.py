"""An in-memory OCI registry for the signing unit tests, two ways:

- `MemoryRegistry` implements `dockyard.signing.verify.SignatureSource` directly (as the registry
  will in-process);
- `MemoryRegistry.transport()` serves the same content over `/v2` through `httpx.MockTransport`,
  optionally behind Docker token auth, for `dockyard.signing.registry.RegistryClient`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class MemoryRegistry:
    def __init__(self, *, token_auth: tuple[str, str] | None = None, referrers_api: bool = True):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}          # digest → bytes
        self.tags: dict[tuple[str, str], str] = {}     # (repo, tag) → digest
        self.repo_of: dict[str, set[str]] = {}         # digest → repos holding it
        self.token_auth = token_auth
        self.referrers_api = referrers_api
        self.requests: list[tuple[str, str]] = []
        self.token_requests: list[dict] = []
        self._uploads = 0

    # -- content -------------------------------------------------------------------------

    def put_blob(self, repo: str, data: bytes) -> str:
        d = sha(data)
        self.blobs[d] = data
        self.repo_of.setdefault(d, set()).add(repo)
        return d

    def put_manifest(self, repo: str, data: bytes, tag: str | None = None) -> str:
        d = sha(data)
        self.manifests[d] = data
        self.repo_of.setdefault(d, set()).add(repo)
        if tag:
            self.tags[(repo, tag)] = d
        return d

    def push_image(self, repo: str, tag: str, seed: str = "x") -> str:
        config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
        layer = seed.encode() * 10
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config), "digest": self.put_blob(repo, config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "size": len(layer), "digest": self.put_blob(repo, layer)}],
        }).encode()
        return self.put_manifest(repo, manifest, tag)

    # -- SignatureSource ---------------------------------------------------------------------

    def _resolve(self, repo: str, ref: str) -> str | None:
        d = ref if ref.startswith("sha256:") else self.tags.get((repo, ref))
        return d if d and repo in self.repo_of.get(d, ()) and d in self.manifests else None

    def manifest(self, repo: str, ref: str) -> bytes | None:
        d = self._resolve(repo, ref)
        return self.manifests[d] if d else None

    def blob(self, repo: str, digest: str) -> bytes | None:
        return self.blobs.get(digest) if repo in self.repo_of.get(digest, ()) else None

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[dict]:
        out = []
        for d, raw in self.manifests.items():
            if repo not in self.repo_of.get(d, ()):
                continue
            doc = json.loads(raw)
            if (doc.get("subject") or {}).get("digest") != digest:
                continue
            at = doc.get("artifactType") or doc["config"]["mediaType"]
            if artifact_type and at != artifact_type:
                continue
            entry = {"mediaType": doc.get("mediaType", OCI_MANIFEST), "digest": d, "size": len(raw), "artifactType": at}
            if doc.get("annotations"):
                entry["annotations"] = doc["annotations"]
            out.append(entry)
        return out

    # -- HTTP ------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def _authorized(self, request: httpx.Request) -> bool:
        if not self.token_auth:
            return True
        return request.headers.get("authorization", "") == "Bearer good-token"

    def _handle(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        self.requests.append((method, path))
        if path == "/token":
            return self._token(request)
        if not self._authorized(request):
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://reg.test/token",service="reg.test"'},
                                  json={"errors": [{"code": "UNAUTHORIZED", "message": "auth"}]})
        m = re.match(r"^/v2/(.+)/(manifests|blobs|referrers)/([^/]+)$", path)
        if m:
            repo, kind, ref = m.groups()
            return getattr(self, f"_{kind}")(request, repo, ref)
        m = re.match(r"^/v2/(.+)/blobs/uploads/(\w*)$", path)
        if m:
            return self._upload(request, m.group(1), m.group(2))
        return httpx.Response(404)

    def _token(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        auth = request.headers.get("authorization", "")
        self.token_requests.append({**params, "authorization": auth})
        user, password = self.token_auth
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if auth != expected:
            return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
        return httpx.Response(200, json={"token": "good-token"})

    def _manifests(self, request, repo, ref):
        method = request.method
        if method in ("GET", "HEAD"):
            raw = self.manifest(repo, ref)
            if raw is None:
                return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": ref}]})
            headers = {"Content-Type": json.loads(raw).get("mediaType", OCI_MANIFEST), "Docker-Content-Digest": sha(raw)}
            return httpx.Response(200, headers=headers, content=b"" if method == "HEAD" else raw)
        if method == "PUT":
            raw = request.read()
            d = self.put_manifest(repo, raw, None if ref.startswith("sha256:") else ref)
            if ref.startswith("sha256:") and ref != d:
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": ref}]})
            return httpx.Response(201, headers={"Docker-Content-Digest": d})
        return httpx.Response(405)

    def _blobs(self, request, repo, digest):
        data = self.blob(repo, digest)
        if data is None:
            return httpx.Response(404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": digest}]})
        return httpx.Response(200, content=b"" if request.method == "HEAD" else data,
                              headers={"Docker-Content-Digest": digest, "Content-Length": str(len(data))})

    def _referrers(self, request, repo, digest):
        if not self.referrers_api:
            return httpx.Response(404)
        at = request.url.params.get("artifactType")
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": self.referrers(repo, digest, at)}
        return httpx.Response(200, json=index, headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})

    def _upload(self, request, repo, upload_id):
        if request.method == "POST":
            self._uploads += 1
            return httpx.Response(202, headers={"Location": f"/v2/{repo}/blobs/uploads/u{self._uploads}"})
        if request.method == "PUT":
            data = request.read()
            if request.url.params.get("digest") != sha(data):
                return httpx.Response(400, json={"errors": [{"code": "DIGEST_INVALID", "message": "mismatch"}]})
            self.put_blob(repo, data)
            return httpx.Response(201, headers={"Docker-Content-Digest": sha(data)})
        return httpx.Response(405)
