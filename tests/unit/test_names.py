import pytest

from dockyard.domain.names import validate_digest, validate_name, validate_reference, validate_tag
from dockyard.errors import DigestInvalid, NameInvalid, TagInvalid

GOOD_SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize("name", ["a", "library/ubuntu", "a.b_c__d--e/f-g", "x" * 255, "a0/b1/c2/d3"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["A", "a//b", "a/../b", "..", "-a", "a-", "a_", "a/", "/a", "a b", "x" * 256, ""])
def test_invalid_names(name):
    with pytest.raises(NameInvalid):
        validate_name(name)


@pytest.mark.parametrize("tag", ["latest", "v1.0.0", "_x", "A" * 128, "git-a1b2c3d"])
def test_valid_tags(tag):
    assert validate_tag(tag) == tag


@pytest.mark.parametrize("tag", ["-x", ".x", "a" * 129, "a/b", "a:b", ""])
def test_invalid_tags(tag):
    with pytest.raises(TagInvalid):
        validate_tag(tag)


@pytest.mark.parametrize("digest", [GOOD_SHA, "sha512:" + "0" * 128])
def test_valid_digests(digest):
    assert validate_digest(digest) == digest


@pytest.mark.parametrize(
    "digest",
    ["sha256:" + "a" * 63, "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256", "sha256:", ":abc", "totallywrong", "sha512:" + "0" * 64],
)
def test_invalid_digests(digest):
    with pytest.raises(DigestInvalid):
        validate_digest(digest)


def test_reference_split():
    assert validate_reference("v1") == ("v1", None)
    assert validate_reference(GOOD_SHA) == (None, GOOD_SHA)
    with pytest.raises(DigestInvalid):
        validate_reference("sha256:totallywrong")
