import hashlib
import os

from dockyard.domain.digests import ResumableSha256


def test_resumes_from_saved_state_at_every_cut():
    data = os.urandom(10_000) + b"tail"
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    for cut in (0, 1, 63, 64, 65, 4096, len(data)):
        first = ResumableSha256()
        first.update(data[:cut])
        resumed = ResumableSha256(first.state())
        resumed.update(data[cut:])
        assert resumed.digest() == expected


def test_digest_does_not_consume_state():
    h = ResumableSha256()
    h.update(b"ab")
    assert h.digest() == "sha256:" + hashlib.sha256(b"ab").hexdigest()
    h.update(b"c")
    assert h.digest() == "sha256:" + hashlib.sha256(b"abc").hexdigest()
