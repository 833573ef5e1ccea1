"""Matching installed packages against the fixture advisories (the issue's acceptance cases)."""

from pathlib import Path

import pytest

from dockyard.metadata.db import Database
from dockyard.scanning.matcher import Matcher, Package, dpkg_package, parse_dpkg_source, release_of
from dockyard.scanning.osv import load_advisory
from dockyard.scanning.vulndb import VulnDB

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osv"
LAYER = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def matcher():
    return Matcher(load_advisory(f.read_bytes()) for f in sorted(FIXTURES.glob("*.json")))


def ids(result, package=None):
    return sorted(f.id for f in result.findings if package is None or f.package == package)


def one(result, advisory_id):
    [finding] = [f for f in result.findings if f.id == advisory_id]
    return finding


def test_epoch_debian_zlib(matcher):
    result = matcher.match([dpkg_package("Debian:11", "zlib1g", "1:1.2.11.dfsg-2+deb11u1", "zlib", LAYER)])
    f = one(result, "DSA-5218-1")
    assert (f.package, f.source_package, f.installed_version) == ("zlib1g", "zlib", "1:1.2.11.dfsg-2+deb11u1")
    assert f.fixed_version == "1:1.2.11.dfsg-2+deb11u2"
    assert f.related == ("CVE-2022-37434",)
    assert f.layer == LAYER and f.severity == "Unknown"


def test_fixed_in_installed_version_is_not_vulnerable(matcher):
    packages = [
        dpkg_package("Debian:11", "zlib1g", "1:1.2.11.dfsg-2+deb11u2", "zlib"),
        dpkg_package("Debian:12", "libssl3", "3.0.11-1~deb12u2", "openssl"),
        Package("PyPI", "requests", "2.31.0"),
        Package("npm", "lodash", "4.17.21"),
        Package("Maven", "org.apache.logging.log4j:log4j-core", "2.15.0"),
        Package("Go", "golang.org/x/net", "v0.17.0"),
        Package("Alpine:v3.16", "libcrypto1.1", "1.1.1q-r0", source_name="openssl"),
    ]
    result = matcher.match(packages)
    assert result.findings == [] and result.errors == []


def test_tilde_debian_openssl(matcher):
    result = matcher.match(
        [
            dpkg_package("Debian:12", "libssl3", "3.0.11-1~deb12u1", "openssl"),
            dpkg_package("Debian:12", "openssl", "3.0.9-1"),  # binary == source: no Source field
        ]
    )
    assert [(f.package, f.fixed_version) for f in result.findings] == [
        ("libssl3", "3.0.11-1~deb12u2"),
        ("openssl", "3.0.11-1~deb12u2"),
    ]


def test_source_field_with_version_is_used_for_matching(matcher):
    # A binNMU-style binary version; the advisory is about the source version in Source:.
    pkg = dpkg_package("Debian:12", "libssl3", "3.0.11-1~deb12u2+b1", "openssl (3.0.11-1~deb12u1)")
    f = one(matcher.match([pkg]), "DSA-5532-1")
    assert f.installed_version == "3.0.11-1~deb12u2+b1"
    assert parse_dpkg_source("glibc (2.36-9+deb12u4)") == ("glibc", "2.36-9+deb12u4")
    assert parse_dpkg_source("openssl") == ("openssl", None)
    with pytest.raises(ValueError):
        parse_dpkg_source("")


def test_release_scoping(matcher):
    # DSA-5218-1 is about bullseye; the same zlib version on bookworm or an unknown release is not matched.
    for eco in ("Debian:12", "Debian"):
        assert ids(matcher.match([dpkg_package(eco, "zlib1g", "1:1.2.11.dfsg-2", "zlib")])) == []
    assert ids(matcher.match([dpkg_package("Debian:bullseye", "zlib1g", "1:1.2.11.dfsg-2", "zlib")])) == ["DSA-5218-1"]
    # Alpine: ALPINE-CVE-2022-37434's entry is for v3.11 only.
    apk = [Package("Alpine:v3.11", "zlib", "1.2.11-r3"), Package("Alpine:v3.16", "zlib", "1.2.11-r3")]
    result = matcher.match(apk)
    assert [(f.ecosystem, f.id, f.fixed_version) for f in result.findings] == [("Alpine:v3.11", "ALPINE-CVE-2022-37434", "1.2.11-r4")]
    assert release_of("Alpine:3.16.2") == release_of("Alpine:v3.16") == "v3.16"
    assert release_of("Ubuntu:22.04") == release_of("Ubuntu:22.04:LTS") == "22.04"
    assert release_of("Ubuntu:Pro:18.04:LTS") == "Pro:18.04"
    assert release_of("Debian:12.5") == release_of("Debian:bookworm") == "12"
    assert release_of("PyPI") is None


def test_alpine_origin_package(matcher):
    result = matcher.match([Package("Alpine:v3.16", "libssl1.1", "1.1.1o-r0", LAYER, source_name="openssl")])
    f = one(result, "ALPINE-CVE-2022-2097")
    assert (f.package, f.source_package, f.fixed_version) == ("libssl1.1", "openssl", "1.1.1q-r0")


def test_unfixed_advisory_has_no_fixed_version(matcher):
    result = matcher.match([Package("PyPI", "py", "1.11.0")])
    f = one(result, "PYSEC-2022-42969")
    assert f.fixed_version is None
    assert f.aliases == ("CVE-2022-42969", "GHSA-w596-4wvx-j9j6")


def test_withdrawn_advisory_never_matches(matcher):
    result = matcher.match([Package("Go", "k8s.io/kubernetes", "v1.28.0")])
    assert result.findings == []


def test_language_ecosystems_with_severity(matcher):
    result = matcher.match(
        [
            Package("PyPI", "Requests", "2.28.1", LAYER),  # PEP 503 name normalisation
            Package("PyPI", "urllib3", "1.26.16"),
            Package("npm", "lodash", "4.17.20"),
            Package("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"),
            Package("Maven", "org.apache.logging.log4j:log4j-core", "2.12.1"),
            Package("Go", "golang.org/x/net", "v0.16.0"),
            Package("Go", "stdlib", "go1.21.1"),
        ]
    )
    got = [(f.package, f.installed_version, f.id, f.fixed_version, f.severity, f.cvss_score) for f in result.findings]
    assert got == [
        ("Requests", "2.28.1", "GHSA-j8r2-6x86-q33q", "2.31.0", "Medium", 6.1),
        ("golang.org/x/net", "v0.16.0", "GO-2023-2102", "0.17.0", "Unknown", None),
        ("lodash", "4.17.20", "GHSA-35jh-r3h4-6jhm", "4.17.21", "High", 7.2),
        ("org.apache.logging.log4j:log4j-core", "2.14.1", "GHSA-jfh8-c2jp-5v3q", "2.15.0", "Critical", 10.0),
        ("org.apache.logging.log4j:log4j-core", "2.12.1", "GHSA-jfh8-c2jp-5v3q", "2.12.2", "Critical", 10.0),
        ("stdlib", "go1.21.1", "GO-2023-2102", "1.21.3", "Unknown", None),
        ("urllib3", "1.26.16", "GHSA-v845-jxx5-vc9f", "1.26.17", "Medium", 5.9),
    ]
    assert one(matcher.match([Package("npm", "lodash", "4.17.20")]), "GHSA-35jh-r3h4-6jhm").as_dict()["aliases"] == ["CVE-2021-23337"]


def test_bad_versions_and_unknown_ecosystems_are_reported(matcher):
    result = matcher.match([Package("PyPI", "requests", "not-a-version"), Package("RubyGems", "rails", "7.0.0")])
    assert result.findings == []
    assert len(result.errors) == 1 and "requests" in result.errors[0]
    assert result.unsupported == {"RubyGems"}


def test_matcher_from_database(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    database.migrate()
    try:
        vulndb = VulnDB(database)
        vulndb.import_path(FIXTURES)
        packages = [Package("Maven", "org.apache.logging.log4j:log4j-core", "2.0-beta9"), Package("Go", "k8s.io/kubernetes", "1.28.0")]
        result = Matcher.from_vulndb(vulndb, packages).match(packages)
        assert [(f.id, f.fixed_version) for f in result.findings] == [("GHSA-jfh8-c2jp-5v3q", "2.3.1")]
    finally:
        database.dispose()


def test_distro_findings_borrow_the_cvss_of_another_record_for_the_same_cve(tmp_path):
    """DSA-5218-1 (zlib, CVE-2022-37434) has no severity; Ubuntu's record for the CVE scores it 9.8."""
    from dockyard.scanning.matcher import enrich_severity, dpkg_package

    database = Database(f"sqlite:///{tmp_path / 'meta.db'}")
    database.migrate()
    try:
        vulndb = VulnDB(database)
        vulndb.import_path(FIXTURES)
        zlib = dpkg_package("Debian:11", "zlib1g", "1:1.2.11.dfsg-2+deb11u1", source="zlib")
        log4j = Package("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1")
        result = Matcher.from_vulndb(vulndb, [zlib, log4j]).match([zlib, log4j])
        before = {f.id: f for f in result.findings}
        assert before["DSA-5218-1"].severity == "Unknown"
        assert enrich_severity(result.findings, vulndb) == result.findings  # nothing to borrow yet

        vulndb.import_path(FIXTURES.parent / "osv-enrichment")
        after = {f.id: f for f in enrich_severity(result.findings, vulndb)}
        dsa = after["DSA-5218-1"]
        assert (dsa.severity, dsa.cvss_score, dsa.severity_source) == ("Critical", 9.8, "UBUNTU-CVE-2022-37434")
        assert dsa.cvss_vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
        assert after["GHSA-jfh8-c2jp-5v3q"] == before["GHSA-jfh8-c2jp-5v3q"]  # its own CVSS stands
        assert after["GHSA-jfh8-c2jp-5v3q"].severity_source is None
    finally:
        database.dispose()
