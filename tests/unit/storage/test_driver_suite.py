"""One conformance suite, run over every storage driver."""

from __future__ import annotations

import pytest

from dockyard.settings import Settings
from dockyard.storage import StorageBusy, StorageError, open_driver


@pytest.fixture(params=["filesystem", "memory"])
def driver(request, tmp_path):
    return open_driver(Settings(data_dir=tmp_path, storage_driver=request.param))


def test_put_get_stat(driver):
    assert driver.stat("a/b") is None
    driver.put("a/b", b"hello")
    assert driver.get("a/b") == b"hello"
    assert driver.stat("a/b") == 5
    driver.put("a/b", b"replaced")
    assert driver.get("a/b") == b"replaced"


def test_get_missing_raises(driver):
    with pytest.raises(StorageError):
        driver.get("missing")
    with pytest.raises(StorageError):
        list(driver.open_read("missing"))


def test_open_read_ranges(driver):
    data = bytes(range(256)) * 10_000
    driver.put("k", data)
    assert b"".join(driver.open_read("k")) == data
    assert b"".join(driver.open_read("k", 100)) == data[100:]
    assert b"".join(driver.open_read("k", 100, 50)) == data[100:150]
    assert b"".join(driver.open_read("k", len(data) - 3, 100)) == data[-3:]


def test_writer_appends_across_sessions(driver):
    w = driver.open_write("up/1")
    w.write(b"abc")
    w.commit()
    w = driver.open_write("up/1", 3)
    w.write(b"def")
    assert w.size == 6
    w.commit()
    assert driver.get("up/1") == b"abcdef"


def test_writer_resume_drops_uncommitted_tail(driver):
    driver.put("up/2", b"committed-garbage")
    w = driver.open_write("up/2", 9)
    w.write(b"!")
    w.commit()
    assert driver.get("up/2") == b"committed!"


def test_writer_cannot_resume_past_end(driver):
    driver.put("up/3", b"abc")
    with pytest.raises(StorageError):
        driver.open_write("up/3", 10)


def test_move_publishes_atomically(driver):
    driver.put("uploads/x", b"payload")
    driver.move("uploads/x", "blobs/sha256/ab/abc/g1")
    assert driver.stat("uploads/x") is None
    assert driver.get("blobs/sha256/ab/abc/g1") == b"payload"
    with pytest.raises(StorageError):
        driver.move("uploads/x", "blobs/other")


def test_delete_is_idempotent(driver):
    driver.put("d", b"1")
    driver.delete("d")
    driver.delete("d")
    assert driver.stat("d") is None


def test_list_prefix(driver):
    for key in ("blobs/a/1", "blobs/b/2", "uploads/u"):
        driver.put(key, b"x")
    assert sorted(driver.list("blobs/")) == ["blobs/a/1", "blobs/b/2"]
    assert list(driver.list("nothing/")) == []


def test_local_path_matches_content(driver):
    driver.put("p", b"bytes")
    path = driver.local_path("p")
    if driver.name == "filesystem":
        with open(path, "rb") as fh:
            assert fh.read() == b"bytes"
    else:
        assert path is None


def test_filesystem_rejects_escaping_keys(tmp_path):
    driver = open_driver(Settings(data_dir=tmp_path))
    for key in ("../etc/passwd", "/abs", "a/../../b", ""):
        with pytest.raises(StorageError):
            driver.put(key, b"x")


def test_unknown_driver_is_a_startup_error(tmp_path):
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, storage_driver="s3-fake")


def test_writer_is_exclusive_until_released(driver):
    first = driver.open_write("up/x")
    with pytest.raises(StorageBusy):
        driver.open_write("up/x")
    first.write(b"abc")
    first.flush()
    assert driver.get("up/x") == b"abc"
    with pytest.raises(StorageBusy):
        driver.open_write("up/x", 3)  # flush keeps the claim
    first.commit()
    second = driver.open_write("up/x", 3)
    second.abort()
    driver.open_write("up/x", 3).commit()
    assert driver.get("up/x") == b"abc"


def test_writer_changes_nothing_before_first_write(driver):
    driver.put("up/y", b"abcdef")
    w = driver.open_write("up/y", 2)  # would truncate to 2 on first write
    w.abort()
    assert driver.get("up/y") == b"abcdef"


def test_filesystem_delete_prunes_empty_directories(tmp_path):
    driver = open_driver(Settings(data_dir=tmp_path))
    driver.put("blobs/sha256/ab/abc/g1", b"x")
    driver.put("blobs/sha256/ab/abd/g1", b"y")
    driver.delete("blobs/sha256/ab/abc/g1")
    root = driver.root
    assert not (root / "blobs/sha256/ab/abc").exists()
    assert (root / "blobs/sha256/ab/abd/g1").exists()
    driver.delete("blobs/sha256/ab/abd/g1")
    assert not (root / "blobs/sha256/ab/abd").exists() and (root / "blobs/sha256/ab").is_dir()
    driver.put("uploads/u1", b"z")
    driver.delete("uploads/u1")
    assert (root / "uploads").is_dir()  # shared directories are never pruned
