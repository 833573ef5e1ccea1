"""Attack review (issue 10): which URLs the saved `dockyard login` credentials are sent to by connect()."""

from __future__ import annotations

import pytest
import typer

from dockyard.cli.remote import connect
from dockyard.client.credentials import CredentialStore


@pytest.mark.parametrize("url", [
    "https://reg.example.com.evil.test", "https://evil.test/reg.example.com", "https://reg.example.com@evil.test",
    "https://evil.test#reg.example.com", "https://reg.example.com:444", "reg.example.com.evil.test",
])
def test_saved_credentials_go_to_their_own_host_only(url):
    CredentialStore().put("reg.example.com", "alice", "long-lived-secret")
    remote = connect(url)
    assert remote.password is None and remote.username is None


def test_saved_credentials_are_not_sent_in_clear_text_to_a_remote_host():
    CredentialStore().put("reg.example.com", "alice", "long-lived-secret")
    with pytest.raises(typer.Exit):
        connect("http://reg.example.com")
    assert connect("https://reg.example.com").password == "long-lived-secret"
    CredentialStore().put("127.0.0.1:5000", "alice", "local-secret")
    assert connect("http://127.0.0.1:5000").password == "local-secret"  # plain HTTP on loopback stays local
