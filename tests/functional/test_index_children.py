"""An index's children live as long as the index: deleting a listed child is refused."""

from __future__ import annotations

import hashlib
import json

import httpx

from dockyard.app import create_app
from dockyard.settings import Settings
from .helpers import API_CLIENT

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_child_of_an_index_cannot_be_deleted_until_the_index_is(tmp_path):
    app = create_app(Settings(data_dir=tmp_path, auth_mode="none"))
    async with httpx.AsyncClient(headers=API_CLIENT, transport=httpx.ASGITransport(app=app), base_url="http://reg") as client:
        config = b'{"os":"linux"}'
        assert (await client.post("/v2/p/app/blobs/uploads/", params={"digest": _digest(config)}, content=config)).status_code == 201
        child = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config), "size": len(config)},
                            "layers": []}).encode()
        r = await client.put(f"/v2/p/app/manifests/{_digest(child)}", content=child, headers={"Content-Type": OCI_MANIFEST})
        assert r.status_code == 201
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [{"mediaType": OCI_MANIFEST, "digest": _digest(child), "size": len(child)}]}).encode()
        assert (await client.put("/v2/p/app/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX})).status_code == 201

        r = await client.delete(f"/v2/p/app/manifests/{_digest(child)}")
        assert r.status_code == 409
        error = r.json()["errors"][0]
        assert error["code"] == "CONFLICT" and _digest(index) in error["message"]
        assert (await client.get(f"/v2/p/app/manifests/{_digest(child)}")).status_code == 200

        assert (await client.delete(f"/v2/p/app/manifests/{_digest(index)}")).status_code == 202
        assert (await client.delete(f"/v2/p/app/manifests/{_digest(child)}")).status_code == 202
        assert (await client.get(f"/v2/p/app/manifests/{_digest(child)}")).status_code == 404
