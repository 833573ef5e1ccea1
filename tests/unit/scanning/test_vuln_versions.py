"""Per-ecosystem version orderings (policies (f)); cases come from real package versions."""

import pytest

from dockyard.scanning.versions import (
    APK,
    DPKG,
    GO,
    MAVEN,
    PEP440,
    SEMVER,
    UnsupportedEcosystem,
    VersionError,
    ecosystem_base,
    ordering_for,
)


def ascending(ordering, versions):
    for lower, higher in zip(versions, versions[1:]):
        assert ordering.compare(lower, higher) == -1, f"{lower} < {higher}"
        assert ordering.compare(higher, lower) == 1, f"{higher} > {lower}"
        assert ordering.key(lower) < ordering.key(higher)


# --- dpkg ---


def test_dpkg_epoch_beats_upstream():
    # zlib's Debian version carries epoch 1; a bare 1.2.13 (epoch 0) is older.
    ascending(DPKG, ["1.2.13", "1:1.2.11.dfsg-2", "1:1.2.11.dfsg-2+deb11u1", "1:1.2.11.dfsg-2+deb11u2", "1:1.2.13.dfsg-1"])
    assert DPKG.compare("0:1.0", "1.0") == 0
    assert DPKG.compare("2.0", "1:0.1") == -1


def test_dpkg_tilde_sorts_before_everything_even_the_end():
    ascending(DPKG, ["1.0~~", "1.0~~a", "1.0~", "1.0~rc1", "1.0", "1.0a", "1.0+", "1.0.1"])
    # Debian stable security updates: 3.0.11-1~deb12u2 is older than sid's 3.0.11-1.
    ascending(DPKG, ["3.0.9-1", "3.0.11-1~deb12u1", "3.0.11-1~deb12u2", "3.0.11-1", "3.0.13-1~deb12u1"])
    ascending(DPKG, ["1.0-1~bpo11+1", "1.0-1", "1.0-1ubuntu1", "1.0-1+b1"])  # letters before "+"


def test_dpkg_letters_before_non_letters_and_numbers_numerically():
    ascending(DPKG, ["1.0-1", "1.0-A", "1.0-a"])  # end of string < letters, ASCII among letters
    ascending(DPKG, ["1.9", "1.10", "1.10a", "1.10+dfsg"])
    assert DPKG.compare("1.0", "1.0-0") == 0  # a missing revision is revision 0
    assert DPKG.compare("2.36-9+deb12u4+b1", "2.36-9+deb12u4") == 1  # binNMU


def test_dpkg_ubuntu_versions():
    ascending(DPKG, ["1:1.2.11.dfsg-2ubuntu9", "1:1.2.11.dfsg-2ubuntu9.1", "1:1.2.11.dfsg-2ubuntu9.2"])
    ascending(DPKG, ["2:8.2.3995-1ubuntu1", "2:8.2.3995-1ubuntu2"])


@pytest.mark.parametrize("bad", ["", "x:1.0", "1.0 beta", "1.0-"])
def test_dpkg_rejects_malformed(bad):
    with pytest.raises(VersionError):
        DPKG.key(bad)


# --- apk ---


def test_apk_suffix_order():
    ascending(
        APK,
        ["1.0_alpha1", "1.0_beta2", "1.0_pre1", "1.0_rc1", "1.0", "1.0_cvs1", "1.0_svn1", "1.0_git20230101", "1.0_hg1", "1.0_p1"],
    )
    ascending(APK, ["2.0_rc1", "2.0_rc2", "2.0"])


def test_apk_revision_and_patch_levels():
    # openssh on Alpine 3.18: 9.3_p1-r3 was replaced by 9.3_p2-r0 (CVE-2023-38408).
    ascending(APK, ["9.3_p1-r3", "9.3_p2-r0", "9.3_p2-r1", "9.4_p1-r0"])
    ascending(APK, ["1.1.1o-r0", "1.1.1q-r0", "1.1.1t-r0"])
    ascending(APK, ["1.2.11-r3", "1.2.11-r4", "1.2.12-r1", "1.2.12-r2"])
    ascending(APK, ["1.0", "1.0-r1", "1.0_p1"])


def test_apk_multi_letter_openssl_versions():
    # OpenSSL 0.9.8 ran out of letters and went on with two: 0.9.8y < 0.9.8z < 0.9.8za … 0.9.8zh.
    ascending(APK, ["0.9.8", "0.9.8a", "0.9.8y", "0.9.8z", "0.9.8za", "0.9.8zg", "0.9.8zh", "0.9.9", "1.0.0"])


def test_apk_numbers_and_leading_zeros():
    ascending(APK, ["1.9", "1.10", "1.10.1"])
    ascending(APK, ["1.01", "1.1"])
    assert APK.compare("1.0", "1.0") == 0
    assert APK.key("1.2.3-r0") == APK.key("1.2.3-r0")


@pytest.mark.parametrize("bad", ["", "abc", "1.0_foo1", "1.0-x1"])
def test_apk_rejects_malformed(bad):
    with pytest.raises(VersionError):
        APK.key(bad)


# --- PEP 440 ---


def test_pep440_dev_pre_final_post():
    ascending(PEP440, ["2.31.0.dev1", "2.31.0a1", "2.31.0b2", "2.31.0rc1", "2.31.0", "2.31.0.post1", "2.31.1"])
    ascending(PEP440, ["1.26.16", "1.26.17", "2.0.0a1", "2.0.0", "2.0.5", "2.0.6"])
    assert PEP440.compare("1!0.1", "2.0") == 1  # epoch
    assert PEP440.compare("0.8.0-alpha2", "0.8.0a2") == 0  # normalisation
    assert PEP440.compare("v2.31.0", "2.31.0") == 0


def test_pep440_rejects_malformed():
    with pytest.raises(VersionError):
        PEP440.key("not a version")


# --- SemVer / npm and Go ---


def test_semver_prereleases():
    ascending(
        SEMVER,
        ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0"],
    )
    ascending(SEMVER, ["4.17.20", "4.17.21-rc.1", "4.17.21"])
    assert SEMVER.compare("1.0.0+build.1", "1.0.0+build.2") == 0
    assert SEMVER.compare("v1.2.3", "1.2.3") == 0


def test_go_versions_are_semver_without_v():
    ascending(GO, ["0.0.0-20230101000000-abcdef123456", "0.16.0", "v0.17.0", "0.18.0"])
    # stdlib: OSV writes 1.21.0-0 as the lowest 1.21 version; the toolchain writes go1.21rc2.
    ascending(GO, ["1.20.10", "1.21.0-0", "go1.21rc2", "go1.21.0", "1.21.3"])
    assert GO.compare("go1.21", "1.21.0") == 0
    assert GO.compare("v2.0.0+incompatible", "2.0.0") == 0


def test_semver_rejects_malformed():
    with pytest.raises(VersionError):
        SEMVER.key("latest")


# --- Maven ---


def test_maven_qualifier_order():
    # Maven's own ComparableVersionTest sequences.
    ascending(
        MAVEN,
        "1-alpha2snapshot 1-alpha2 1-alpha-123 1-beta-2 1-beta123 1-m2 1-m11 1-rc 1-cr2 1-rc123 1-SNAPSHOT 1 "
        "1-sp 1-sp2 1-sp123 1-abc 1-def 1-pom-1 1-1-snapshot 1-1 1-2 1-123".split(),
    )
    ascending(
        MAVEN,
        "2.0 2-1 2.0.a 2.0.0.a 2.0.2 2.0.123 2.1.0 2.1-a 2.1b 2.1-c 2.1-1 2.1.0.1 2.2 2.123 "
        "11.a2 11.a11 11.b2 11.b11 11.m2 11.m11 11 11.a 11b 11c 11m".split(),
    )


def test_maven_equivalences():
    for a, b in [("1", "1.0"), ("1", "1.0.0"), ("1-ga", "1"), ("1-final", "1"), ("1.0.RELEASE", "1"),
                 ("1-cr1", "1-rc1"), ("1a1", "1-alpha-1"), ("1b2", "1-beta-2"), ("1m3", "1-milestone-3"), ("1X", "1x")]:
        assert MAVEN.compare(a, b) == 0, (a, b)
        assert hash(MAVEN.key(a)) == hash(MAVEN.key(b))


def test_maven_log4j_versions():
    ascending(MAVEN, ["2.0-beta9", "2.0-rc1", "2.0", "2.3", "2.3.1", "2.4", "2.12.1", "2.12.2", "2.13.0", "2.14.1", "2.15.0"])


# --- ecosystems ---


@pytest.mark.parametrize(
    "ecosystem,ordering",
    [
        ("Debian:12", DPKG),
        ("Debian", DPKG),
        ("Ubuntu:22.04:LTS", DPKG),
        ("Ubuntu:Pro:18.04:LTS", DPKG),
        ("Alpine:v3.20", APK),
        ("PyPI", PEP440),
        ("npm", SEMVER),
        ("Go", GO),
        ("Maven", MAVEN),
        ("Maven:https://repo.maven.apache.org/maven2/", MAVEN),
    ],
)
def test_ecosystem_mapping(ecosystem, ordering):
    assert ordering_for(ecosystem) is ordering


def test_semver_ranges_use_semver_except_go():
    assert ordering_for("PyPI", "SEMVER") is SEMVER
    assert ordering_for("Go", "SEMVER") is GO


def test_unknown_ecosystem_is_an_error_not_a_guess():
    with pytest.raises(UnsupportedEcosystem):
        ordering_for("RubyGems")
    assert ecosystem_base("Ubuntu:Pro:18.04:LTS") == "Ubuntu"


def test_parsed_versions_are_cached():
    assert DPKG.key("1:2.3-4") is DPKG.key("1:2.3-4")
    assert PEP440.key("1.2.3") is PEP440.key("1.2.3")
