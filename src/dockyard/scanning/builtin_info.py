"""What the built-in scanner is, in the shape an external adapter's metadata call has, so
`GET /api/v1/system/scanners/builtin/metadata` (and `dockyard scanners show builtin`) answer for the
scanner every project may pick without registering it, instead of "not registered"."""

from __future__ import annotations

from dockyard import __version__
from dockyard.domain.manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from dockyard.policy.security_policy import BUILTIN_SCANNER
from dockyard.scanning.sbom import SPDX_MEDIA_TYPE

SCAN_REPORT = "vulnerability report (GET /api/v1/repositories/{repo}/artifacts/{ref}/scan)"


def builtin_metadata() -> dict:
    """Same keys as an adapter's metadata (api/mgmt/security.py): an index is scanned per platform image."""
    return {
        "name": BUILTIN_SCANNER,
        "vendor": "Dockyard",
        "version": __version__,
        "consumes": [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST],
        "produces": [SPDX_MEDIA_TYPE, SCAN_REPORT],
        "properties": {"cataloguer": "syft", "advisories": "OSV (dockyard vulndb import)", "registered": False},
    }
