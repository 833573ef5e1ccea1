"""Automatic certificates in `dockyard serve` (docs/tls.md, "Automatic certificates (ACME)").

Why a thread of the serve process, not a job (jobs/): a job runs on whichever worker claims it, on one
node, but every node must install the certificate in its own data directory and restart its own granian
workers, which only the serve process (their parent, the target of SIGHUP) can do. So each serve process
runs this loop; the database decides which node orders (a lease, domain/acme_store.py) and every node
installs what is stored:

1. read the stored certificate; when it is missing or due for renewal, take the lease and order
   (domain/acme.py), the other nodes skipping the order while the lease is held;
2. when the stored certificate is not the one in this node's files, write the files (0600) and reload
   the workers exactly as SIGHUP does (cli/tls_serve.py checks the pair first).

A failure (the CA unreachable, validation refused) is logged and retried with backoff, doubling from
RETRY_MIN_SECONDS up to the check interval; the server keeps serving what it has meanwhile.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
from datetime import timedelta
from pathlib import Path

from dockyard.auth.secret_box import KeyEncryptionError
from dockyard.domain.acme import AcmeConfig, AcmeFailure, obtain
from dockyard.domain.acme_store import (
    AcmeStore,
    StoredCertificate,
    fingerprint_of_file,
    holder_name,
    leaf_facts,
    needs_renewal,
    placeholder_pair,
)
from dockyard.metadata.db import utcnow

log = logging.getLogger("dockyard.acme")
RETRY_MIN_SECONDS = 5.0


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file (directory 0700). The temp file is made afresh (O_EXCL,
    no symlink followed): one left by a crashed process of the same PID (PID 1 in a container) must not be
    reused with its mode, nor a link there let the key be written elsewhere and then become `path`."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.parent.stat().st_mode & 0o077:  # made by hand or under a loose umask: it is this node's key directory
        try:
            path.parent.chmod(0o700)
        except OSError as exc:  # not ours (a mounted volume): the files themselves are still 0600
            log.warning("ACME: cannot make %s private (mode 0700): %s", path.parent, exc)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AcmeManager:
    def __init__(self, store: AcmeStore, config: AcmeConfig, *, cert_file: Path, key_file: Path,
                 renew_before_days: float, check_seconds: float, lease_seconds: int | None = None):
        self.store = store
        self.config = config
        self.cert_file = cert_file
        self.key_file = key_file
        self.renew_before = timedelta(days=renew_before_days)
        self.check_seconds = check_seconds
        self.lease_seconds = lease_seconds or config.timeout_seconds + 60
        self.lease_refresh_seconds = self.lease_seconds / 3  # while ordering: a live node keeps its lease
        # One order, at most: its HTTP requests each time out after 30 s of silence, but a server trickling
        # bytes keeps one alive for ever, and this loop (which also installs) must go on.
        self.order_max_seconds = 4 * config.timeout_seconds + 60
        self._hung_order: threading.Thread | None = None
        self.holder = holder_name()
        self._leased = False  # this node holds the ordering lease (released at exit, even on SIGTERM)
        self._pid = os.getpid()
        self.reload = lambda: os.kill(os.getpid(), signal.SIGHUP)  # the serve process's own SIGHUP path
        self._stop = threading.Event()
        self._start_failures = 0

    # -- one pass ----------------------------------------------------------------------------

    def due(self, stored: StoredCertificate | None) -> bool:
        if stored is None:
            return True
        _fp, not_before, not_after = leaf_facts(stored.fullchain_pem)
        return needs_renewal(not_before, not_after, utcnow(), self.renew_before)

    def order_if_due(self) -> bool:
        """Order when the stored certificate is missing or due and no other node holds the lease.
        True when this node ordered (and stored) a certificate."""
        if not self.due(self.store.current(self.config.domain)):
            return False
        if self._hung_order is not None and self._hung_order.is_alive():
            log.error("ACME: the order for %s given up earlier is still hanging; not starting another", self.config.domain)
            return False
        if not self.store.take_lease(self.config.domain, self.holder, self.lease_seconds):
            log.info("ACME: %s is ordering the certificate for %s; waiting for it",
                     self.store.lease_holder(self.config.domain), self.config.domain)
            return False
        self._leased = True
        log.info("ACME: ordering a certificate for %s from %s", self.config.domain, self.config.directory_url)
        ordering = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(ordering,), name="dockyard-acme-lease", daemon=True)
        keeper.start()
        try:
            if not self.due(self.store.current(self.config.domain)):  # another node finished meanwhile
                return False
            outcome: list[BaseException | None] = []

            def order() -> None:
                try:
                    obtain(self.store, self.config)
                    outcome.append(None)
                except BaseException as exc:  # handed to the loop below
                    outcome.append(exc)

            worker = threading.Thread(target=order, name="dockyard-acme-order", daemon=True)
            worker.start()
            worker.join(self.order_max_seconds)
            if worker.is_alive():
                self._hung_order = worker  # abandoned: a late result is still a checked certificate, stored
                raise AcmeFailure(f"the ACME order for {self.config.domain} has not finished in "
                                  f"{self.order_max_seconds:.0f} s (the ACME server is not answering); giving it up")
            if outcome[0] is not None:
                raise outcome[0]
            return True
        finally:
            ordering.set()
            keeper.join()
            self.store.release_lease(self.config.domain, self.holder)
            self._leased = False

    def release_held_lease(self) -> None:
        """At exit: a serve process stopped mid-order hands the lease back at once, instead of making the
        other nodes (or its own restart) wait for it to lapse. Only the process that took it (not a forked worker)."""
        if not self._leased or os.getpid() != self._pid:
            return
        try:
            self.store.release_lease(self.config.domain, self.holder)
            self._leased = False
            log.info("ACME: stopped during the order for %s; its lease is released", self.config.domain)
        except Exception as exc:  # the database away: the lease lapses on its own
            log.warning("ACME: cannot release the lease for %s at exit: %s", self.config.domain, exc)

    def _keep_lease(self, done: threading.Event) -> None:
        """Extend the lease while the order runs: only the polling is bounded by the timeout, each request may
        take 30 s, and a lease that ran out mid-order let another node order too. A dead node stops extending."""
        while not done.wait(self.lease_refresh_seconds):
            try:
                if not self.store.take_lease(self.config.domain, self.holder, self.lease_seconds):
                    log.warning("ACME: the lease for %s passed to %s during this order", self.config.domain,
                                self.store.lease_holder(self.config.domain))
            except Exception as exc:  # the database away: the order fails or finishes on its own
                log.warning("ACME: cannot extend the lease for %s: %s", self.config.domain, exc)

    def install(self) -> bool:
        """Write the stored certificate to this node's files when they hold another one; True if written."""
        stored = self.store.current(self.config.domain)
        if stored is None or (fingerprint_of_file(self.cert_file) == stored.fingerprint and self.key_file.exists()):
            return False
        stored = self.store.current(self.config.domain, open_key=True)
        assert stored is not None
        write_private(self.key_file, stored.key_pem)  # the pair is checked before any worker loads it
        write_private(self.cert_file, stored.fullchain_pem)
        log.info("ACME: installed the certificate for %s (valid until %s)", self.config.domain, stored.not_after)
        return True

    def check(self) -> bool:
        """Order when due, install when changed; True when the files changed (the workers need a reload)."""
        self.order_if_due()
        return self.install()

    # -- at start and in the background -------------------------------------------------------

    def prepare(self) -> None:
        """Before the workers start: install the stored certificate, or try one order; failing both,
        serve a self-signed placeholder so the server (and its HTTP-01 listener) runs while the loop retries."""
        try:
            self.check()
        except KeyEncryptionError:
            raise  # a configuration error (another KEK): serve refuses to start
        except Exception as exc:  # the CA unreachable or refusing, the database away: start anyway, retry
            self._start_failures = 1
            log.error("ACME: cannot get the certificate for %s now: %s; retrying in %.0f s",
                      self.config.domain, exc, self.retry_delay(1))
        stored = self.store.current(self.config.domain) if not self._start_failures else None
        if stored is None or fingerprint_of_file(self.cert_file) != stored.fingerprint:
            self._start_failures = max(self._start_failures, 1)  # another node is ordering: look again soon
        if not self.cert_file.exists() or not self.key_file.exists():
            cert, key = placeholder_pair(self.config.domain)
            write_private(self.key_file, key)
            write_private(self.cert_file, cert)
            log.warning("ACME: serving a self-signed placeholder for %s until the certificate arrives", self.config.domain)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="dockyard-acme", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def retry_delay(self, failures: int) -> float:
        """After `failures` failed checks in a row: 5 s, 10 s, 20 s, ... up to the check interval."""
        return min(self.check_seconds, RETRY_MIN_SECONDS * 2 ** max(0, failures - 1))

    def _run(self) -> None:
        failures = self._start_failures  # no certificate installed at start: look again in 5 s, not in an interval
        wait = self.retry_delay(failures) if failures else self.check_seconds
        while not self._stop.wait(wait):
            try:
                if self.check():
                    log.info("ACME: reloading the workers for the new certificate")
                    self.reload()
                failures, wait = 0, self.check_seconds
            except Exception as exc:  # keep serving what we have; try again soon, then less often
                failures += 1
                wait = self.retry_delay(failures)
                log.error("ACME: %s; retrying in %.0f s", exc, wait)


def _exit_on_sigterm(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def prepare_stoppable(manager: AcmeManager) -> None:
    """`prepare()` with SIGTERM turned into SystemExit: a SIGTERM during the first order (before granian
    installs its handlers) then ends serve through the `finally` that releases the lease, instead of killing
    the process with the lease held for the other nodes (and its own restart) to wait out."""
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        manager.prepare()
    finally:
        signal.signal(signal.SIGTERM, previous)


def start_acme(settings):
    """For `serve` with acme_domain, before the workers start: open the database and KEK, start the plain-HTTP
    listener (HTTP-01 answers, redirects otherwise), install or order the certificate (placeholder on
    failure), start the renewal thread. Returns the settings with tls_cert_file/tls_key_file pointing at
    this node's ACME files, which the workers then serve."""
    from dockyard.auth.secret_box import load_keyring
    from dockyard.cli.tls_serve import start_redirect_listener
    from dockyard.metadata.db import Database

    db = Database(settings.resolved_database_url)
    # granian forks its workers from this process: a child must not use (or close) this pool's connections.
    os.register_at_fork(after_in_child=lambda: db.engine.dispose(close=False))
    secret = settings.secret_key.get_secret_value() if settings.secret_key is not None else None
    store = AcmeStore(db, load_keyring(secret, settings.resolved_secret_key_file))
    start_redirect_listener(settings.host, settings.tls_redirect_http_port, settings.port, settings.public_url,
                            challenge=store.challenge_response)
    config = AcmeConfig(domain=settings.acme_domain, directory_url=settings.acme_directory_url,
                        email=settings.acme_email, ca_file=settings.acme_ca_file)
    manager = AcmeManager(store, config, cert_file=settings.acme_cert_file, key_file=settings.acme_key_file,
                          renew_before_days=settings.acme_renew_before_days,
                          check_seconds=settings.acme_check_interval_seconds)
    if settings.server == "uvicorn":  # no rolling reload there (SIGHUP would end it): a renewal waits for a restart
        manager.reload = lambda: log.warning("ACME: a new certificate is installed; restart the server to serve it "
                                             "(--server uvicorn cannot reload; granian does)")
    # Until granian installs its SIGHUP handler, a reload has nothing to do: the workers it starts read the files.
    signal.signal(signal.SIGHUP, lambda *_: log.info("SIGHUP before the workers started: they will load the files"))
    atexit.register(manager.release_held_lease)
    prepare_stoppable(manager)
    manager.start()
    return settings.model_copy(update={"tls_cert_file": settings.acme_cert_file, "tls_key_file": settings.acme_key_file})
