"""Fixtures shared by the SSH tests (loaded by conftest's `pytest_plugins`). Opt in per module:
`pytestmark = [pytest.mark.bed, pytest.mark.usefixtures("no_agent")]`."""
import pytest


@pytest.fixture
def no_agent(monkeypatch):
    """No ssh-agent: the launcher authenticates with the bed's key only, whatever the developer's shell has."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
