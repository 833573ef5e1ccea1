"""Issue #19 items 2, 7, 8 and issue #9: hostile images built here, catalogued with the real syft
under lowered caps. Each must end as a clean failure naming the cap, with the job's temp dir
gone, syft's disk and memory under the limits, and nothing read from or written to the host."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zstandard

from dockyard.scanning.limits import GiB, MiB, LayerCounter, ScanLimitExceeded, ScanLimits, is_package_db
from dockyard.scanning.sbom import SbomError, catalogue_image
from dockyard.scanning.syft_runner import SYFT_STARTED, ScanInterrupted, remove_stale
from tests.support import hostile_images

LIMITS = ScanLimits(
    max_unpacked_bytes=16 * MiB,
    max_files=10_000,
    max_package_db_bytes=4 * MiB,
    max_memory_bytes=2 * GiB,
    max_packages=50_000,
    max_sbom_bytes=64 * MiB,
)


def _catalogue(image, work_root: Path, limits: ScanLimits = LIMITS, **kwargs):
    return catalogue_image(image.manifest, image.blob_path, limits=limits, work_root=work_root, **kwargs)


def _refused(image, work_root: Path, match: str, limits: ScanLimits = LIMITS) -> dict:
    """Catalogue `image`, expect the cap `match` names, and return the scan's resource usage."""
    with pytest.raises(ScanLimitExceeded, match=match) as exc:
        _catalogue(image, work_root, limits)
    assert os.listdir(work_root) == []  # the job's temp dir is gone
    usage = exc.value.usage
    assert usage["max_disk_bytes"] <= limits.disk_budget
    assert 0 < usage["max_rss_bytes"] < limits.max_memory_bytes
    return usage


def test_finding2_gzip_bomb_fails_before_syft_and_fills_no_disk(tmp_path):
    bomb = hostile_images.gzip_bomb(tmp_path / "bomb", 256 * MiB)
    layer = bomb.layers[0]
    assert bomb.blob_path(layer).stat().st_size < 256 * MiB / 200  # a 256 MiB file in ~1 MB
    usage = _refused(bomb, tmp_path / "scans", rf"layer {layer} unpacks to more than 16 MiB \(scan_max_unpacked_bytes")
    assert usage["max_disk_bytes"] == 0  # stopped while streaming: syft never ran, nothing was written
    assert usage["max_rss_bytes"] < 200 * MiB


def test_finding2_many_files_layer_fails_at_the_file_cap(tmp_path):
    image = hostile_images.many_files(tmp_path / "many", 20_000)
    usage = _refused(image, tmp_path / "scans", rf"layer {image.layers[0]} brings the image to more than 10000 files \(scan_max_files\)")
    assert usage["max_disk_bytes"] == 0


def test_finding2_huge_dpkg_status_fails_at_the_package_database_cap(tmp_path):
    image = hostile_images.huge_dpkg_status(tmp_path / "dpkg", 12 * MiB)
    assert image.blob_path(image.layers[0]).stat().st_size < 1 * MiB
    usage = _refused(
        image,
        tmp_path / "scans",
        rf"layer {image.layers[0]}: package database var/lib/dpkg/status is 12 MiB, more than 4 MiB \(scan_max_package_db_bytes\)",
    )
    assert usage["max_disk_bytes"] == 0


def test_finding2_syft_runs_under_the_memory_limit(tmp_path):
    # The package-database cap raised out of the way: RLIMIT_AS alone stops syft on a 160 MiB
    # dpkg status (syft reserves ~0.9 GiB of address space before it reads a byte).
    image = hostile_images.huge_dpkg_status(tmp_path / "dpkg", 160 * MiB)
    limits = ScanLimits(max_unpacked_bytes=1 * GiB, max_package_db_bytes=1 * GiB, max_memory_bytes=1 * GiB)
    with pytest.raises(ScanLimitExceeded, match=r"syft needed more than 1 GiB of memory .* \(scan_max_memory_bytes\)") as exc:
        _catalogue(image, tmp_path / "scans", limits)
    assert exc.value.usage["max_rss_bytes"] < limits.max_memory_bytes
    assert os.listdir(tmp_path / "scans") == []


def test_finding7_package_count_cap(tmp_path):
    image = hostile_images.many_packages(tmp_path / "pkgs", 3000)
    limits = ScanLimits(max_packages=1000, max_memory_bytes=2 * GiB)
    usage = _refused(image, tmp_path / "scans", r"syft found 300\d packages in sha256:\w+, more than 1000 \(scan_max_packages\)", limits)
    assert usage["max_disk_bytes"] > 0  # syft ran, in the job's temp dir


def test_finding7_sbom_size_cap(tmp_path):
    image = hostile_images.many_packages(tmp_path / "pkgs", 3000)
    limits = ScanLimits(max_sbom_bytes=1 * MiB, max_memory_bytes=2 * GiB)
    _refused(image, tmp_path / "scans", r"the (syft-json|SPDX) document syft wrote for sha256:\w+ is [\d.]+ MiB, more than 1 MiB \(scan_max_sbom_bytes\)", limits)


def test_finding7_syft_output_is_parsed_outside_this_process(tmp_path, monkeypatch):
    """A scan returns the compact package list; this process never loads syft-json."""
    image = hostile_images.many_packages(tmp_path / "pkgs", 3000)
    loaded: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda s, *a, **k: (loaded.append(len(s)), real_loads(s, *a, **k))[1])
    sbom = _catalogue(image, tmp_path / "scans", ScanLimits(max_memory_bytes=2 * GiB))
    assert len(sbom.packages) == 3000 and {p.ecosystem for p in sbom.packages} == {"Debian:12"}
    # Read here: the manifest and the compact result; never syft-json, which is larger than the
    # SPDX (kept as bytes, to attach as is). The child parsed it and is gone.
    assert sum(loaded) < len(sbom.spdx) / 2, (loaded, len(sbom.spdx))
    assert sbom.usage["max_disk_bytes"] > 0 and os.listdir(tmp_path / "scans") == []


def test_finding2_tar_entries_pointing_outside_read_and_write_nothing_on_the_host(tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "status").write_text(hostile_images.stanza("host-only"))
    image = hostile_images.escaping_entries(tmp_path / "escape", host)
    sbom = _catalogue(image, tmp_path / "scans")
    names = {p.name for p in sbom.packages}
    assert "in-image" in names and "host-only" not in names
    assert sorted(os.listdir(host)) == ["status"]  # no ../ or absolute entry was written here
    assert os.listdir(tmp_path / "scans") == []


def test_finding8_timeout_kills_syft_and_removes_the_temp_dir(tmp_path):
    image = hostile_images.many_packages(tmp_path / "pkgs", 10)
    with pytest.raises(SbomError, match=r"syft timed out after 0.5 s"):
        _catalogue(image, tmp_path / "scans", timeout=0.5)
    assert os.listdir(tmp_path / "scans") == []


def test_finding8_stop_request_kills_syft_and_removes_the_temp_dir(tmp_path):
    image = hostile_images.many_packages(tmp_path / "pkgs", 10)
    work_root = tmp_path / "scans"
    seen: list[int] = []

    def should_stop() -> bool:
        for started in work_root.glob(f"*/{SYFT_STARTED}"):
            seen.append(int(started.read_text()))
            return True
        return False

    with pytest.raises(ScanInterrupted):
        _catalogue(image, work_root, should_stop=should_stop)
    assert seen, "syft never started"
    assert os.listdir(work_root) == []
    stat = Path(f"/proc/{seen[0]}/stat")
    assert not stat.exists() or stat.read_text().split(") ")[1].startswith("Z")  # killed (at most unreaped)


# --- the streaming counter on its own ---------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress, lambda b: zstandard.ZstdCompressor().compress(b)], ids=["tar", "gzip", "zstd"])
def test_finding2_counter_reads_plain_gzip_and_zstd_layers(tmp_path, compress):
    raw = _tar({f"f{i}": b"x" * 1000 for i in range(5)})
    layer = tmp_path / "layer"
    layer.write_bytes(compress(raw))
    counter = LayerCounter(ScanLimits(max_unpacked_bytes=len(raw)))
    counter.count("sha256:l", layer)
    assert (counter.unpacked, counter.files) == (len(raw), 5)
    with pytest.raises(ScanLimitExceeded, match=r"layer sha256:l unpacks to more than"):
        LayerCounter(ScanLimits(max_unpacked_bytes=len(raw) - 1)).count("sha256:l", layer)
    with pytest.raises(ScanLimitExceeded, match=r"more than 4 files"):
        LayerCounter(ScanLimits(max_files=4)).count("sha256:l", layer)


def test_finding2_counter_counts_across_layers(tmp_path):
    layer = tmp_path / "layer"
    layer.write_bytes(gzip.compress(_tar({"a": b"1" * 4096})))
    counter = LayerCounter(ScanLimits(max_files=2))
    counter.count("sha256:one", layer)
    counter.count("sha256:two", layer)
    with pytest.raises(ScanLimitExceeded, match=r"layer sha256:three brings the image to more than 2 files"):
        counter.count("sha256:three", layer)


def test_package_database_paths():
    for path in ("var/lib/dpkg/status", "./var/lib/dpkg/status.d/foo", "/lib/apk/db/installed",
                 "usr/lib/python3/site-packages/x-1.dist-info/METADATA", "app/node_modules/a/package.json",
                 "var/lib/rpm/rpmdb.sqlite", "var/lib/dpkg/info/libc6:amd64.list"):  # fmt: skip
        assert is_package_db(path), path
    for path in ("usr/lib/libc.so.6", "var/tmp/zeros", "opt/model.bin"):
        assert not is_package_db(path), path



def test_finding8_syft_killed_from_outside_is_a_failed_scan_and_leaves_no_temp_dir(tmp_path):
    image = hostile_images.many_packages(tmp_path / "pkgs", 10)
    work_root = tmp_path / "scans"
    killed: list[int] = []

    def kill_syft_once_started() -> bool:  # as the kernel's OOM killer would
        for started in work_root.glob(f"*/{SYFT_STARTED}"):
            if not killed and (text := started.read_text()):
                killed.append(int(text))
                os.kill(killed[0], signal.SIGKILL)
        return False

    with pytest.raises(SbomError, match=r"syft failed \(exit -9\)"):
        _catalogue(image, work_root, should_stop=kill_syft_once_started)
    assert killed and os.listdir(work_root) == []


def test_finding8_stale_scan_dirs_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    for name in (f"dockyard-sbom-{dead.pid}-abc", f"dockyard-scan-{dead.pid}-def", f"dockyard-sbom-{os.getpid()}-mine",
                 f"dockyard-sbom-{os.getppid()}-alive", "unrelated"):  # fmt: skip
        (tmp_path / name / "tmp").mkdir(parents=True)
    assert remove_stale(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == sorted([f"dockyard-sbom-{os.getpid()}-mine", f"dockyard-sbom-{os.getppid()}-alive", "unrelated"])


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().split(") ")[1].startswith("Z")
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_finding8_a_killed_server_takes_its_scan_with_it(tmp_path):
    """SIGKILL of the scanning process kills the scan process and syft (PR_SET_PDEATHSIG); the
    next start removes the temp dir they left."""
    image = hostile_images.many_packages(tmp_path / "pkgs", 10)
    work_root = tmp_path / "scans"
    hanging = tmp_path / "hanging-syft"  # stands in for a syft stuck on a hostile layer
    hanging.write_text("#!/bin/sh\nexec sleep 120\n")
    hanging.chmod(0o755)
    script = (
        "import sys; from pathlib import Path; from dockyard.scanning.sbom import catalogue_image\n"
        f"root = Path({str(image.root)!r})\n"
        "blob = lambda d: root / 'blobs' / 'sha256' / d.split(':', 1)[1]\n"
        f"catalogue_image(blob({image.digest!r}).read_bytes(), blob, work_root=Path({str(work_root)!r}), syft={str(hanging)!r}, timeout=120)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (started := [p for p in work_root.glob(f"*/{SYFT_STARTED}") if p.read_text()]):
            assert time.monotonic() < deadline and server.poll() is None, "syft never started"
            time.sleep(0.01)
        syft_pid = int(started[0].read_text())
        server.kill()
        server.wait()
        deadline = time.monotonic() + 10
        while not _gone(syft_pid):
            assert time.monotonic() < deadline, "syft outlived the server"
            time.sleep(0.01)
    finally:
        server.kill()
        server.wait()
    assert len(os.listdir(work_root)) == 1
    assert remove_stale(work_root) == 1 and os.listdir(work_root) == []


def _sparse_tar(path: Path, real_size: int) -> Path:
    """A PAX (GNU sparse 1.0) tar of one file of `real_size` bytes that is all hole: ~10 KiB on disk."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("var/hole")
        info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "var/hole",
                            "GNU.sparse.realsize": str(real_size)}
        sparse_map = (b"1\n%d\n0\n" % real_size).ljust(512, b"\0")
        info.size = len(sparse_map)
        tar.addfile(info, io.BytesIO(sparse_map))
    return path


def test_attack_sparse_file_counts_its_real_size_against_the_unpacked_cap(tmp_path):
    """A sparse tar member declares a real size far above the bytes it stores; syft's extractor writes the
    holes out as zeros, so the counter must count the real size, not the streamed bytes."""
    layer = _sparse_tar(tmp_path / "sparse.tar", 1 * GiB)
    assert layer.stat().st_size < 64 * 1024
    with pytest.raises(ScanLimitExceeded, match=r"sparse file var/hole unpacks to .*scan_max_unpacked_bytes"):
        LayerCounter(LIMITS).count("sha256:" + "0" * 64, layer)
    small = _sparse_tar(tmp_path / "small.tar", 1 * MiB)  # under the cap: counted, and fine
    counter = LayerCounter(LIMITS)
    counter.count("sha256:" + "1" * 64, small)
    assert counter.unpacked >= 1 * MiB
