"""Schemathesis fuzzing of the management API (/api/v1) against its own OpenAPI document, in-process.

Every operation in /api/v1/openapi.json is called with generated requests (positive and negative
data) through schemathesis' ASGI transport:

- as the registry administrator (Basic auth), with a seeded project, user, member, robot and
  repository (with a pushed image), so that path parameters often hit real objects: no response
  may be a 5xx (`not_a_server_error`) and every documented response must match its schema
  (`response_schema_conformance`);
- without credentials: every response must be 401 UNAUTHORIZED with a Basic challenge (never a
  5xx, never data); the only exceptions are bodies that are not JSON at all (FastAPI rejects
  them with 400 before authenticating) and paths the router cannot match (404 "no endpoint");
- every integer parameter (path or query) just past the 64-bit range, where databases overflow:
  Hypothesis reaches those values only by chance, so they are also sent explicitly.

Deterministic: Hypothesis is derandomized (fixed seed), without example database, shrinking or
deadlines, and `max_examples` is bounded so the module takes well under a minute and a half.
Failures are collected across all operations and reported together, one per (operation, check).
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import ASGIClient, shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import API_CLIENT

ADMIN, ADMIN_PASSWORD = "admin", "fuzz-admin-password-1"
PROJECT = "fuzzproj"
USER, USER_PASSWORD = "fuzzuser", "fuzzuser-password-1"
ROBOT_SHORT = "ci"
ROBOT = f"robot${PROJECT}+{ROBOT_SHORT}"
REPO = f"{PROJECT}/app"
TAG = "v1"

# Examples per operation for an API of REFERENCE_OPERATIONS operations; scaled down as the API
# grows (see _examples) so the module stays well under a minute and a half.
POSITIVE_EXAMPLES = 30  # random path parameters
SEEDED_EXAMPLES = 12  # seeded (real) path parameters, for operations that have any
NEGATIVE_EXAMPLES = 15  # schema-violating requests
UNAUTH_EXAMPLES = 6  # without credentials, per strategy
REFERENCE_OPERATIONS = 30
MIN_OPERATIONS = 25

CHECKS = [not_a_server_error, response_schema_conformance]


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ADMIN_AUTH = {"Authorization": _basic(ADMIN, ADMIN_PASSWORD), **API_CLIENT}


@dataclass
class Fuzz:
    app: Any
    client: ASGIClient
    schema: Any
    digest: str
    operations: list = field(default_factory=list)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _push_image(client: ASGIClient) -> str:
    """Push a tiny image to REPO:TAG through /v2 (Basic auth as admin); return its manifest digest."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = b"dockyard schemathesis fuzz layer\n" * 10
    for blob in (config, layer):
        r = client.post(f"/v2/{REPO}/blobs/uploads/", params={"digest": _sha256(blob)}, data=blob,
                        headers={**ADMIN_AUTH, "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, f"blob upload: {r.status_code} {r.text}"
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _sha256(layer), "size": len(layer)}],
    }).encode()
    r = client.put(f"/v2/{REPO}/manifests/{TAG}", data=manifest,
                   headers={**ADMIN_AUTH, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert r.status_code == 201, f"manifest put: {r.status_code} {r.text}"
    return _sha256(manifest)


def _seed(client: ASGIClient) -> None:
    """(Re)create the seeded objects; the fuzzer may have changed or deleted them. Idempotent."""
    steps = [
        ("/api/v1/projects", {"name": PROJECT, "public": False}),
        ("/api/v1/users", {"username": USER, "password": USER_PASSWORD}),
        (f"/api/v1/projects/{PROJECT}/members", {"username": USER, "role": "developer"}),
        ("/api/v1/robots", {"name": ROBOT_SHORT, "project": PROJECT, "actions": ["pull", "push"]}),
    ]
    for path, body in steps:
        r = client.post(path, json=body, headers=ADMIN_AUTH)
        assert r.status_code in (201, 409), f"seeding POST {path}: {r.status_code} {r.text}"
    for scope, base in (("project", f"/api/v1/projects/{PROJECT}/webhooks"), ("system", "/api/v1/system/webhooks")):
        hooks = client.get(base, headers=ADMIN_AUTH).json()
        if not hooks:
            r = client.post(base, json={"url": "https://hooks.example/fuzz"}, headers=ADMIN_AUTH)
            assert r.status_code == 201, f"seeding a {scope} webhook: {r.status_code} {r.text}"
            hooks = [r.json()]
        r = client.post(f"{base}/{hooks[0]['id']}/ping", headers=ADMIN_AUTH)  # a delivery to redeliver
        assert r.status_code == 200, f"seeding a delivery: {r.status_code} {r.text}"
        WEBHOOKS[scope] = (str(hooks[0]["id"]), str(r.json()["id"]))


WEBHOOKS: dict[str, tuple[str, str]] = {}  # scope -> (webhook id, delivery id) of the seeded hooks


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("openapi-fuzz") / "data"
    app = create_app(Settings(
        data_dir=data,
        admin_password=ADMIN_PASSWORD,
        auth_mode="basic",  # the image for the retag operation is pushed with Basic auth
        storage_driver="filesystem",
        upload_purge_interval_seconds=0,
        credential_cache_seconds=600,
        vulndb_url="http://127.0.0.1:9",  # POST /system/vulndb/update must fail fast, not reach the internet
    ))
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    # Random Authorization headers would be failed logins (and trip the login throttle).
    schema.config.generation.update(with_security_parameters=False)
    # Webhooks neither resolve names nor leave the process: every host is a public address, and
    # every request is answered by a stand-in receiver.
    app.state.services.webhooks.resolver = lambda host, port: ["93.184.216.34"]
    app.state.services.webhook_dispatcher.transport = httpx.MockTransport(lambda request: httpx.Response(204))
    client = ASGIClient(app)
    with client:  # runs the app's lifespan
        _seed(client)
        digest = _push_image(client)
        # The server-sent event stream never ends by itself (this client waits for a whole body);
        # tests/functional/test_events.py drives it with max_events instead.
        operations = [op for op in (result.ok() for result in schema.get_all_operations())
                      if op.path != "/events/stream"]
        yield Fuzz(app=app, client=client, schema=schema, digest=digest, operations=operations)
    shutdown_lifespans()


def _examples(base: int, operations: int) -> int:
    return max(3, base * REFERENCE_OPERATIONS // max(operations, REFERENCE_OPERATIONS))


def _seeded_path_parameters(operation) -> dict[str, str] | None:
    names = {p.name for p in operation.path_parameters}
    if not names:
        return None
    real = {"project": PROJECT, "username": USER, "name": ROBOT if operation.path.startswith("/robots") else REPO,
            "tag": TAG, "reference": TAG}
    if "webhook_id" in names:
        webhook_id, delivery_id = WEBHOOKS["system" if operation.path.startswith("/system") else "project"]
        real.update(webhook_id=webhook_id, delivery_id=delivery_id)
    return {name: real[name] for name in names if name in real} or None


def _seeded_body(operation) -> Any:
    if operation.method.upper() == "PUT" and operation.path == "/repositories/{name}/tags/{tag}":
        return {"digest": "__DIGEST__"}
    return None


def _drive(operation, strategy, max_examples: int, body: Callable) -> None:
    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case) -> None:
        body(case)

    run()


def _negatable(operation) -> bool:
    """Whether schema-violating requests exist: a body, query parameters, or a typed path parameter.
    (An operation with only free-form string path parameters has none; Hypothesis would spend a
    thousand rejected draws finding that out.)"""
    if list(operation.body) or list(operation.query):
        return True
    return any((p.definition.get("schema") or {}).get("type") != "string" for p in operation.path_parameters)


def _drive_negative(operation, max_examples: int, body: Callable) -> None:
    """Schema-violating requests; Hypothesis reports Unsatisfiable if it cannot make any."""
    if not _negatable(operation):
        return
    try:
        _drive(operation, operation.as_strategy(generation_mode=GenerationMode.NEGATIVE), max_examples, body)
    except Unsatisfiable:
        pass


@dataclass
class Tally:
    calls: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_operation: dict[str, Counter] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    def record(self, label: str, status: int) -> None:
        self.calls += 1
        self.statuses[status] += 1
        self.by_operation.setdefault(label, Counter())[status] += 1

    def fail(self, label: str, kind: str, message: str) -> None:
        self.failures.setdefault((label, kind), message)

    def report(self) -> str:
        return "\n\n".join(f"{label} [{kind}]:\n{message}" for (label, kind), message in sorted(self.failures.items()))


def _header(response, name: str) -> str:
    """A header of a schemathesis Response (values are lists there)."""
    for key, values in response.headers.items():
        if key.lower() == name:
            return values[0] if isinstance(values, list) else values
    return ""


def _describe(case, response) -> str:
    try:
        curl = case.as_curl_command()
    except Exception:  # pragma: no cover - diagnostics only
        curl = repr(case)
    return f"{curl}\n-> {response.status_code} {response.text[:600]}"


def _call(tally: Tally, case, client: ASGIClient, headers: dict | None):
    """Send the case in-process. An exception escaping the app is what a real server turns into a
    500 (Starlette's ServerErrorMiddleware answers 500, then re-raises): record it as such."""
    try:
        return case.call(session=client, headers=headers)
    except Exception as exc:  # noqa: BLE001
        label = case.operation.label
        tally.record(label, 500)
        try:
            curl = case.as_curl_command()
        except Exception:  # pragma: no cover - diagnostics only
            curl = repr(case)
        tally.fail(label, f"unhandled {type(exc).__name__} (HTTP 500)", f"{curl}\n-> {type(exc).__name__}: {exc}")
        return None


def _unparsable_json_body(case, response) -> bool:
    """FastAPI decodes a JSON body before it runs the authentication dependency, so a body that is
    not JSON at all (or not UTF-8) is a 400 INVALID_REQUEST ("JSON decode error", "There was an
    error parsing the body") even without credentials. Nothing about the API leaks that way."""
    if response.status_code != 400 or case.body is None:
        return False
    try:
        errors = response.json()["errors"]
    except (ValueError, KeyError, TypeError):
        return False
    message = errors[0].get("message", "")
    return errors[0]["code"] == "INVALID_REQUEST" and (
        "JSON decode error" in message or "error parsing the body" in message)


def _unroutable(response) -> bool:
    """A generated path the router cannot match at all (e.g. a parameter with a newline, which the
    /api/v1 mount's `.*` does not match) is a 404 "no endpoint" before any handler runs."""
    if response.status_code != 404:
        return False
    try:
        return response.json()["errors"][0]["message"].startswith("no endpoint at ")
    except (ValueError, KeyError, TypeError, IndexError):
        return False


def _validate(tally: Tally, case, response, headers: dict | None) -> None:
    label = case.operation.label
    tally.record(label, response.status_code)
    if response.status_code >= 500:
        tally.fail(label, f"HTTP {response.status_code}", _describe(case, response))
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except (AssertionError, BaseExceptionGroup) as exc:
        tally.fail(label, type(exc).__name__, f"{exc}\n{_describe(case, response)}")


def test_every_operation_as_admin_no_server_errors_and_conforming_responses(fuzz: Fuzz):
    started = time.monotonic()
    tally = Tally()
    labels = [op.label for op in fuzz.operations]
    assert len(labels) >= MIN_OPERATIONS, f"only {len(labels)} operations in the OpenAPI document: {labels}"
    assert len(set(labels)) == len(labels)

    def call(case) -> None:
        if isinstance(case.body, dict) and case.body.get("digest") == "__DIGEST__":
            case.body = {"digest": fuzz.digest}
        response = _call(tally, case, fuzz.client, ADMIN_AUTH)
        if response is not None:
            _validate(tally, case, response, ADMIN_AUTH)

    for operation in fuzz.operations:
        _seed(fuzz.client)
        strategies = [(operation.as_strategy(), _examples(POSITIVE_EXAMPLES, len(labels)))]
        seeded = _seeded_path_parameters(operation)
        if seeded:
            kwargs: dict[str, Any] = {"path_parameters": seeded}
            if _seeded_body(operation) is not None:
                kwargs["body"] = _seeded_body(operation)
            strategies.append((operation.as_strategy(**kwargs), _examples(SEEDED_EXAMPLES, len(labels))))
        for strategy, examples in strategies:
            _drive(operation, strategy, examples, call)
        _drive_negative(operation, _examples(NEGATIVE_EXAMPLES, len(labels)), call)

    # The administrator survived the run (the fuzzer must not have locked out or demoted it).
    whoami = fuzz.client.get("/api/v1/auth/whoami", headers=ADMIN_AUTH)
    assert whoami.status_code == 200 and whoami.json()["is_admin"], whoami.text

    summary = (f"{tally.calls} calls over {len(labels)} operations in {time.monotonic() - started:.1f}s; "
               f"statuses {dict(sorted(tally.statuses.items()))}")
    print(summary)
    for label in labels:
        print(f"  {label}: {dict(sorted(tally.by_operation.get(label, Counter()).items()))}")
    assert not tally.failures, f"{len(tally.failures)} failing (operation, check) pairs; {summary}\n\n{tally.report()}"
    missing = [label for label in labels if not tally.by_operation.get(label)]
    assert not missing, f"operations never called: {missing}"
    assert tally.calls > len(labels) * 10, summary
    # Seeded data made real work happen: most operations answered 2xx at least once.
    succeeded = [label for label, statuses in tally.by_operation.items() if any(200 <= s < 300 for s in statuses)]
    assert len(succeeded) >= len(labels) * 2 // 3, (
        f"only {len(succeeded)} of {len(labels)} operations ever succeeded: {sorted(set(labels) - set(succeeded))}; "
        f"{summary}")


def test_every_operation_without_credentials_is_401(fuzz: Fuzz):
    tally = Tally()
    labels = [op.label for op in fuzz.operations]
    assert len(labels) >= MIN_OPERATIONS

    def call(case) -> None:
        response = _call(tally, case, fuzz.client, API_CLIENT)
        if response is None:
            return
        _validate(tally, case, response, API_CLIENT)
        label = case.operation.label
        if _unparsable_json_body(case, response) or _unroutable(response):
            return
        if response.status_code != 401:
            tally.fail(label, f"HTTP {response.status_code} (expected 401)", _describe(case, response))
        else:
            body = response.json()
            if body.get("errors", [{}])[0].get("code") != "UNAUTHORIZED" or not _header(
                    response, "www-authenticate").startswith("Dockyard "):
                tally.fail(label, "401 shape", _describe(case, response) + f"\n{dict(response.headers)}")

    for operation in fuzz.operations:
        seeded = _seeded_path_parameters(operation)
        strategies = [operation.as_strategy()]
        if seeded:
            strategies.append(operation.as_strategy(path_parameters=seeded))
        examples = _examples(UNAUTH_EXAMPLES, len(labels))
        _drive(operation, st.one_of(strategies), examples * len(strategies), call)
        _drive_negative(operation, examples, call)

    summary = f"{tally.calls} calls over {len(labels)} operations; statuses {dict(sorted(tally.statuses.items()))}"
    print(summary)
    assert not tally.failures, f"{len(tally.failures)} failing (operation, check) pairs; {summary}\n\n{tally.report()}"
    missing = [label for label in labels if tally.by_operation.get(label, Counter())[401] == 0]
    assert not missing, f"operations never answered 401: {missing}"
    # Nothing was changed anonymously: the seeded objects are intact and no anonymous success was audited.
    audit = fuzz.client.get("/api/v1/audit", params={"outcome": "success", "page_size": 100}, headers=ADMIN_AUTH)
    assert audit.status_code == 200, audit.text
    assert all(event["actor"] != "anonymous" and event["actor_kind"] != "anonymous" for event in audit.json()), audit.text


INT64_EDGES = (2**63 - 1, 2**63, 10**30)


def _integer_parameters(operation) -> list[tuple[str, str]]:
    found = []
    for location, parameters in (("path", operation.path_parameters), ("query", operation.query)):
        for parameter in parameters:
            if (parameter.definition.get("schema") or {}).get("type") == "integer":
                found.append((location, parameter.name))
    return found


def test_integer_parameters_past_int64_are_client_errors(fuzz: Fuzz):
    tally = Tally()
    targeted = []

    def call(case) -> None:
        response = _call(tally, case, fuzz.client, ADMIN_AUTH)
        if response is not None:
            _validate(tally, case, response, ADMIN_AUTH)

    for operation in fuzz.operations:
        for location, name in _integer_parameters(operation):
            targeted.append(f"{operation.label} {location}:{name}")
            for value in INT64_EDGES:
                path = {p.name: p.name for p in operation.path_parameters}  # placeholders
                path.update(_seeded_path_parameters(operation) or {})
                query = {}
                if location == "path":
                    path[name] = value
                else:
                    query[name] = value
                _drive(operation, operation.as_strategy(path_parameters=path, query=query), 3, call)

    summary = f"{tally.calls} calls for {len(targeted)} integer parameters; statuses {dict(sorted(tally.statuses.items()))}"
    print(summary)
    assert len(targeted) >= 5, f"expected the paged list operations' page/page_size at least: {targeted}"
    assert tally.calls >= len(targeted) * len(INT64_EDGES), summary
    assert not tally.failures, f"{len(tally.failures)} failing (operation, check) pairs; {summary}\n\n{tally.report()}"
