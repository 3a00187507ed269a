"""roleguard's protocol, as the runners (local and SSH) rely on it: real processes, real signals."""
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from testkit import procs
from testkit.procs import alive
from testkit.jobs import wait_for
from testkit.streams import Output
from mxlaunch.infra.transport.remote import roleguard
GUARD = os.path.abspath(roleguard.__file__)
TOKEN = "t0k3n"
MARK = "ROLEGUARD_TEST"  # in every guard's environment, so its role's too: what the test leaves, teardown finds
WAIT = 10.0  # seconds any one read or wait of these tests may take


@dataclass(frozen=True)
class Guard:
    proc: subprocess.Popen
    out: Output  # the guard's stdout, read only with a deadline


@pytest.fixture
def guard_env():
    """The environment to start guards with; whatever they (or their roles) left running is killed at teardown."""
    mark = secrets.token_hex(8)
    yield dict(os.environ, **{MARK: mark})
    procs.kill_marked(MARK, mark)


def start_guard(env, config, bootstrap=False) -> Guard:
    argv = roleguard.bootstrap_argv(sys.executable) if bootstrap else [sys.executable, GUARD]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    if bootstrap:
        proc.stdin.write(roleguard.bootstrap_payload())
    proc.stdin.write((json.dumps(dict(config, token=TOKEN)) + "\n").encode())
    proc.stdin.flush()
    return Guard(proc, Output(proc.stdout))


def read_until_started(guard):
    line = guard.out.readline(WAIT).decode()
    event, payload = roleguard.parse_control_line(line.rstrip("\n"), TOKEN)
    assert event == "started"
    return payload["pid"]


def finish(guard):
    """Read the guard's output to its end with the lifeline still open, then close it."""
    out = guard.out.read_to_end(WAIT)
    if not guard.proc.stdin.closed:
        guard.proc.stdin.close()
    guard.proc.wait(timeout=WAIT)
    lines = out.decode().splitlines()
    control = [roleguard.parse_control_line(line, TOKEN) for line in lines]
    exits = [c[1] for c in control if c and c[0] == "exit"]
    assert len(exits) == 1 and control[-1][0] == "exit", lines  # exactly one report, always last
    output = [line for line, c in zip(lines, control) if c is None]
    return guard.proc.returncode, exits[0], output


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bootstrap", [False, True], ids=["script", "shipped-over-stdin"])
def test_output_env_and_exit_code_are_reported(bootstrap, guard_env):
    script = "import os,sys; print(os.environ['SECRET']); print(sys.argv[1:]); sys.stdout.write('no newline'); sys.exit(7)"
    guard = start_guard(guard_env, {"argv": [sys.executable, "-c", script, "a b", "$x;y"],
                                    "env": {"SECRET": "s p a c e"}}, bootstrap=bootstrap)
    read_until_started(guard)
    lines, deadline = [], time.monotonic() + WAIT
    while not lines or not lines[-1].startswith(roleguard.CONTROL_PREFIX):  # the lifeline stays open until the report
        lines.append(guard.out.readline(deadline - time.monotonic()).decode().rstrip("\n"))  # EOFError at the end
    guard.proc.stdin.close()
    assert guard.proc.wait(timeout=WAIT) == 7
    assert lines[:-1] == ["s p a c e", "['a b', '$x;y']", "no newline"]
    event, report = roleguard.parse_control_line(lines[-1], TOKEN)
    assert event == "exit" and report == {"code": 7, "signal": None, "stopped": None, "error": None}


@pytest.mark.timeout(30)
def test_role_ending_by_itself_reports_its_code_and_a_forged_line_is_just_output(guard_env):
    forged = f"{roleguard.CONTROL_PREFIX} other exit {{\"code\": 0}}"
    guard = start_guard(guard_env, {"argv": [sys.executable, "-c", f"print({forged!r}); raise SystemExit(3)"]})
    read_until_started(guard)
    rc, report, output = finish(guard)
    assert (rc, report["code"], report["stopped"]) == (3, 3, None)
    assert output == [forged]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how, why", [("stop", "stop"), ("eof", "lifeline"), ("sigterm", "signal"),
                                      ("sighup", "signal")])
def test_every_stop_path_kills_the_whole_process_group(how, why, guard_env):
    # the role starts a grandchild that ignores SIGTERM: only the group SIGKILL after the grace gets it
    script = ("import subprocess,sys,time; "
              "c=subprocess.Popen(['sh','-c','trap \"\" TERM; sleep 60']); print(c.pid, flush=True); time.sleep(60)")
    guard = start_guard(guard_env, {"argv": [sys.executable, "-c", script], "grace": 0.3})
    role = read_until_started(guard)
    grandchild = int(guard.out.readline(WAIT))
    t0 = time.monotonic()
    if how == "stop":
        guard.proc.stdin.write(b"stop\n")
        guard.proc.stdin.flush()
    elif how == "eof":
        guard.proc.stdin.close()
    else:
        os.kill(guard.proc.pid, signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
    rc, report, _ = finish(guard)
    assert report["stopped"] == why and report["signal"] == signal.SIGTERM and rc == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 2.0
    assert not alive(role) and not alive(grandchild)


@pytest.mark.timeout(30)
def test_sigkill_of_the_guards_parent_is_the_lifeline(guard_env):
    """The launcher dies by SIGKILL: the guard's stdin closes, and the role goes."""
    parent = subprocess.Popen(
        [sys.executable, "-c",
         "import json,subprocess,sys,time\n"
         f"p=subprocess.Popen([sys.executable,{GUARD!r}],stdin=subprocess.PIPE,stdout=subprocess.PIPE)\n"
         "p.stdin.write(json.dumps({'argv':['sleep','60'],'grace':0.3}).encode()+b'\\n'); p.stdin.flush()\n"
         "print(p.stdout.readline().decode(), flush=True); time.sleep(60)\n"],
        stdout=subprocess.PIPE, env=guard_env, start_new_session=True)
    started = Output(parent.stdout).readline(WAIT).decode()
    role = json.loads(started.split(" ", 3)[3])["pid"]
    assert alive(role)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=WAIT)
    wait_for(lambda: not alive(role), 2.0, what="the role to die with its launcher")


@pytest.mark.timeout(30)
def test_unstartable_command_and_bad_config(guard_env):
    rc, report, _ = finish(start_guard(guard_env, {"argv": ["/nonexistent/cmd"]}))
    assert rc == 127 and report["code"] == 127 and "cannot start /nonexistent/cmd" in report["error"]
    bad = subprocess.run([sys.executable, GUARD], input=b"not json\n", capture_output=True, timeout=WAIT,
                         env=guard_env)
    assert bad.returncode == roleguard.GUARD_FAILED and b"bad config line" in bad.stderr
