"""A serve process stopped during an ACME order hands the ordering lease back at once (SIGTERM before the
workers start, or exit with the renewal thread mid-order), and `admin acme status` shows a first order running."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dockyard.auth.secret_box import Kek, KeyRing
from dockyard.cli import acme_serve, app
from dockyard.cli.acme_serve import AcmeManager, prepare_stoppable
from dockyard.domain.acme import AcmeConfig
from dockyard.domain.acme_store import AcmeStore

DOMAIN = "registry.example.test"


@pytest.fixture
def store(db) -> AcmeStore:
    return AcmeStore(db, KeyRing(Kek.from_secret(b"k" * 32)))


def _manager(store: AcmeStore, tmp_path: Path) -> AcmeManager:
    manager = AcmeManager(store, AcmeConfig(DOMAIN, "https://acme.invalid/dir"), cert_file=tmp_path / "fullchain.pem",
                          key_file=tmp_path / "privkey.pem", renew_before_days=30, check_seconds=600)
    manager.holder = "node-a"
    return manager


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_sigterm_during_the_first_order_releases_the_lease(store, tmp_path, monkeypatch):
    manager = _manager(store, tmp_path)
    ordering, never = threading.Event(), threading.Event()

    def hanging_obtain(st, config):  # an ACME server that accepted the connection and does not answer
        ordering.set()
        never.wait(30)

    monkeypatch.setattr(acme_serve, "obtain", hanging_obtain)

    def stop_when_ordering():
        assert ordering.wait(10)
        assert store.lease_holder(DOMAIN) == "node-a"
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_when_ordering)
    before = signal.getsignal(signal.SIGTERM)
    killer.start()
    try:
        with pytest.raises(SystemExit) as stopped:
            prepare_stoppable(manager)
    finally:
        never.set()
        killer.join()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert store.lease_holder(DOMAIN) is None  # the next node (or this one restarted) orders at once
    assert signal.getsignal(signal.SIGTERM) == before  # granian installs its own handler next


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_exit_mid_order_releases_the_lease_but_not_from_a_forked_worker(store, tmp_path):
    manager = _manager(store, tmp_path)
    assert store.take_lease(DOMAIN, "node-a", 600)
    manager._leased = True  # the renewal thread is inside order_if_due
    manager._pid = os.getpid() + 1  # as seen from a worker forked from the serve process
    manager.release_held_lease()
    assert store.lease_holder(DOMAIN) == "node-a"
    manager._pid = os.getpid()
    manager.release_held_lease()  # atexit in the serve process
    assert store.lease_holder(DOMAIN) is None


def test_status_shows_a_first_order_running(store, tmp_path):
    data_dir = Path(store.db.engine.url.database).parent if store.db.is_sqlite else tmp_path
    store.take_lease(DOMAIN, "node-b:7:abc", 60)
    args = ["admin", "acme", "status", "--data-dir", str(data_dir), "--database-url", store.db.url]
    text = CliRunner().invoke(app, args)
    assert text.exit_code == 0, text.output
    assert f"{DOMAIN}: no certificate stored yet; ordering now: node-b:7:abc" in text.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0 and '"ordering": "node-b:7:abc"' in as_json.output
