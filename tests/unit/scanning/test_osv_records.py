"""OSV parsing, the affected-check algorithm and severity, on real advisories."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dockyard.scanning.osv import (
    Affected,
    Event,
    OSVError,
    Range,
    affected_by,
    cvss3_base_score,
    load_advisory,
    parse_advisory,
    severity_of,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "osv"


def advisory(name):
    return load_advisory((FIXTURES / f"{name}.json").read_bytes())


def package(adv, name, index=0):
    return [a for a in adv.affected if a.name == name][index]


def fixed_of(affected, version):
    hit = affected_by(affected, version)
    return "not affected" if hit is None else hit.fixed


def test_every_fixture_parses():
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 10
    for file in files:
        adv = load_advisory(file.read_bytes())
        assert adv.id == file.stem
        assert adv.affected


def test_parse_fields_and_tolerate_unknown_ones():
    log4j = advisory("GHSA-jfh8-c2jp-5v3q")
    assert log4j.aliases == ("CVE-2021-44228",)
    assert log4j.modified == datetime(2022, 3, 25, 20, 56, 18, tzinfo=UTC)
    assert len(log4j.affected) == 3 and log4j.affected[0].ecosystem == "Maven"
    assert log4j.affected[0].ranges[0].events == (Event("introduced", "2.13.0"), Event("fixed", "2.15.0"))
    data = json.loads((FIXTURES / "GHSA-jfh8-c2jp-5v3q.json").read_text())
    data["x_future_field"] = {"anything": [1, 2]}
    data["affected"][0]["x_more"] = True
    assert parse_advisory(data).id == "GHSA-jfh8-c2jp-5v3q"


def test_timestamps_with_nanoseconds_and_offsets():
    base = {"id": "X-1", "affected": []}
    assert parse_advisory({**base, "modified": "2025-11-19T05:57:42.162407123Z"}).modified.microsecond == 162407
    assert parse_advisory({**base, "modified": "2024-01-01T02:00:00+02:00"}).modified == datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda d: d.pop("id"), "id is required"),
        (lambda d: d.pop("modified"), "modified"),
        (lambda d: d.update(modified="yesterday"), "timestamp"),
        (lambda d: d["affected"][0].pop("package"), "package"),
        (lambda d: d["affected"][0]["package"].pop("ecosystem"), "ecosystem and name"),
        (lambda d: d["affected"][0]["ranges"][0].update(events=[{"fixed": "2.15.0"}]), "introduced"),
        (lambda d: d["affected"][0]["ranges"][0]["events"].append({"last_affected": "2.14.1"}), "fixed and last_affected"),
        (lambda d: d["affected"][0]["ranges"][0]["events"].append({"fixed": "1", "introduced": "2"}), "exactly one"),
        (lambda d: d.update(aliases="CVE-2021-44228"), "list of strings"),
    ],
)
def test_invalid_records_say_why(mutate, message):
    data = json.loads((FIXTURES / "GHSA-jfh8-c2jp-5v3q.json").read_text())
    mutate(data)
    with pytest.raises(OSVError, match=message):
        parse_advisory(data)


def test_not_json():
    with pytest.raises(OSVError):
        load_advisory(b"{nope")


# --- the affected check ---


def test_log4j_multiple_ranges_match_exactly_the_vulnerable_versions():
    log4j = advisory("GHSA-jfh8-c2jp-5v3q")

    def check(version):
        hits = [affected_by(a, version) for a in log4j.affected]
        hits = [h for h in hits if h is not None]
        return hits[0].fixed if hits else "not affected"

    assert check("2.0-beta9") == "2.3.1"
    assert check("2.3") == "2.3.1"
    assert check("2.3.1") == "not affected"  # fixed exactly in the installed version
    assert check("2.3.2") == "not affected"  # between ranges
    assert check("2.4") == "2.12.2"
    assert check("2.12.1") == "2.12.2"
    assert check("2.12.2") == "not affected"
    assert check("2.12.4") == "not affected"
    assert check("2.13.0") == "2.15.0"
    assert check("2.14.1") == "2.15.0"
    assert check("2.15.0-rc1") == "2.15.0"  # Maven qualifier: rc sorts before the release
    assert check("2.15.0") == "not affected"
    assert check("2.17.1") == "not affected"


def test_requests_pep440_pre_and_post_releases():
    requests = package(advisory("GHSA-j8r2-6x86-q33q"), "requests")
    assert fixed_of(requests, "2.2.1") == "not affected"  # before introduced
    assert fixed_of(requests, "2.3.0.dev0") == "not affected"  # dev precedes 2.3.0
    assert fixed_of(requests, "2.3.0") == "2.31.0"
    assert fixed_of(requests, "2.30.0") == "2.31.0"
    assert fixed_of(requests, "2.31.0.dev1") == "2.31.0"
    assert fixed_of(requests, "2.31.0rc1") == "2.31.0"
    assert fixed_of(requests, "2.31.0") == "not affected"
    assert fixed_of(requests, "2.31.0.post1") == "not affected"


def test_urllib3_two_affected_entries():
    urllib3 = advisory("GHSA-v845-jxx5-vc9f")
    branch2, branch1 = urllib3.affected
    assert fixed_of(branch1, "1.26.16") == "1.26.17"
    assert fixed_of(branch1, "1.26.17") == "not affected"
    assert fixed_of(branch2, "2.0.5") == "2.0.6"
    assert fixed_of(branch2, "2.0.6") == "not affected"
    assert fixed_of(branch1, "2.0.5") == "not affected"  # the 1.x range ends at 1.26.17


def test_lodash_semver_prerelease():
    lodash = package(advisory("GHSA-35jh-r3h4-6jhm"), "lodash")
    assert fixed_of(lodash, "4.17.20") == "4.17.21"
    assert fixed_of(lodash, "4.17.21-rc.1") == "4.17.21"
    assert fixed_of(lodash, "4.17.21") == "not affected"
    assert fixed_of(lodash, "5.0.0-alpha.1") == "not affected"


def test_go_semver_ranges_without_v_and_first_fix_above():
    go = advisory("GO-2023-2102")
    stdlib, xnet = package(go, "stdlib"), package(go, "golang.org/x/net")
    assert fixed_of(xnet, "v0.16.0") == "0.17.0"
    assert fixed_of(xnet, "0.0.0-20230905200255-921286631fa9") == "0.17.0"  # pseudo-version
    assert fixed_of(xnet, "v0.17.0") == "not affected"
    assert fixed_of(stdlib, "1.20.9") == "1.20.10"
    assert fixed_of(stdlib, "1.20.10") == "not affected"
    assert fixed_of(stdlib, "go1.21rc2") == "1.21.3"  # introduced 1.21.0-0 covers the RCs
    assert fixed_of(stdlib, "1.21.2") == "1.21.3"
    assert fixed_of(stdlib, "1.21.3") == "not affected"


def test_last_affected_and_explicit_versions():
    py = package(advisory("PYSEC-2022-42969"), "py")
    assert fixed_of(py, "1.11.0") is None  # affected, and nothing fixes it
    assert fixed_of(py, "1.4.32.dev1") is None
    assert fixed_of(py, "1.11.1") == "not affected"
    assert fixed_of(py, "1.11.0.post1") == "not affected"


def test_dpkg_epoch_and_tilde_fixtures():
    zlib = package(advisory("DSA-5218-1"), "zlib")
    assert fixed_of(zlib, "1:1.2.11.dfsg-2") == "1:1.2.11.dfsg-2+deb11u2"
    assert fixed_of(zlib, "1:1.2.11.dfsg-2+deb11u1") == "1:1.2.11.dfsg-2+deb11u2"
    assert fixed_of(zlib, "1:1.2.11.dfsg-2+deb11u2") == "not affected"
    assert fixed_of(zlib, "1.2.13.dfsg-1") == "1:1.2.11.dfsg-2+deb11u2"  # no epoch: older than any 1:
    openssl = package(advisory("DSA-5532-1"), "openssl")
    assert fixed_of(openssl, "3.0.9-1") == "3.0.11-1~deb12u2"
    assert fixed_of(openssl, "3.0.11-1~deb12u1") == "3.0.11-1~deb12u2"
    assert fixed_of(openssl, "3.0.11-1~deb12u2") == "not affected"
    assert fixed_of(openssl, "3.0.11-1") == "not affected"  # sid's build is newer than ~deb12u2


def test_apk_fixture():
    openssl = package(advisory("ALPINE-CVE-2022-2097"), "openssl")
    assert fixed_of(openssl, "1.1.1o-r0") == "1.1.1q-r0"
    assert fixed_of(openssl, "1.1.1q-r0") == "not affected"
    assert fixed_of(openssl, "1.1.1t-r0") == "not affected"


def synthetic(events, versions=(), kind="ECOSYSTEM", ecosystem="PyPI"):
    return Affected(ecosystem, "demo", ranges=(Range(kind, tuple(Event(k, v) for k, v in events)),), versions=versions)


def test_limit_and_git_ranges():
    limited = synthetic([("introduced", "0"), ("limit", "2.0")])
    assert affected_by(limited, "1.5") is not None
    assert affected_by(limited, "2.0") is None
    unlimited = synthetic([("introduced", "1.0"), ("limit", "*")])
    assert affected_by(unlimited, "9.0") is not None
    git = synthetic([("introduced", "0"), ("fixed", "74ea7cf7a6a27a4eeb2ae24e162bcc942a6706d5")], kind="GIT")
    assert affected_by(git, "2.30.0") is None  # commits cannot be placed among versions


def test_introduced_equal_to_fixed_is_an_empty_range():
    assert affected_by(synthetic([("introduced", "1.0"), ("fixed", "1.0")]), "1.0") is None


def test_unsorted_events_are_sorted_before_walking():
    events = [("fixed", "2.0"), ("introduced", "1.5"), ("fixed", "1.2"), ("introduced", "0")]
    demo = synthetic(events)
    assert affected_by(demo, "1.1").fixed == "1.2"
    assert affected_by(demo, "1.3") is None
    assert affected_by(demo, "1.9").fixed == "2.0"


# --- severity ---


@pytest.mark.parametrize(
    "vector,score",
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),  # log4shell
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),  # lodash template
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:C/C:H/I:N/A:N", 6.1),  # requests proxy auth
        ("CVSS:3.1/AV:N/AC:H/PR:H/UI:N/S:U/C:H/I:H/A:N", 5.9),  # urllib3 cookie
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L", 5.3),
        ("CVSS:3.0/AV:L/AC:H/PR:L/UI:R/S:C/C:L/I:L/A:N", 3.9),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:A/AC:L/PR:L/UI:N/S:C/C:L/I:H/A:L", 8.2),
    ],
)
def test_cvss3_base_scores(vector, score):
    assert cvss3_base_score(vector) == score


def test_cvss3_rejects_other_vectors():
    with pytest.raises(ValueError):
        cvss3_base_score("AV:N/AC:L/Au:N/C:C/I:C/A:C")
    with pytest.raises(ValueError):
        cvss3_base_score("CVSS:3.1/AV:N/AC:L")


def test_severity_sources():
    log4j = advisory("GHSA-jfh8-c2jp-5v3q")
    s = severity_of(log4j, log4j.affected[0])
    assert (s.level, s.score, s.source) == ("Critical", 10.0, "CVSS_V3")
    assert severity_of(advisory("GHSA-v845-jxx5-vc9f")).level == "Medium"
    dsa = advisory("DSA-5218-1")
    assert severity_of(dsa).level == "Unknown"  # Debian advisories carry no severity
    text_only = parse_advisory({"id": "X", "modified": "2024-01-01T00:00:00Z", "database_specific": {"severity": "MODERATE"}})
    assert severity_of(text_only).level == "Medium"
    v4 = parse_advisory({"id": "Y", "modified": "2024-01-01T00:00:00Z", "severity": [
        {"type": "CVSS_V4", "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"}]})
    s4 = severity_of(v4)
    assert (s4.level, s4.score, s4.source) == ("Unknown", None, "CVSS_V4") and s4.vector.startswith("CVSS:4.0")
    ubuntu = parse_advisory({"id": "Z", "modified": "2024-01-01T00:00:00Z", "severity": [{"type": "Ubuntu", "score": "medium"}]})
    assert severity_of(ubuntu).level == "Medium"


def test_a_range_event_version_longer_than_any_real_one_makes_the_record_invalid():
    """The matcher quotes an unparseable event version in every scan report of an image with that
    package: a poisoned record must not put megabytes into each report (and each log line)."""
    from dockyard.scanning.osv import MAX_VERSION_CHARS

    def record(version):
        return {"id": "X-1", "modified": "2024-01-01T00:00:00Z",
                "affected": [{"package": {"ecosystem": "Debian:12", "name": "openssl"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": version}]}]}]}

    assert parse_advisory(record("1:" + "9" * (MAX_VERSION_CHARS - 2))).affected[0].ranges[0].events[1].kind == "fixed"
    with pytest.raises(OSVError, match=f"longer than {MAX_VERSION_CHARS}") as raised:
        parse_advisory(record("\x1b" * 5_000_000))
    assert len(str(raised.value)) < 300
