"""`dockyard check-config`: names wrong keys with their expected type and source, suggests typo fixes,
exits 0 with one line when the file and the environment are valid and 2 otherwise."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from dockyard.cli import app
from dockyard.cli.check_config import check, expected_type
from dockyard.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("DOCKYARD_"):
            monkeypatch.delenv(name)


def _run(*args: str):
    result = CliRunner().invoke(app, ["check-config", *args])
    return result.exit_code, " ".join(result.output.split())


def test_expected_type_words_include_bounds_choices_and_optional():
    fields = Settings.model_fields
    assert expected_type(fields["port"]) == "an integer >= 1 and <= 65535"
    assert expected_type(fields["storage_driver"]) == "one of 'filesystem', 'memory'"
    assert expected_type(fields["delete_enabled"]) == "a boolean (true/false)"
    assert expected_type(fields["storage_root"]) == "a path (or unset)"
    assert expected_type(fields["shutdown_timeout_seconds"]) == "an integer >= 1 and <= 3600"


def test_unknown_file_key_and_env_variable_get_did_you_mean():
    settings, problems = check({"prot": 5001}, {"DOCKYARD_LOG_LEVLE": "debug", "DOCKYARD_URL": "x"}, "d.toml")
    assert settings is None
    assert problems == [
        "d.toml: unknown key 'prot' (did you mean 'port'?)",
        "environment: unknown variable DOCKYARD_LOG_LEVLE (did you mean DOCKYARD_LOG_LEVEL?)",
    ]


def test_wrong_values_are_named_in_file_order_with_source_and_type():
    settings, problems = check({"workers": 0, "port": "abc"}, {"DOCKYARD_DELETE_ENABLED": "maybe"}, "d.toml")
    assert settings is None
    assert [p.split(": expected")[0] for p in problems] == [
        "d.toml: workers = 0",
        "d.toml: port = 'abc'",
        "environment DOCKYARD_DELETE_ENABLED: delete_enabled = 'maybe'",
    ]
    assert "expected an integer >= 1 and <= 65535" in problems[1]


def test_secrets_are_not_echoed():
    _, problems = check({"database_url": "mysql://u:hunter2@h/db", "metrics_token": 5}, {}, "d.toml")
    assert problems and not any("hunter2" in p for p in problems)
    assert problems[0] == "d.toml: database_url must start with sqlite:// or postgresql://"


def test_env_overrides_the_file_as_serve_does():
    settings, problems = check({"port": 6000}, {"DOCKYARD_PORT": "7000"}, "d.toml")
    assert problems == [] and settings is not None and settings.port == 7000


def test_cli_valid_file_prints_one_line_and_exits_0(tmp_path, monkeypatch):
    path = tmp_path / "dockyard.toml"
    path.write_text('port = 6001\nstorage_driver = "memory"\n')
    monkeypatch.setenv("DOCKYARD_WORKERS", "2")
    code, text = _run(str(path))
    assert code == 0, text
    assert text.startswith(f"{path}: valid (2 key(s) in the file, 1 from DOCKYARD_* variables")
    assert "127.0.0.1:6001" in text and "storage: memory" in text
    assert not (tmp_path / "dockyard-data").exists()  # checking never creates a data directory


def test_cli_invalid_file_exits_2_naming_the_key(tmp_path):
    path = tmp_path / "dockyard.toml"
    path.write_text('port = "abc"\nauth_mdoe = "none"\n')
    code, text = _run(str(path))
    assert code == 2
    assert "unknown key 'auth_mdoe' (did you mean 'auth_mode'?)" in text
    assert "port = 'abc': expected an integer >= 1 and <= 65535" in text
    assert "pydantic" not in text and "Traceback" not in text


def test_cli_env_override_is_checked_and_config_env_is_the_default_file(tmp_path, monkeypatch):
    path = tmp_path / "dockyard.toml"
    path.write_text("port = 6001\n")
    monkeypatch.setenv("DOCKYARD_CONFIG", str(path))
    monkeypatch.setenv("DOCKYARD_HOST", "0.0.0.0")
    code, text = _run()
    assert code == 2
    assert "public_url must be set when the server binds to '0.0.0.0'" in text


@pytest.mark.parametrize("content, message", [(None, "settings file not found"), ("port = = 1", "is not valid TOML")])
def test_cli_missing_or_broken_file_exits_2(tmp_path, content, message):
    path = tmp_path / "dockyard.toml"
    if content is not None:
        path.write_text(content)
    code, text = _run(str(path))
    assert code == 2 and message in text


def test_cli_unreadable_file_exits_2_with_a_message_not_a_traceback(tmp_path):
    path = tmp_path / ("x" * 300)  # ENAMETOOLONG: an OSError other than not-found, even for root
    code, text = _run(str(path))
    assert code == 2 and "cannot read settings file" in text and "Traceback" not in text


def test_serve_names_the_likely_setting_for_a_typo_in_the_file(tmp_path):
    path = tmp_path / "dockyard.toml"
    path.write_text("prot = 5001\n")
    result = CliRunner().invoke(app, ["serve", "--config", str(path), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "prot: unknown setting (did you mean 'port'?)" in " ".join(result.output.split())
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("url", [
    "postgresql://u@db.example/reg?password=hunter2",  # libpq takes the password from the query too
    "postgresql://u:hunter2@db.example/reg?sslpassword=hunter2&sslmode=verify-full",
    "postgresql:///reg?host=db.example&user=u&PASSWORD=hunter2",
])
def test_cli_valid_line_never_prints_a_database_password(tmp_path, url):
    path = tmp_path / "dockyard.toml"
    path.write_text(f'database_url = "{url}"\n')
    code, text = _run(str(path))
    assert code == 0, text
    assert "hunter2" not in text and "db.example" in text


def test_cli_tls_files_serve_would_refuse_exit_2_naming_the_file(tmp_path, monkeypatch):
    """check-config runs serve's own load check of the certificate, key and client CA files."""
    from tests.support.tls import TestCA

    monkeypatch.setenv("DOCKYARD_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DOCKYARD_TLS_CERT_FILE", "/nonexistent.pem")
    monkeypatch.setenv("DOCKYARD_TLS_KEY_FILE", "/nonexistent.key")
    code, output = _run()
    assert code == 2 and "/nonexistent.pem: no such file" in output, output
    ca = TestCA(tmp_path / "ca")
    cert, key = ca.issue("server")
    monkeypatch.setenv("DOCKYARD_TLS_CERT_FILE", str(cert))
    monkeypatch.setenv("DOCKYARD_TLS_KEY_FILE", str(key))
    assert _run()[0] == 0
    monkeypatch.setenv("DOCKYARD_TLS_CLIENT_CA_FILE", str(tmp_path / "clients.pem"))
    code, output = _run()
    assert code == 2 and f"{tmp_path / 'clients.pem'}: no such file" in output, output
    monkeypatch.setenv("DOCKYARD_TLS_CLIENT_CA_FILE", str(ca.ca_file))
    assert _run()[0] == 0
    for name in ("DOCKYARD_TLS_CERT_FILE", "DOCKYARD_TLS_KEY_FILE", "DOCKYARD_TLS_CLIENT_CA_FILE"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("DOCKYARD_ACME_DOMAIN", "registry.example.com")  # no files yet: serve fetches them
    monkeypatch.setenv("DOCKYARD_TLS_REDIRECT_HTTP_PORT", "8080")
    code, output = _run()
    assert code == 0 and ": valid" in output, output


def test_a_validators_reason_leads_and_a_list_is_of_strings():
    """A value of the right type that a validator refuses is not "expected a string"; lists read as English."""
    assert expected_type(Settings.model_fields["trusted_proxies"]) == "a list of strings (env: JSON list or comma-separated)"
    _, problems = check({"public_url": "registry.example.com", "gc_schedule": "every day"},
                        {"DOCKYARD_TRUSTED_PROXIES": "10.0.0.0/33"}, "d.toml")
    assert problems == [
        "d.toml: public_url 'registry.example.com' must be an http(s) URL such as https://registry.example.com[/prefix]",
        "d.toml: gc_schedule 'every day' is not a valid cron expression (five fields, e.g. '0 3 * * *')",
        "environment DOCKYARD_TRUSTED_PROXIES: trusted_proxies: '10.0.0.0/33' is not an IP address or CIDR (e.g. 10.0.0.0/8)",
    ]
