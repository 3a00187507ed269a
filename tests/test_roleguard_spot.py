"""roleguard's spot watcher (IMDSv2 against a stub metadata service on 127.0.0.1, in this test's thread) and its
`checkpoint` line (SIGUSR1 to the role's pid only): real guard processes, real signals, bounded waits."""
import json
import os
import secrets
import subprocess
import sys

import pytest

from mxlaunch.infra.transport.remote import roleguard
from testkit import procs
from testkit.imds import SPOT_PATH, TOKEN_PATH, ImdsStub
from testkit.jobs import wait_for
from testkit.streams import Output

GUARD = os.path.abspath(roleguard.__file__)
TOKEN = "sp0t"
MARK = "ROLEGUARD_SPOT_TEST"
WAIT = 10.0
SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(0.5); print('late', flush=True); "
                               "time.sleep(60)"]


@pytest.fixture
def guard_env():
    mark = secrets.token_hex(8)
    yield dict(os.environ, **{MARK: mark})
    procs.kill_marked(MARK, mark)


def start_guard(env, argv, role_env=None, spot=0.05):
    proc = subprocess.Popen([sys.executable, GUARD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    config = {"argv": argv, "env": role_env or {}, "token": TOKEN, "grace": 0.5}
    if spot is not None:
        config["spot"] = {"interval": spot}
    proc.stdin.write((json.dumps(config) + "\n").encode())
    proc.stdin.flush()
    return proc, Output(proc.stdout)


def control_lines(out, until, timeout=WAIT):
    """Control lines (event, payload) read until one of event `until` (bounded)."""
    found = []
    while not found or found[-1][0] != until:
        control = roleguard.parse_control_line(out.readline(timeout).decode().rstrip("\n"), TOKEN)
        if control:
            found.append(control)
    return found


def stop(proc, out):
    proc.stdin.write(b"stop\n")
    proc.stdin.flush()
    rest = out.read_to_end(WAIT)
    proc.stdin.close()
    proc.wait(timeout=WAIT)
    return [c for c in (roleguard.parse_control_line(line, TOKEN) for line in rest.decode().splitlines()) if c]


@pytest.mark.timeout(30)
def test_a_notice_is_one_control_line_and_every_read_carries_a_session_token(guard_env):
    with ImdsStub() as stub:
        proc, out = start_guard(guard_env, SLEEPER, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": stub.endpoint + "/"})
        try:
            control_lines(out, "started")
            wait_for(lambda: len([r for r in stub.requests if r[0] == "GET"]) >= 3, WAIT, what="three polls")
            stub.notice({"action": "stop", "time": "2026-11-27T12:02:00Z"})
            spot = control_lines(out, "spot")[-1]
            assert spot == ("spot", {"action": "stop", "time": "2026-11-27T12:02:00Z"})
            stub.notice()  # served again: the guard has stopped asking (one notice per role)
            after = len(stub.requests)
            rest = stop(proc, out)
        finally:
            proc.kill()
        assert [c[0] for c in rest] == ["exit"]
        assert stub.served == 1 and len(stub.requests) == after
        gets = [r for r in stub.requests if r[0] == "GET"]
        assert {r[1] for r in gets} == {SPOT_PATH} and all(t in stub.tokens for _, _, t in gets)
        assert [r for r in stub.requests if r[0] == "PUT"] == [("PUT", TOKEN_PATH, None)]  # a token lasts hours


@pytest.mark.timeout(30)
def test_a_refused_token_is_asked_again_and_no_service_is_no_notice(guard_env):
    with ImdsStub() as stub:
        proc, out = start_guard(guard_env, SLEEPER, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": stub.endpoint})
        try:
            control_lines(out, "started")
            wait_for(lambda: stub.tokens, WAIT, what="a token")
            stub.tokens.clear()  # the service restarted: every token it gave is void (401)
            wait_for(lambda: len([r for r in stub.requests if r[0] == "PUT"]) >= 2, WAIT, what="a new token")
            stub.notice()
            assert control_lines(out, "spot")[-1][0] == "spot"
        finally:
            stop(proc, out)
    port = stub.server.server_address[1]  # closed now: nothing answers there
    proc, out = start_guard(guard_env, SLEEPER, {"AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{port}"})
    try:
        control_lines(out, "started")
        assert out.readline(WAIT) == b"up\n"
        assert out.readline(WAIT) == b"late\n"  # its polls failed meanwhile, quietly
        assert [c[0] for c in stop(proc, out)] == ["exit"]
    finally:
        proc.kill()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("config", ["disabled", "not asked"])
def test_a_guard_not_asked_to_watch_or_told_metadata_is_off_never_asks(guard_env, config):
    with ImdsStub() as stub:
        stub.notice()
        env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": stub.endpoint}
        if config == "disabled":
            env["AWS_EC2_METADATA_DISABLED"] = "True"
        proc, out = start_guard(guard_env, SLEEPER, env, spot=0.05 if config == "disabled" else None)
        try:
            control_lines(out, "started")
            assert out.readline(WAIT) == b"up\n" and out.readline(WAIT) == b"late\n"  # a watcher would have polled
            events = stop(proc, out)
        finally:
            proc.kill()
        assert [c[0] for c in events] == ["exit"] and stub.requests == []


def test_imds_endpoint_follows_botocore_settings():
    assert roleguard.imds_endpoint({}) == "http://169.254.169.254"
    assert roleguard.imds_endpoint({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:9/"}) == "http://127.0.0.1:9"
    assert roleguard.imds_endpoint({"AWS_EC2_METADATA_DISABLED": "true"}) is None


# A role that leads a group of two: itself and a helper child. Each writes what it received; USR1's default
# action would kill the helper (its handler is only there to tell the test).
FAMILY = r"""
import os, signal, sys, time
def note(who):
    return lambda s, f: (print(who + " got USR1", flush=True), os._exit(75 if who == "role" else 0))
child = os.fork()
if child == 0:
    signal.signal(signal.SIGUSR1, note("helper"))
    time.sleep(60)
    os._exit(0)
signal.signal(signal.SIGUSR1, note("role"))
print("helper %d" % child, flush=True)
time.sleep(60)
"""


@pytest.mark.timeout(30)
def test_the_checkpoint_line_signals_the_roles_own_pid_and_not_its_group(guard_env):
    proc, out = start_guard(guard_env, [sys.executable, "-c", FAMILY], spot=None)
    try:
        control_lines(out, "started")
        helper = int(out.readline(WAIT).decode().split()[1])
        proc.stdin.write(b"checkpoint\n")
        proc.stdin.flush()
        text = out.read_to_end(WAIT).decode()
    finally:
        proc.kill()
    lines = text.splitlines()
    exit_line = roleguard.parse_control_line(lines[-1], TOKEN)
    assert "role got USR1" in lines and "helper got USR1" not in text
    assert exit_line == ("exit", {"code": 75, "signal": None, "stopped": None, "error": None})
    assert not procs.alive(helper)  # the role's end took its group with it, by SIGTERM (not USR1)
