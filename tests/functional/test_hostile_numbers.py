"""Finding 12 of issue 9: very long (or odd) numbers in headers and query parameters are client errors.

`Range: bytes=0-<5000 digits>` and a 5000-digit Content-Range raised ValueError (500). Every number
now goes through domain/numbers.parse_count and comes back as 416 RANGE_INVALID or 400 with its code.
"""

from __future__ import annotations

import httpx
import pytest

from dockyard.domain.numbers import parse_count

from .helpers import assert_error, pattern, sha256

HUGE = "9" * 5000
LONG = "1" * 25  # past 2**63, but int() would take it
ODD = ["\u0663", "\uff11\uff12", "+5", "-5", "1_0", "1e3", "0x10", "1 2"]  # Arabic-Indic and fullwidth digits, signs...


def test_finding12_parse_count_is_bounded_and_ascii_only():
    assert parse_count("0") == 0 and parse_count("9" * 19, maximum=10**19) == int("9" * 19)
    assert parse_count(str(2**63 - 1)) == 2**63 - 1
    for bad in [HUGE, LONG, str(2**63), "", " ", None, *ODD]:
        assert parse_count(bad) is None, bad
    assert parse_count("101", maximum=100) is None


async def _start(reg, repo: str) -> str:
    r = await reg.client.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["location"]


@pytest.mark.parametrize("number", [HUGE, LONG])
async def test_finding12_long_numbers_in_range_and_content_range(fs_registry, number):
    reg = fs_registry
    data = pattern(1000)
    digest = await reg.push_blob("team/app", data)
    for header in (f"bytes=0-{number}", f"bytes={number}-", f"bytes=-{number}", f"bytes={number}-{number}"):
        r = await reg.client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": header})
        assert_error(r, 416, "RANGE_INVALID")
        assert r.headers["content-range"] == "bytes */1000"
    for odd in ODD:
        r = await reg.client.get(f"/v2/team/app/blobs/{digest}", headers={"Range": f"bytes=0-{odd}".encode()})
        assert_error(r, 416, "RANGE_INVALID")

    location = await _start(reg, "team/app")
    for header in (f"0-{number}", f"{number}-{number}", f"bytes 0-9/{number}", f"0-{number}/*"):
        r = await reg.client.patch(location, content=b"x" * 10, headers={"Content-Range": header})
        assert_error(r, 416, "RANGE_INVALID")
    # The session is still usable afterwards: nothing was half-applied.
    r = await reg.client.patch(location, content=data, headers={"Content-Range": "0-999"})
    assert r.status_code == 202, r.text
    r = await reg.client.put(location, params={"digest": sha256(data)})
    assert r.status_code == 201, r.text


async def test_finding12_long_content_length_and_page_sizes(fs_registry):
    reg = fs_registry
    await reg.push_image("team/app", "v1")
    location = await _start(reg, "team/app")
    for value in (HUGE, LONG, *ODD[:3]):
        for method, url in (("PATCH", location), ("PUT", "/v2/team/app/manifests/v2")):
            request = reg.client.build_request(method, url, content=b"{}")
            request.headers["Content-Length"] = value
            r = await reg.client.send(request)
            assert_error(r, 400, "SIZE_INVALID")
    for path in ("/v2/_catalog", "/v2/team/app/tags/list"):
        for n in (HUGE, "9" * 1000, LONG, *ODD):
            r = await reg.client.get(path, params={"n": n})
            assert_error(r, 400, "PAGINATION_NUMBER_INVALID")
        r = await reg.client.get(path, params={"n": "9" * 18, "last": "z" * 5000})
        assert r.status_code == 200, r.text


async def test_finding12_long_numbers_on_the_management_api(tmp_path):
    from dockyard.app import create_app
    from dockyard.settings import Settings

    from .helpers import API_CLIENT

    app = create_app(Settings(data_dir=tmp_path / "data", admin_password="admin-password-1"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://registry.test", auth=("admin", "admin-password-1"),
                                     headers=API_CLIENT) as api:
            assert (await api.post("/api/v1/projects", json={"name": "team"})).status_code == 201
            for number in (HUGE, LONG, "9" * 1000):
                for params in ({"page": number}, {"page_size": number}):
                    r = await api.get("/api/v1/projects", params=params)
                    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST", r.text
                r = await api.delete(f"/api/v1/projects/team/tag-rules/{number}")
                assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST", r.text
                body = '{"quota_bytes": ' + number + "}"
                r = await api.put("/api/v1/projects/team/quota", content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST", r.text
