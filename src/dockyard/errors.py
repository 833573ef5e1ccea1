"""The one error catalogue: domain code raises these, one renderer turns them into OCI JSON.

Each code is documented in docs/errors.md; tests/unit/test_docs.py checks the list stays complete.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar


class DockyardError(Exception):
    """Base: carries the OCI code, HTTP status, message and optional detail."""

    code: ClassVar[str] = "UNKNOWN"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(self, message: str | None = None, *, detail: Any = None, headers: dict[str, str] | None = None):
        self.message = message or self.default_message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            body["detail"] = self.detail
        return body


class BlobUnknown(DockyardError):
    code, status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(DockyardError):
    code, status, default_message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class BlobUploadUnknown(DockyardError):
    code, status, default_message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(DockyardError):
    code, status, default_message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestBlobUnknown(DockyardError):
    code, status, default_message = "MANIFEST_BLOB_UNKNOWN", 400, "manifest references a blob unknown to this repository"


class ManifestInvalid(DockyardError):
    code, status, default_message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestTooLarge(DockyardError):
    code, status, default_message = "MANIFEST_INVALID", 413, "manifest exceeds the size limit"


class ManifestUnknown(DockyardError):
    code, status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(DockyardError):
    code, status, default_message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(DockyardError):
    code, status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(DockyardError):
    code, status, default_message = "SIZE_INVALID", 400, "provided length did not match content length"


class TagInvalid(DockyardError):
    code, status, default_message = "TAG_INVALID", 400, "invalid tag"


class TooManyTags(DockyardError):
    code, status, default_message = "TAG_INVALID", 414, "too many tags in one request"


class RangeInvalid(DockyardError):
    code, status, default_message = "RANGE_INVALID", 416, "invalid content range"


class PaginationNumberInvalid(DockyardError):
    code, status, default_message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class InvalidRequest(DockyardError):
    code, status, default_message = "INVALID_REQUEST", 400, "the request is malformed"


class Conflict(DockyardError):
    code, status, default_message = "CONFLICT", 409, "the request conflicts with the current state"


class Unauthorized(DockyardError):
    code, status, default_message = "UNAUTHORIZED", 401, "authentication required"


class Denied(DockyardError):
    code, status, default_message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(DockyardError):
    code, status, default_message = "UNSUPPORTED", 405, "the operation is unsupported"


class NotFound(DockyardError):
    code, status, default_message = "NOT_FOUND", 404, "no such endpoint"


class TooManyRequests(DockyardError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(DockyardError):
    code, status, default_message = "UNAVAILABLE", 503, "service unavailable"


# -- keys, tokens and file permissions (issue 9 items 1, 2) --


class CredentialsTooLarge(DockyardError):
    code, status, default_message = "INVALID_REQUEST", 400, "the Authorization header is too large"


class TooManyScopes(DockyardError):
    code, status, default_message = "INVALID_REQUEST", 400, "too many scopes in one token request"


class KeyNotFound(DockyardError):
    code, status, default_message = "NOT_FOUND", 404, "no such signing key"


# -- access, catalog and quotas (issue 9 items 4, 5, 6, 9, 10) --


class BlobTooLarge(SizeInvalid):
    """An upload grew past `max_blob_bytes`; the partial upload is deleted."""

    code, status, default_message = "SIZE_INVALID", 413, "blob exceeds the size limit"


class QuotaExceeded(Denied):
    """Linking or uploading would take a project over its quota; a partial upload is deleted."""

    code, status, default_message = "DENIED", 403, "project quota exceeded"


class TooManyUploads(TooManyRequests):
    """Too many open upload sessions for one account or one project."""

    code, status, default_message = "TOOMANYREQUESTS", 429, "too many open upload sessions"


# -- input validation, throttling and HTTP surface (issue 9 items 3, 7, 8, 11, 12) --


class RequestTooLarge(DockyardError):
    """A request body outside /v2 (the management API, /token) is larger than any such request needs."""

    code, status, default_message = "SIZE_INVALID", 413, "request body too large"


class HostInvalid(DockyardError):
    """The Host header is not a host name or address (it would end up in WWW-Authenticate)."""

    code, status, default_message = "INVALID_REQUEST", 400, "invalid Host header"


class CsrfHeaderMissing(DockyardError):
    """A state-changing /api/v1 request with neither a JSON body nor the X-Dockyard-Client header."""

    code, status, default_message = "DENIED", 403, "state-changing requests need a JSON body or the X-Dockyard-Client header"


class TagRulesChanged(DockyardError):
    """Tag rules changed while a write was being prepared, again and again; the client may retry."""

    code, status, default_message = "CONFLICT", 409, "tag rules changed during the request; try again"

# -- faults: disk full, database outages, crashes (issue 9 part 2) --


class StorageFull(DockyardError):
    """The blob store or the database file ran out of space (ENOSPC, EDQUOT, SQLITE_FULL).
    Nothing partial is published; the client may retry once space is freed."""

    code, status, default_message = "STORAGE_FULL", 507, "the registry's storage is full; retry later"


class DatabaseUnavailable(Unavailable):
    """The database connection failed (restart, failover, network); pools reconnect on their own."""

    default_message = "the metadata database is unavailable; retry shortly"

    def __init__(self, message: str | None = None, **kwargs):
        kwargs.setdefault("headers", {"Retry-After": "1"})
        super().__init__(message, **kwargs)


class ErrorGroup(DockyardError):
    """Several errors of one status reported together (e.g. every missing blob of a manifest)."""

    def __init__(self, errors: list[DockyardError]):
        if not errors:
            raise ValueError("ErrorGroup needs at least one error")
        self.errors = errors
        first = errors[0]
        super().__init__(first.message, detail=first.detail, headers=first.headers)
        self.code = first.code  # type: ignore[misc]
        self.status = first.status  # type: ignore[misc]


def catalogue() -> list[type[DockyardError]]:
    """All concrete error classes, for docs checks."""
    return [cls for cls in _walk(DockyardError) if cls is not ErrorGroup]


def _walk(cls: type[DockyardError]) -> list[type[DockyardError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_walk(sub))
    return out


def render(error: DockyardError) -> tuple[int, bytes, dict[str, str]]:
    items = error.errors if isinstance(error, ErrorGroup) else [error]
    body = json.dumps({"errors": [e.to_dict() for e in items]}).encode()
    return error.status, body, error.headers

# -- webhooks (issue 10 part 2) --


class WebhookTargetForbidden(Denied):
    """A webhook URL resolves to a loopback, private or link-local address and the caller may not
    target those (system administrators only, with webhook_allow_private_targets on)."""

    default_message = "webhook target address not allowed"

# -- blob deletes (fuzz finding of 2026-12-07) --


class BlobReferenced(Unsupported):
    """DELETE /v2/<name>/blobs/<digest> while a manifest of that repository references the blob:
    the link stays, so the manifest keeps pulling and its bytes keep counting towards the quota.
    405 rather than 409: it is the refusal the OCI conformance suite accepts for a blob delete."""

    default_message = "the blob is referenced by a manifest of this repository; delete the manifest first"

    def __init__(self, message: str | None = None, **kwargs):
        kwargs.setdefault("headers", {"Allow": "GET, HEAD"})
        super().__init__(message, **kwargs)
