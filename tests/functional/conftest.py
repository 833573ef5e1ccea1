"""Fixtures for functional tests: a real app (create_app) driven in-process through httpx."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.app import create_app
from dockyard.settings import Settings

from .helpers import Registry
from .helpers import API_CLIENT

BASE_URL = "http://registry.test"


def make_settings(data_dir: Path, driver: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "storage_driver": driver,
        "storage_root": None,
        "database_url": None,
        "auto_migrate": True,
        "delete_enabled": True,
        "max_manifest_bytes": 4 * 1024 * 1024,
        "upload_flush_bytes": 4096,  # small batches so multi-batch appends are exercised
        "upload_purge_interval_seconds": 600,
        "upload_max_age_seconds": 86400,
        "auth_mode": "none",  # these tests cover the OCI API itself; access control has its own tests
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def open_registry(data_dir: Path, driver: str, **overrides: Any) -> AsyncIterator[Registry]:
    """Build an app, run its lifespan (startup/shutdown) and yield a Registry bound to it."""
    app = create_app(make_settings(data_dir, driver, **overrides))
    async with app.router.lifespan_context(app):
        # Unhandled exceptions become the app's own 500 response (as under a real server),
        # so tests assert on the status/body instead of crashing inside httpx.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(headers=API_CLIENT, transport=transport, base_url=BASE_URL) as client:
            yield Registry(app=app, client=client, driver=driver, data_dir=data_dir)


@pytest.fixture(params=["filesystem", "memory"])
def storage_driver(request) -> str:
    return request.param


@pytest.fixture
async def registry(tmp_path: Path, storage_driver: str) -> AsyncIterator[Registry]:
    async with open_registry(tmp_path / "data", storage_driver) as reg:
        yield reg


@pytest.fixture
async def fs_registry(tmp_path: Path) -> AsyncIterator[Registry]:
    async with open_registry(tmp_path / "data", "filesystem") as reg:
        yield reg


@pytest.fixture
def registry_factory(tmp_path: Path):
    """open_registry bound to this test's data dir, for restart tests."""

    def factory(driver: str = "filesystem", **overrides: Any):
        return open_registry(tmp_path / "data", driver, **overrides)

    return factory


@pytest.fixture(autouse=True)
def no_saved_logins(tmp_path: Path, monkeypatch):
    """CLI tests never read (or write) the logins saved in the home directory of whoever runs them."""
    monkeypatch.setenv("DOCKYARD_CREDENTIALS_FILE", str(tmp_path / "saved-logins" / "credentials.json"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "saved-logins" / "docker"))
