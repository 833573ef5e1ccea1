import os
import pytest

from dockyard.settings import Settings, load_settings, settings_to_env


def test_defaults(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("DOCKYARD_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert (s.host, s.port, s.storage_driver) == ("127.0.0.1", 5000, "filesystem")
    assert s.resolved_database_url.startswith("sqlite:///") and s.resolved_database_url.endswith("dockyard-data/dockyard.db")


def test_priority_file_then_env_then_override(tmp_path, monkeypatch):
    cfg = tmp_path / "dockyard.toml"
    cfg.write_text('port = 6000\nhost = "0.0.0.0"\nworkers = 3\npublic_url = "https://registry.example.com"\n')
    monkeypatch.setenv("DOCKYARD_PORT", "7000")
    s = load_settings(cfg, workers=5)
    assert s.host == "0.0.0.0"  # from the file
    assert s.port == 7000  # env beats the file
    assert s.workers == 5  # explicit override beats env


def test_config_env_var(tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text("delete_enabled = false\n")
    monkeypatch.setenv("DOCKYARD_CONFIG", str(cfg))
    assert load_settings().delete_enabled is False


@pytest.mark.parametrize(
    "kwargs",
    [{"port": 0}, {"storage_driver": "nope"}, {"database_url": "mysql://x"}, {"workers": 0}, {"unknown_key": 1}],
)
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ValueError):
        Settings(**kwargs)


def test_bad_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("port = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_settings(cfg)
    with pytest.raises(ValueError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_postgres_url_uses_psycopg():
    s = Settings(database_url="postgresql://u:p@127.0.0.1:5432/db")
    assert s.resolved_database_url == "postgresql+psycopg://u:p@127.0.0.1:5432/db"
    assert not s.is_sqlite


def test_env_round_trip(tmp_path, monkeypatch):
    s = Settings(data_dir=tmp_path, port=5123, delete_enabled=False)
    for key, value in settings_to_env(s).items():
        monkeypatch.setenv(key, value)
    assert load_settings() == s


def test_newcomer_invalid_settings_say_how_to_fix_without_pydantic_noise(tmp_path, monkeypatch):
    """`dockyard serve --host 0.0.0.0` stopped with pydantic's "1 validation error for Settings … visit
    https://errors.pydantic.dev" and named only the TOML form of public_url; now one line per problem, naming the
    setting and its environment variable."""
    from typer.testing import CliRunner

    from dockyard.cli import app

    for name in list(os.environ):
        if name.startswith("DOCKYARD_"):
            monkeypatch.delenv(name)
    result = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path / "d")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "public_url must be set" in text and "DOCKYARD_PUBLIC_URL" in text
    assert "pydantic" not in text and "validation error" not in text
    monkeypatch.setenv("DOCKYARD_PORT", "abc")
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "port: Input should be a valid integer" in " ".join(result.output.split())
    monkeypatch.delenv("DOCKYARD_PORT")
    monkeypatch.setenv("DOCKYARD_TRUSTED_PROXIES", "10.0.0.0/33")
    result = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d")])
    text = " ".join(result.output.split())
    assert "trusted_proxies: '10.0.0.0/33' is not an IP address or CIDR" in text
    assert text.count("trusted_proxies") == 1
    assert not (tmp_path / "d").exists()


def test_public_url_hint_depends_on_whether_dockyard_serves_tls_itself(tmp_path, monkeypatch):
    """The "give the URL of the TLS proxy" hint is wrong advice when Dockyard terminates TLS itself."""
    from pydantic import ValidationError

    from tests.support.tls import TestCA

    for name in list(os.environ):
        if name.startswith("DOCKYARD_"):
            monkeypatch.delenv(name)

    cert, key = TestCA(tmp_path / "ca").issue("server")
    with pytest.raises(ValidationError) as plain:
        Settings(data_dir=tmp_path, host="0.0.0.0")
    assert "plain HTTP here: give the URL of the TLS proxy in front of it" in str(plain.value)
    with pytest.raises(ValidationError) as tls:
        Settings(data_dir=tmp_path, host="0.0.0.0", tls_cert_file=cert, tls_key_file=key)
    text = str(tls.value)
    assert "the URL clients use to reach this server over HTTPS" in text and "proxy" not in text and "plain HTTP" not in text
