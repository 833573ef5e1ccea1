"""The vulnerability database: OSV advisories imported into SQL, with per-source status.

Sources are OSV's per-ecosystem exports (`<bucket>/<ECOSYSTEM>/all.zip`, one JSON record per
advisory). `update()` downloads them; `import_path()` reads the same files from disk for hosts
without network (`dockyard vulndb update --from PATH`). Imports are idempotent: a record is
written only when its `modified` is newer than the stored one. Withdrawn advisories are kept
(so status counts and history stay honest) but the matcher never loads them.

Tables (metadata/models.py, migration 0005):

    vuln_advisories  id PK, modified, published, withdrawn, summary, document (the record)
    vuln_affected    (advisory_id, ecosystem, package) → index (ecosystem_base, package)
    vuln_aliases     (alias, advisory_id): every id, alias and upstream id of a record
    vuln_sources     source PK, origin, sha256, imported_at, advisory/withdrawn/invalid counts
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from sqlalchemy import delete, func, select

from dockyard.metadata.db import Database, aware, upsert, utcnow
from dockyard.metadata.models import vuln_advisories, vuln_affected, vuln_aliases, vuln_sources
from dockyard.scanning.osv import Advisory, OSVError, parse_advisory
from dockyard.scanning.versions import ecosystem_base
from dockyard.settings import DEFAULT_ECOSYSTEMS, OSV_BUCKET_URL

log = logging.getLogger(__name__)

BATCH = 500
BATCH_BYTES = 64 * 1024 * 1024  # a batch is also cut by size: 500 records of MAX_RECORD_BYTES would be 8 GiB
MAX_RECORD_BYTES = 16 * 1024 * 1024  # one advisory; the largest real ones are a few MiB
# zipfile holds every central-directory entry in memory (~500 bytes each): a 4 GiB upload of empty
# entries would be tens of GiB. OSV's largest export has well under a million records.
MAX_ZIP_ENTRIES = 2_000_000
MAX_ZIP_DIRECTORY_BYTES = 128 * 1024 * 1024  # at 46 bytes an entry at least, ~2.9 million entries
MAX_ERROR_CHARS = 300  # one invalid record's reason: an error may quote a value as large as the record
# The column widths of vuln_advisories / vuln_affected / vuln_aliases (metadata/models.py). PostgreSQL
# refuses a longer value, which would fail the whole import, so such a record is invalid instead.
MAX_ID_CHARS, MAX_ECOSYSTEM_CHARS, MAX_PACKAGE_CHARS, MAX_ECOSYSTEM_BASE_CHARS = 255, 255, 512, 64

def package_key(ecosystem: str, name: str) -> str:
    """The name as matched: PyPI names PEP 503-normalised, everything else as written."""
    if ecosystem_base(ecosystem) == "PyPI":
        return re.sub(r"[-_.]+", "-", name).lower()
    return name


class VulnDBError(Exception):
    """An import or download that could not be completed (the message says why)."""


@dataclass
class ImportReport:
    source: str
    origin: str
    records: int = 0  # valid records read
    written: int = 0  # inserted or replaced (newer `modified`)
    unchanged: int = 0  # already stored with the same or a newer `modified`
    withdrawn: int = 0
    invalid: int = 0
    errors: list[str] = field(default_factory=list)  # first few invalid-record reasons
    skipped: bool = False  # the export's sha256 matched the last import


@dataclass(frozen=True)
class SourceStatus:
    source: str
    origin: str
    imported_at: datetime
    advisories: int
    withdrawn: int
    invalid: int


@dataclass(frozen=True)
class Status:
    sources: tuple[SourceStatus, ...]
    advisories: int  # distinct advisories stored
    withdrawn: int
    updated_at: datetime | None  # newest imported_at

    def as_dict(self) -> dict:
        """The shape of `GET /api/v1/system/vulndb` and `dockyard vulndb status --json`."""
        return {
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
            "advisories": self.advisories,
            "withdrawn": self.withdrawn,
            "sources": [
                {
                    "source": s.source,
                    "origin": s.origin,
                    "imported_at": s.imported_at.isoformat(),
                    "advisories": s.advisories,
                    "withdrawn": s.withdrawn,
                    "invalid": s.invalid,
                }
                for s in self.sources
            ],
        }


# --- reading exports ---------------------------------------------------------------------


def zip_directory(path: Path) -> tuple[int, int] | None:
    """(entries, central-directory bytes) the zip at `path` declares in its end record (zip64 too),
    read without loading the directory; None when there is no such record (not a zip). zipfile reads
    the directory by its byte size, not its entry count, so both are checked."""
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - (22 + 65535)))
        tail = fh.read()
        at = tail.rfind(b"PK\x05\x06")  # as zipfile finds it
        if at < 0 or len(tail) < at + 22:
            return None
        entries, directory = struct.unpack_from("<HI", tail, at + 10)
        locator = at - 20
        if locator >= 0 and tail[locator:locator + 4] == b"PK\x06\x07":
            fh.seek(struct.unpack_from("<Q", tail, locator + 8)[0])
            record = fh.read(56)
            if len(record) == 56 and record[:4] == b"PK\x06\x06":
                entries = max(entries, struct.unpack_from("<Q", record, 32)[0])
                directory = max(directory, struct.unpack_from("<Q", record, 40)[0])
        return entries, directory


def check_entry_count(path: Path) -> None:
    """Raise VulnDBError before zipfile loads a central directory of more than MAX_ZIP_ENTRIES
    entries or MAX_ZIP_DIRECTORY_BYTES bytes."""
    found = zip_directory(path)
    if found is None:
        return
    entries, directory = found
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY_BYTES:
        raise VulnDBError(f"not an OSV export: the zip declares {entries} entries in {directory} bytes of directory, "
                          f"more than {MAX_ZIP_ENTRIES} entries or {MAX_ZIP_DIRECTORY_BYTES} bytes")


def iter_zip_records(data: bytes | Path) -> Iterator[tuple[str, bytes]]:
    """(member name, bytes) for each `.json` member of an OSV export zip."""
    if not isinstance(data, bytes):
        check_entry_count(Path(data))
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except zipfile.BadZipFile as exc:
        raise VulnDBError(f"not a zip archive: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            if info.file_size > MAX_RECORD_BYTES:
                raise VulnDBError(f"{info.filename[:200]}: {info.file_size} bytes is not an advisory")
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
                # A bad CRC, a broken deflate stream, an unsupported method or an encrypted member.
                raise VulnDBError(f"{info.filename[:200]}: damaged zip member: {str(exc)[:200]}") from exc
            yield info.filename, data


def discover(path: Path) -> list[tuple[str, list[Path]]]:
    """What `--from PATH` imports, grouped into sources.

    - a zip file: one source named after its folder (`PyPI/all.zip` → `PyPI`), else its stem;
    - a JSON file: one source named after its folder;
    - a directory: every zip below it (each its own source, as above) plus the JSON files of
      each folder as a source named after that folder. The bucket layout
      (`<dir>/<ECOSYSTEM>/all.zip`) therefore imports as one source per ecosystem."""
    path = Path(path)
    if not path.exists():
        raise VulnDBError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix == ".zip":
            return [(_zip_source_name(path), [path])]
        if path.suffix == ".json":
            return [(path.parent.name or "local", [path])]
        raise VulnDBError(f"{path}: expected a .zip export, a .json record or a directory")
    groups: dict[str, list[Path]] = {}
    for file in sorted(path.rglob("*")):
        if not file.is_file():
            continue
        if file.suffix == ".zip":
            groups.setdefault(_zip_source_name(file), []).append(file)
        elif file.suffix == ".json":
            groups.setdefault(file.parent.name or "local", []).append(file)
    if not groups:
        raise VulnDBError(f"{path}: no .zip exports or .json records found")
    return sorted(groups.items())


def _zip_source_name(path: Path) -> str:
    return path.parent.name if path.stem == "all" and path.parent.name else path.stem


# --- the store ---------------------------------------------------------------------------


class VulnDB:
    """Advisory store over the metadata `Database`. Blocking; call through `Database.run`."""

    def __init__(self, database: Database):
        self.database = database

    # import

    def import_path(self, path: Path) -> list[ImportReport]:
        reports = []
        for source, files in discover(path):
            origin = str(files[0]) if len(files) == 1 else str(path)
            reports.append(self.import_records(source, origin, self._records(files)))
        return reports

    def _records(self, files: list[Path]) -> Iterator[tuple[str, bytes]]:
        for file in files:
            if file.suffix == ".zip":
                yield from iter_zip_records(file)
            else:
                yield file.name, file.read_bytes()

    def import_records(
        self, source: str, origin: str, records: Iterable[tuple[str, bytes]], sha256: str | None = None
    ) -> ImportReport:
        """Upsert records by id + modified, then record the source's status."""
        report = ImportReport(source, origin)
        batch: list[tuple[Advisory, bytes]] = []
        batch_bytes = 0
        for name, raw in records:
            try:
                advisory = parse_advisory(json.loads(raw))
                _check_widths(advisory)
            except (OSVError, ValueError, RecursionError) as exc:
                report.invalid += 1
                reason = f"{name}: {exc}"
                if len(reason) > MAX_ERROR_CHARS:
                    reason = reason[: MAX_ERROR_CHARS - 1] + "…"
                if len(report.errors) < 20:
                    report.errors.append(reason)
                log.warning("vulndb %s: skipping %s", source, reason)
                continue
            report.records += 1
            report.withdrawn += advisory.is_withdrawn
            batch.append((advisory, raw))
            batch_bytes += len(raw)
            if len(batch) >= BATCH or batch_bytes >= BATCH_BYTES:
                self._write(batch, report)
                batch, batch_bytes = [], 0
        if batch:
            self._write(batch, report)
        with self.database.write() as conn:
            values = {
                "source": source,
                "origin": origin,
                "sha256": sha256,
                "imported_at": utcnow(),
                "advisory_count": report.records,
                "withdrawn_count": report.withdrawn,
                "invalid_count": report.invalid,
            }
            upsert(conn, vuln_sources, values, ["source"], {k: v for k, v in values.items() if k != "source"})
        return report

    def _write(self, batch: list[tuple[Advisory, bytes]], report: ImportReport) -> None:
        newest: dict[str, tuple[Advisory, bytes]] = {}
        for advisory, raw in batch:  # a record repeated in one export: keep the newest
            kept = newest.get(advisory.id)
            if kept is None or advisory.modified > kept[0].modified:
                newest[advisory.id] = (advisory, raw)
        with self.database.write() as conn:
            stored = {
                row.id: aware(row.modified)
                for row in conn.execute(
                    select(vuln_advisories.c.id, vuln_advisories.c.modified).where(vuln_advisories.c.id.in_(list(newest)))
                )
            }
            report.unchanged += len(batch) - len(newest)
            for advisory_id, (advisory, raw) in newest.items():
                if advisory_id in stored and stored[advisory_id] >= advisory.modified:
                    report.unchanged += 1
                    continue
                document = json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True)
                values = {
                    "id": advisory_id,
                    "modified": advisory.modified,
                    "published": advisory.published,
                    "withdrawn": advisory.withdrawn,
                    "summary": advisory.summary[:4000],
                    "document": document,
                }
                upsert(conn, vuln_advisories, values, ["id"], {k: v for k, v in values.items() if k != "id"})
                conn.execute(delete(vuln_affected).where(vuln_affected.c.advisory_id == advisory_id))
                rows = {
                    (a.ecosystem, package_key(a.ecosystem, a.name)): a.ecosystem_base for a in advisory.affected
                }
                if rows:
                    conn.execute(
                        vuln_affected.insert(),
                        [
                            {"advisory_id": advisory_id, "ecosystem": eco, "package": pkg, "ecosystem_base": base}
                            for (eco, pkg), base in rows.items()
                        ],
                    )
                conn.execute(delete(vuln_aliases).where(vuln_aliases.c.advisory_id == advisory_id))
                names = {advisory_id, *advisory.aliases, *advisory.upstream}
                conn.execute(vuln_aliases.insert(), [{"alias": n, "advisory_id": advisory_id} for n in sorted(names)])
                report.written += 1

    # download

    def update(
        self,
        client: httpx.Client,
        ecosystems: Iterable[str] = DEFAULT_ECOSYSTEMS,
        base_url: str = OSV_BUCKET_URL,
        workdir: Path | None = None,
    ) -> list[ImportReport]:
        """Download each ecosystem's export and import it; an export whose sha256 matches the
        last import of that source is not re-imported."""
        reports = []
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            for ecosystem in ecosystems:
                url = export_url(ecosystem, base_url)
                path = download_export(client, url, Path(tmp) / f"{quote(ecosystem, safe='')}.zip")
                digest = _sha256_file(path)
                if self.stored_sha256(ecosystem) == digest:
                    log.info("vulndb %s: unchanged (%s)", ecosystem, digest[:12])
                    reports.append(ImportReport(ecosystem, url, skipped=True))
                    continue
                reports.append(self.import_records(ecosystem, url, iter_zip_records(path), sha256=digest))
        return reports

    def stored_sha256(self, source: str) -> str | None:
        """The sha256 of the export last imported for `source` (None for local files)."""
        with self.database.read() as conn:
            return conn.execute(select(vuln_sources.c.sha256).where(vuln_sources.c.source == source)).scalar()

    # status and lookup

    def status(self) -> Status:
        with self.database.read() as conn:
            rows = conn.execute(select(vuln_sources).order_by(vuln_sources.c.source)).all()
            total = conn.execute(select(func.count()).select_from(vuln_advisories)).scalar_one()
            withdrawn = conn.execute(
                select(func.count()).select_from(vuln_advisories).where(vuln_advisories.c.withdrawn.is_not(None))
            ).scalar_one()
        sources = tuple(
            SourceStatus(r.source, r.origin, aware(r.imported_at), r.advisory_count, r.withdrawn_count, r.invalid_count)
            for r in rows
        )
        updated = max((s.imported_at for s in sources), default=None)
        return Status(sources, total, withdrawn, updated)

    def get(self, advisory_id: str) -> Advisory | None:
        with self.database.read() as conn:
            doc = conn.execute(select(vuln_advisories.c.document).where(vuln_advisories.c.id == advisory_id)).scalar()
        return parse_advisory(json.loads(doc)) if doc is not None else None

    def advisories_for(self, keys: Iterable[tuple[str, str]]) -> list[Advisory]:
        """Live (not withdrawn) advisories affecting any (ecosystem base, package key)."""
        wanted: dict[str, set[str]] = {}
        for base, name in keys:
            wanted.setdefault(base, set()).add(name)
        ids: set[str] = set()
        with self.database.read() as conn:
            for base, names in wanted.items():
                names_list = sorted(names)
                for i in range(0, len(names_list), BATCH):
                    chunk = names_list[i : i + BATCH]
                    ids.update(
                        conn.execute(
                            select(vuln_affected.c.advisory_id).where(
                                vuln_affected.c.ecosystem_base == base, vuln_affected.c.package.in_(chunk)
                            )
                        ).scalars()
                    )
            docs: list[str] = []
            id_list = sorted(ids)
            for i in range(0, len(id_list), BATCH):
                docs.extend(
                    conn.execute(
                        select(vuln_advisories.c.document).where(
                            vuln_advisories.c.id.in_(id_list[i : i + BATCH]), vuln_advisories.c.withdrawn.is_(None)
                        )
                    ).scalars()
                )
        return [parse_advisory(json.loads(d)) for d in docs]


    def records_named(self, names: Iterable[str]) -> list[Advisory]:
        """Live advisories whose id, alias or upstream id is one of `names` (e.g. CVE ids)."""
        wanted = sorted(set(names))
        docs: list[str] = []
        with self.database.read() as conn:
            for i in range(0, len(wanted), BATCH):
                docs.extend(
                    conn.execute(
                        select(vuln_advisories.c.document)
                        .join(vuln_aliases, vuln_aliases.c.advisory_id == vuln_advisories.c.id)
                        .where(vuln_aliases.c.alias.in_(wanted[i : i + BATCH]), vuln_advisories.c.withdrawn.is_(None))
                        .distinct()
                    ).scalars()
                )
        return [parse_advisory(json.loads(d)) for d in docs]


def _check_widths(advisory: Advisory) -> None:
    """Raise OSVError for a name longer than the column that stores it (see MAX_ID_CHARS)."""
    for alias in (advisory.id, *advisory.aliases, *advisory.upstream):
        if len(alias) > MAX_ID_CHARS:
            raise OSVError(f"an id or alias is longer than {MAX_ID_CHARS} characters")
    for a in advisory.affected:
        if len(a.ecosystem) > MAX_ECOSYSTEM_CHARS or len(a.ecosystem_base) > MAX_ECOSYSTEM_BASE_CHARS:
            raise OSVError(f"an ecosystem name is longer than {MAX_ECOSYSTEM_CHARS} characters "
                           f"(or {MAX_ECOSYSTEM_BASE_CHARS} before its first ':')")
        if len(package_key(a.ecosystem, a.name)) > MAX_PACKAGE_CHARS:
            raise OSVError(f"a package name is longer than {MAX_PACKAGE_CHARS} characters")


# --- download ----------------------------------------------------------------------------


def export_url(ecosystem: str, base_url: str = OSV_BUCKET_URL) -> str:
    """`Debian:12` → `<bucket>/Debian%3A12/all.zip` (the bucket's folders are ecosystem names)."""
    return f"{base_url.rstrip('/')}/{quote(ecosystem, safe='')}/all.zip"


def download_export(client: httpx.Client, url: str, dest: Path) -> Path:
    """Stream one export to `dest` atomically; a non-200 answer or a broken zip is an error."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".download-")
    try:
        with os.fdopen(fd, "wb") as out, client.stream("GET", url) as response:
            if response.status_code != 200:
                raise VulnDBError(f"GET {url}: HTTP {response.status_code}")
            for chunk in response.iter_bytes(1 << 20):
                out.write(chunk)
        if not zipfile.is_zipfile(tmp_name):
            raise VulnDBError(f"GET {url}: the answer is not a zip archive")
        os.replace(tmp_name, dest)
    except httpx.HTTPError as exc:
        raise VulnDBError(f"GET {url}: {exc}") from exc
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return dest


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
