"""Property-based fuzzing of the OCI API (issue 9 part 2), in-process, on SQLite and PostgreSQL.

Hypothesis generates sequences of /v2 requests that mix valid and invalid repository names,
digests, tags, `Range` headers, upload chunk orders (`Content-Range` in order, with gaps, with
overlaps, repeated), finishing digests, mounts, and manifest bodies (valid images and indexes
over blobs that exist, dangling references, wrong media types, broken JSON, random bytes).
At least 10,000 requests per database. Properties:

- no response is a 5xx;
- every error response is OCI JSON (`{"errors": [{"code", "message"}]}`) with a code from the
  catalogue in errors.py;
- afterwards the invariants of design.md hold (tests/support/invariants.py), also after a GC.

Deterministic: derandomized Hypothesis (fixed seed), no example database, no shrinking, and every
dockyard module loaded first: Hypothesis also draws literals from loaded local modules, so without
that the requests would depend on what earlier tests imported (tests/support/hypothesis_constants.py).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from dockyard.app import create_app
from dockyard.errors import catalogue
from tests.support.hypothesis_constants import load_all_dockyard_modules
from tests.support.invariants import assert_invariants

from .conftest import make_settings

REQUESTS_WANTED = 10_000
EXAMPLES = 600
OPS_PER_EXAMPLE = (20, 22)
CODES = {cls.code for cls in catalogue()}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "application/json", "text/plain", "", "application/vnd.oci.image.manifest.v1+json; charset=utf-8"]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Content the fuzzer may reference: blobs are sometimes really uploaded, sometimes not.
BLOBS = [f"blob-{n}".encode() * (n + 1) for n in range(6)] + [b"", b"{}"]
BLOB_DIGESTS = [sha(b) for b in BLOBS]

VALID_NAMES = ["fuzz/app", "fuzz/lib-x", "other/app", "fuzz/a/b/c"]
INVALID_NAMES = ["Fuzz/App", "fuzz//app", "fuzz/app/", "-fuzz/app", "fuzz/app..x", "a" * 300, "fuzz/ap p", "fuzz/app%00",
                 "fuzz/%2e%2e/x", "fuzz/app\u00e9"]
names = st.one_of(st.sampled_from(VALID_NAMES), st.sampled_from(VALID_NAMES), st.sampled_from(INVALID_NAMES),
                  st.text(alphabet="abcxyz0123-_./", min_size=1, max_size=20))
digests = st.one_of(
    st.sampled_from(BLOB_DIGESTS),
    st.binary(max_size=8).map(sha),
    st.sampled_from(["sha256:abc", "sha256:" + "g" * 64, "md5:" + "0" * 32, "sha512:" + "0" * 128, "sha256:", ":",
                     "sha256:" + "A" * 64, "sha384:" + "1" * 96, "x" * 80, "sha256:" + "0" * 64 + "0"]),
    st.text(alphabet="sha256:0123456789abcdef", max_size=80),
)
tags = st.one_of(st.sampled_from(["latest", "v1", "v1.2", "_x", "a" * 128]),
                 st.sampled_from(["a" * 129, ".bad", "-bad", "ba d", "ta\u00e9"]),
                 st.text(alphabet="abcXYZ019._-", min_size=1, max_size=12))
numbers = st.one_of(st.integers(-5, 70), st.integers(0, 2**70), st.just(10**40))
ranges = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", numbers, numbers),
    st.builds(lambda a: f"bytes={a}-", numbers),
    st.builds(lambda a: f"bytes=-{a}", numbers),
    st.sampled_from(["bytes=", "bytes=0-1,3-4", "items=0-1", "bytes=a-b", "bytes= 0-1", "bytes=0-" + "9" * 40]),
)


def descriptor(digest: str, size: int, media: str = "application/vnd.oci.image.layer.v1.tar") -> dict:
    return {"mediaType": media, "digest": digest, "size": size}


@st.composite
def manifest_bodies(draw) -> tuple[bytes, str]:
    kind = draw(st.sampled_from(["image", "image", "index", "artifact", "garbage", "json", "schema1"]))
    media = draw(st.sampled_from(MEDIA_TYPES))
    picks = draw(st.lists(st.integers(0, len(BLOBS) - 1), min_size=0, max_size=3))
    if kind in ("image", "artifact"):
        config = draw(st.integers(0, len(BLOBS) - 1))
        doc: dict = {"schemaVersion": draw(st.sampled_from([2, 2, 1, 3])), "mediaType": OCI_MANIFEST,
                     "config": descriptor(BLOB_DIGESTS[config], len(BLOBS[config]), "application/vnd.oci.image.config.v1+json"),
                     "layers": [descriptor(BLOB_DIGESTS[i], draw(st.sampled_from([len(BLOBS[i]), len(BLOBS[i]) + 1])))
                                for i in picks]}
        if kind == "artifact":
            doc["artifactType"] = draw(st.sampled_from(["application/x.sbom", "bad type", ""]))
        if draw(st.booleans()):
            doc["subject"] = descriptor(draw(digests), draw(numbers), OCI_MANIFEST)
        if draw(st.booleans()):
            doc["annotations"] = {"k": draw(st.text(max_size=5))}
        return json.dumps(doc).encode(), draw(st.sampled_from([OCI_MANIFEST, media]))
    if kind == "index":
        children = draw(st.lists(digests, max_size=3))
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor(d, 10, OCI_MANIFEST) for d in children]}
        return json.dumps(doc).encode(), draw(st.sampled_from([OCI_INDEX, media]))
    if kind == "schema1":
        return json.dumps({"schemaVersion": 1, "name": "x", "tag": "y", "fsLayers": []}).encode(), media
    if kind == "json":
        return json.dumps(draw(st.recursive(st.none() | st.integers() | st.text(max_size=4),
                                            lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                            max_leaves=6))).encode(), media
    return draw(st.binary(max_size=64)), media


@dataclass
class Tally:
    requests: int = 0
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    manifests: dict[str, str] = field(default_factory=dict)  # repo -> a pushed manifest digest


class Fuzzer:
    def __init__(self, client: TestClient, tally: Tally):
        self.client, self.tally = client, tally
        self.uploads: list[tuple[str, str, int]] = []  # (location, repo, bytes sent so far)

    def send(self, method: str, url: str, **kwargs):
        try:
            r = self.client.request(method, url, **kwargs)
        except Exception as exc:  # the transport itself must never blow up
            self.tally.failures.append(f"{method} {url}: transport error {exc!r}")
            return None
        self.tally.requests += 1
        self.tally.statuses[r.status_code] += 1
        label = f"{method} {url[:160]} {str(kwargs.get('headers', ''))[:120]}"
        if r.status_code >= 500:
            self.tally.failures.append(f"{label} -> {r.status_code} {r.text[:300]}")
        elif r.status_code >= 400 and method != "HEAD":
            try:
                body = r.json()
                errors = body["errors"]
                assert isinstance(errors, list) and errors
                for err in errors:
                    assert err["code"] in CODES, err
                    assert isinstance(err["message"], str)
                assert r.headers.get("content-type", "").startswith("application/json")
            except Exception as exc:
                self.tally.failures.append(f"{label} -> {r.status_code} not OCI JSON from the catalogue ({exc!r}): {r.text[:300]}")
        return r

    def run(self, op) -> None:
        kind, args = op
        getattr(self, kind)(*args)

    # -- operations ---------------------------------------------------------------------

    def blob_read(self, name, digest, method, range_header):
        headers = {"Range": range_header} if range_header else {}
        self.send(method, f"/v2/{name}/blobs/{digest}", headers=headers)

    def blob_delete(self, name, digest):
        self.send("DELETE", f"/v2/{name}/blobs/{digest}")

    def upload_monolithic(self, name, blob_index, digest_ok, single_post):
        data = BLOBS[blob_index]
        digest = sha(data) if digest_ok else sha(data + b"!")
        if single_post:
            self.send("POST", f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
            return
        r = self.send("POST", f"/v2/{name}/blobs/uploads/")
        if r is not None and r.status_code == 202:
            self.send("PUT", r.headers["location"], params={"digest": digest}, content=data)

    def upload_start(self, name, mount_digest, source):
        params = {"mount": mount_digest, "from": source} if mount_digest else {}
        r = self.send("POST", f"/v2/{name}/blobs/uploads/", params=params)
        if r is not None and r.status_code == 202:
            self.uploads.append((r.headers["location"], name, 0))

    def upload_chunk(self, which, blob_index, start, length, declared):
        if not self.uploads:
            return
        location, name, _ = self.uploads[which % len(self.uploads)]
        data = BLOBS[blob_index]
        chunk = data[start:start + length] if start < len(data) else b"x" * length
        headers = {"Content-Type": "application/octet-stream"}
        if declared == "range":
            headers["Content-Range"] = f"{start}-{start + max(len(chunk), 1) - 1}"
        elif declared == "bad":
            headers["Content-Range"] = f"{start + len(chunk)}-{start}"
        elif declared == "bytes-prefix":
            headers["Content-Range"] = f"bytes {start}-{start + len(chunk) - 1}/*"
        r = self.send("PATCH", location, content=chunk, headers=headers)
        if r is not None and r.status_code == 202:
            self.uploads[which % len(self.uploads)] = (r.headers["location"], name, start + len(chunk))

    def upload_finish(self, which, blob_index, with_body):
        if not self.uploads:
            return
        location, _name, _ = self.uploads.pop(which % len(self.uploads))
        data = BLOBS[blob_index]
        self.send("PUT", location, params={"digest": sha(data)}, content=data if with_body else b"")

    def upload_status(self, which, cancel):
        if not self.uploads:
            return
        location = self.uploads[which % len(self.uploads)][0]
        self.send("DELETE" if cancel else "GET", location)

    def upload_bogus(self, name, upload_id, method):
        self.send(method, f"/v2/{name}/blobs/uploads/{upload_id}", content=b"abc")

    def manifest_put(self, name, reference, body_and_type, by_digest, extra_tags):
        body, media = body_and_type
        ref = sha(body) if by_digest else reference
        headers = {"Content-Type": media} if media else {}
        params = [("tag", t) for t in extra_tags] if by_digest else []
        r = self.send("PUT", f"/v2/{name}/manifests/{ref}", content=body, headers=headers, params=params)
        if r is not None and r.status_code == 201:
            self.tally.manifests[name] = sha(body)

    def manifest_read(self, name, reference, method, use_known):
        if use_known and name in self.tally.manifests:
            reference = self.tally.manifests[name]
        self.send(method, f"/v2/{name}/manifests/{reference}",
                  headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}, {DOCKER_MANIFEST}"})

    def manifest_delete(self, name, reference, use_known):
        if use_known and name in self.tally.manifests:
            reference = self.tally.manifests.pop(name)
        self.send("DELETE", f"/v2/{name}/manifests/{reference}")

    def listing(self, name, which, n, last):
        params = {}
        if n is not None:
            params["n"] = n
        if last is not None:
            params["last"] = last
        url = {"tags": f"/v2/{name}/tags/list", "catalog": "/v2/_catalog", "referrers": f"/v2/{name}/referrers/{last or 'x'}"}[which]
        if which == "referrers":
            params = {"artifactType": str(n)} if n is not None else {}
        self.send("GET", url, params=params)


ops = st.one_of(
    st.tuples(st.just("blob_read"), st.tuples(names, digests, st.sampled_from(["GET", "HEAD"]), st.none() | ranges)),
    st.tuples(st.just("blob_delete"), st.tuples(names, digests)),
    st.tuples(st.just("upload_monolithic"), st.tuples(names, st.integers(0, len(BLOBS) - 1), st.booleans(), st.booleans())),
    st.tuples(st.just("upload_start"), st.tuples(names, st.none() | digests, st.sampled_from(VALID_NAMES + ["nope/x", "BAD"]))),
    st.tuples(st.just("upload_chunk"), st.tuples(st.integers(0, 5), st.integers(0, len(BLOBS) - 1), st.integers(0, 40),
                                                 st.integers(0, 40), st.sampled_from(["range", "range", "none", "bad", "bytes-prefix"]))),
    st.tuples(st.just("upload_finish"), st.tuples(st.integers(0, 5), st.integers(0, len(BLOBS) - 1), st.booleans())),
    st.tuples(st.just("upload_status"), st.tuples(st.integers(0, 5), st.booleans())),
    st.tuples(st.just("upload_bogus"), st.tuples(names, st.sampled_from(["00000000-0000-0000-0000-000000000000", "x", "%2e%2e", "a" * 200]),
                                                 st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]))),
    st.tuples(st.just("manifest_put"), st.tuples(st.sampled_from(VALID_NAMES) | names, tags, manifest_bodies(), st.booleans(),
                                                 st.lists(tags, max_size=3))),
    st.tuples(st.just("manifest_read"), st.tuples(names, tags | digests, st.sampled_from(["GET", "HEAD"]), st.booleans())),
    st.tuples(st.just("manifest_delete"), st.tuples(names, tags | digests, st.booleans())),
    st.tuples(st.just("listing"), st.tuples(names, st.sampled_from(["tags", "catalog", "referrers"]),
                                            st.none() | numbers.map(str) | st.sampled_from(["abc", "", "-1", "1e3"]),
                                            st.none() | tags | digests)),
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_fuzz_oci_api_no_5xx_only_catalogue_errors_and_invariants_hold(backend, tmp_path: Path, database_url_for):
    app = create_app(make_settings(tmp_path / "data", "filesystem", database_url=database_url_for(backend),
                                   upload_flush_bytes=4096, worker_enabled=False))
    tally = Tally()
    load_all_dockyard_modules()  # the same requests whatever ran before in this process
    with TestClient(app, base_url="http://registry.test", raise_server_exceptions=False) as client:
        # Some content to hit: the fuzzer's blobs in one repository, and an image over them.
        for data in BLOBS[:4]:
            r = client.post("/v2/fuzz/app/blobs/uploads/", params={"digest": sha(data)}, content=data)
            assert r.status_code == 201, r.text

        @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck), print_blob=False)
        @given(sequence=st.lists(ops, min_size=OPS_PER_EXAMPLE[0], max_size=OPS_PER_EXAMPLE[1]))
        def run(sequence) -> None:
            fuzzer = Fuzzer(client, tally)
            for op in sequence:
                fuzzer.run(op)

        run()
        services = app.state.services
        assert not tally.failures, f"{len(tally.failures)} bad responses, e.g.:\n" + "\n".join(tally.failures[:25])
        assert tally.requests >= REQUESTS_WANTED, tally.requests
        assert_invariants(services.db.engine, services.storage)
        services.gc.grace_seconds = 0
        services.gc.run()
        assert_invariants(services.db.engine, services.storage)
        print(f"\n[{backend}] {tally.requests} requests, statuses {dict(sorted(tally.statuses.items()))}")
        # The fuzzer really exercised success paths too, not just refusals.
        assert tally.statuses[201] > 100 and tally.statuses[202] > 100 and tally.statuses[200] > 100
