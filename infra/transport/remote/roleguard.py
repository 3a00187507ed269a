"""roleguard: start one role, stream its output, and kill it the moment its launcher goes away.

Stdlib only, Python >= 3.6, one file: the runner starts it for every role, locally
(`python roleguard.py`) or on a remote host's bare Python (`bootstrap_argv()` ships this source
over stdin, so nothing has to be installed there). It is local mode's parent-death watchdog and
SSH mode's dead-man switch.

Protocol (stable; the SSH runner depends on it)
------------------------------------------------
stdin, first line: one JSON object
    {"argv": ["cmd", "arg", ...],    # required, run as is (no shell): arguments arrive byte for byte
     "env": {"KEY": "VALUE", ...},   # merged over the guard's own environment; never on a command line
     "cwd": "/dir",                  # optional, default: the guard's cwd
     "grace": 1.0,                   # optional: seconds between SIGTERM and SIGKILL of the role's group
     "token": "abc123",              # optional: tags the guard's control lines (default "roleguard")
     "spot": {"interval": 5.0}}      # optional: watch this host's spot interruption notice (below)
stdin, afterwards: the lifeline. EOF (launcher died, even by SIGKILL; SSH channel dropped) or a line
    "stop" -> SIGTERM to the role's process group, SIGKILL after `grace`, then exit.
    SIGTERM, SIGHUP or SIGINT to the guard do the same.
    A line "checkpoint" -> SIGUSR1 to the role's pid only (not its group: helper processes would die of
    USR1's default action); the trainer's rank 0 then saves a checkpoint and exits 75.
stdout: the role's stdout and stderr, merged, as they come. Interleaved with them, always at the
    start of a line, the guard's control lines (the role does not know the token, so it cannot forge them):
        @@roleguard <token> started {"pid": 1234}
        @@roleguard <token> spot {"action": "terminate", "time": "2026-01-01T12:00:00Z"}
        @@roleguard <token> exit {"code": 0, "signal": null, "stopped": null, "error": null}
    `code` is the role's exit status or null; `signal` the number of the signal that ended it or null;
    `stopped` is why the guard stopped it ("lifeline", "stop", "signal") or null when the role ended
    by itself; `error` a message when the role could not be started (then code is 127 or 126).
    The `exit` line is the guard's last output; nothing of the role follows it.
    `spot` (only with "spot" in the config, at most once): the instance metadata service (IMDSv2) gave
    this host a spot interruption notice, as AWS wrote it. A thread polls it every `interval` seconds
    (PUT /latest/api/token, then GET /latest/meta-data/spot/instance-action with the token: 404 = no
    notice) at AWS_EC2_METADATA_SERVICE_ENDPOINT of the role's environment (default
    http://169.254.169.254, no proxy); AWS_EC2_METADATA_DISABLED=true turns it off. Errors and an
    unreachable service mean no notice: it polls on quietly until the role ends.
exit status: the role's exit code, or 128 + signal number; 125 when the guard itself failed
    (bad first line), with one line on stderr.

The role runs in its own session (a new process group whose id is its pid): stopping it reaches
every process it started, and a terminal's Ctrl-C reaches only the launcher, which then decides.
"""
import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

CONTROL_PREFIX = "@@roleguard"
STOP_LINE = b"stop"
GUARD_FAILED = 125
# After the role ended, how long its output pipe may stay open (a descendant that escaped the group).
DRAIN_SECONDS = 0.5
READ_SIZE = 65536  # the role's output is passed on in reads of at most this size, never gathered into lines
LIFELINE_KEEP = 64  # bytes of an unfinished lifeline line kept
CHECKPOINT_LINE = b"checkpoint"
IMDS_DEFAULT = "http://169.254.169.254"
IMDS_TIMEOUT = 1.0  # seconds per request: the service answers at once or not at all
IMDS_TOKEN_TTL = 21600  # seconds a session token lives (the most IMDSv2 allows)
SPOT_ACTION_PATH = "/latest/meta-data/spot/instance-action"


def control_line(token, event, payload):
    """The exact text of one control line (the runner parses it with `parse_control_line`)."""
    return "%s %s %s %s\n" % (CONTROL_PREFIX, token, event, json.dumps(payload, sort_keys=True))


def parse_control_line(line, token):
    """(event, payload) when `line` is a control line of `token`, else None."""
    head = "%s %s " % (CONTROL_PREFIX, token)
    if not line.startswith(head):
        return None
    event, _, payload = line[len(head):].partition(" ")
    try:
        return event, json.loads(payload)
    except ValueError:
        return None


# This source runs remotely by `python -c BOOTSTRAP` reading "<length>\n<source>" from stdin with
# os.read (never more than asked), so the config line that follows stays unread for the guard.
BOOTSTRAP = (
    "import os\n"
    "def r(n):\n"
    " b=os.read(0,n)\n"
    " if not b: raise SystemExit(125)\n"
    " return b\n"
    "h=b''\n"
    "while not h.endswith(b'\\n'): h+=r(1)\n"
    "n=int(h); s=b''\n"
    "while len(s)<n: s+=r(n-len(s))\n"
    "exec(compile(s,'roleguard.py','exec'))\n"
)


def bootstrap_argv(python="python3"):
    """argv that runs the guard on a host with only Python; feed it `bootstrap_payload()` first."""
    return [python, "-u", "-c", BOOTSTRAP]


def bootstrap_payload():
    """Bytes to write to `bootstrap_argv()`'s stdin before the JSON config line."""
    with open(os.path.abspath(__file__.replace(".pyc", ".py")), "rb") as f:
        source = f.read()
    return str(len(source)).encode() + b"\n" + source


def imds_endpoint(env):
    """Where this host's instance metadata service is (botocore's settings), or None when it is turned off."""
    if env.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        return None
    return (env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") or IMDS_DEFAULT).rstrip("/")


class SpotWatcher(threading.Thread):
    """Polls IMDSv2 for a spot interruption notice; hands the first one to `on_notice` and ends."""

    def __init__(self, endpoint, interval, on_notice):
        threading.Thread.__init__(self, name="spot-watcher", daemon=True)
        self.endpoint, self.interval, self.on_notice = endpoint, max(0.05, float(interval)), on_notice
        self.done = threading.Event()
        self.token, self.token_until = None, 0.0
        # never through a proxy: the metadata service is on the instance's own link
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method, path, headers):
        req = urllib.request.Request(self.endpoint + path, method=method, headers=headers)
        with self.opener.open(req, timeout=IMDS_TIMEOUT) as answer:
            return answer.read(65536)

    def poll(self):
        """The notice ({"action": ..., "time": ...}) or None: no notice, or no answer worth trusting."""
        try:
            if self.token is None or time.monotonic() >= self.token_until:
                self.token = self.request("PUT", "/latest/api/token",
                                          {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL)}).decode()
                self.token_until = time.monotonic() + IMDS_TOKEN_TTL / 2
            notice = json.loads(self.request("GET", SPOT_ACTION_PATH, {"X-aws-ec2-metadata-token": self.token}))
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # the token expired or was refused: ask for another next time
                self.token = None
            return None
        except (OSError, ValueError):  # no service (not on EC2), timeouts, a garbled answer: keep polling
            return None
        return notice if isinstance(notice, dict) and notice.get("action") else None

    def run(self):
        while not self.done.is_set():
            notice = self.poll()
            if notice is not None:
                self.on_notice({"action": str(notice.get("action")), "time": str(notice.get("time"))})
                return
            self.done.wait(self.interval)


class Guard(object):
    def __init__(self, config):
        self.argv = [str(a) for a in config["argv"]]
        if not self.argv:
            raise ValueError("argv is empty")
        self.env = dict(os.environ)
        self.env.update({str(k): str(v) for k, v in (config.get("env") or {}).items()})
        self.cwd = config.get("cwd") or None
        self.grace = float(config.get("grace", 1.0))
        self.token = str(config.get("token") or "roleguard")
        self.proc = None
        self.stopped = None  # why we stopped the role, once we did
        self.kill_at = None  # deadline for SIGKILL after SIGTERM
        self.out_open = True  # our stdout still reaches someone
        self.at_line_start = True
        self.signalled = []
        spot = config.get("spot")
        self.spot_interval = float(spot.get("interval", 5.0)) if isinstance(spot, dict) else None
        self.spot_notices = []  # from the watcher thread; written out by the main loop (one writer)
        self.wake_w = None

    # -- output -----------------------------------------------------------------------------
    def write(self, data):
        if not self.out_open or not data:
            return
        try:
            view = memoryview(data)
            while view:
                n = os.write(1, view)
                view = view[n:]
            self.at_line_start = data.endswith(b"\n")
        except OSError as exc:  # launcher or channel gone: the lifeline is cut
            if exc.errno not in (errno.EPIPE, errno.EBADF, errno.ECONNRESET):
                raise
            self.out_open = False
            self.begin_stop("lifeline")

    def control(self, event, payload):
        if not self.at_line_start:
            self.write(b"\n")
        self.write(control_line(self.token, event, payload).encode())

    # -- stopping -----------------------------------------------------------------------------
    def signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def group_alive(self):
        """Whether any live (non-zombie) process is left in the role's group."""
        try:
            os.killpg(self.proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        if not os.path.isdir("/proc/self"):
            return True
        # kill(0) also succeeds for zombies that wait for a slow init to reap them: look closer.
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry, "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid pgrp ...
            if len(fields) > 2 and int(fields[2]) == self.proc.pid and fields[0] not in (b"Z", b"X"):
                return True
        return False

    def begin_stop(self, why):
        if self.stopped is not None or self.proc is None:
            return
        self.stopped = why
        self.signal_group(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.grace

    def on_signal(self, signum, frame):
        self.signalled.append(signum)  # handled in the loop; os.write to the wake pipe wakes select

    def read_lifeline(self, data, pending):
        """Handle lifeline bytes; returns the incomplete last line."""
        lines = [line.strip() for line in (pending + data).split(b"\n")]
        for line in lines[:-1]:
            if line == STOP_LINE:
                self.begin_stop("stop")
            elif line == CHECKPOINT_LINE:
                self.ask_checkpoint()
        return lines[-1][-LIFELINE_KEEP:]  # bounded: only a short line can be a command

    def ask_checkpoint(self):
        """SIGUSR1 to the role's own pid: its rank 0 saves where it is and exits 75."""
        if self.stopped is None and self.proc is not None and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGUSR1)
            except (ProcessLookupError, PermissionError):
                pass

    def on_spot_notice(self, notice):  # the watcher's thread
        self.spot_notices.append(notice)
        try:
            os.write(self.wake_w, b"s")
        except OSError:
            pass

    def start_spot_watcher(self):
        endpoint = imds_endpoint(self.env)
        if self.spot_interval is None or endpoint is None:
            return None
        watcher = SpotWatcher(endpoint, self.spot_interval, self.on_spot_notice)
        watcher.start()
        return watcher

    # -- main loop ---------------------------------------------------------------------------
    def run(self, stdin_rest):
        try:
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        except OSError as exc:
            code = 126 if isinstance(exc, PermissionError) else 127
            self.control("exit", {"code": code, "signal": None, "stopped": None,
                                  "error": "cannot start %s: %s" % (self.argv[0], exc.strerror or exc)})
            return code
        self.control("started", {"pid": self.proc.pid})
        out_fd = self.proc.stdout.fileno()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        self.wake_w = wake_w
        watcher = self.start_spot_watcher()
        signal.signal(signal.SIGCHLD, lambda s, f: None)  # a handler, so the wakeup fd sees SIGCHLD
        stdin_buf, stdin_open = b"", True
        stdin_buf = self.read_lifeline(stdin_rest, stdin_buf)
        ended_at = None
        while True:
            if self.signalled:
                del self.signalled[:]
                self.begin_stop("signal")
            while self.spot_notices:
                self.control("spot", self.spot_notices.pop(0))
            now = time.monotonic()
            if ended_at is None and self.proc.poll() is not None:
                ended_at = now
                if self.kill_at is None and self.group_alive():  # its descendants outlive it: they go too
                    self.signal_group(signal.SIGTERM)
                    self.kill_at = now + self.grace
            if self.kill_at is not None and now >= self.kill_at:
                self.signal_group(signal.SIGKILL)
                self.kill_at = None
            if ended_at is not None:
                if (out_fd is None and not self.group_alive()) or now - ended_at > DRAIN_SECONDS + self.grace:
                    break
            timeouts = [1.0]
            if self.kill_at is not None:
                timeouts.append(self.kill_at - now)
            if ended_at is not None:
                timeouts.append(0.05)
            fds = [wake_r] + ([out_fd] if out_fd is not None else []) + ([0] if stdin_open else [])
            try:
                ready, _, _ = select.select(fds, [], [], max(0.0, min(timeouts)))
            except InterruptedError:
                continue
            if wake_r in ready:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
            if out_fd is not None and out_fd in ready:
                data = os.read(out_fd, READ_SIZE)
                if data:
                    self.write(data)
                else:
                    self.proc.stdout.close()
                    out_fd = None
            if stdin_open and 0 in ready:
                data = os.read(0, 4096)
                if not data:
                    stdin_open = False
                    self.begin_stop("lifeline")
                else:
                    stdin_buf = self.read_lifeline(data, stdin_buf)
        if watcher is not None:
            watcher.done.set()
        if self.group_alive():
            self.signal_group(signal.SIGKILL)
        returncode = self.proc.wait()
        code, sig = (None, -returncode) if returncode < 0 else (returncode, None)
        self.control("exit", {"code": code, "signal": sig, "stopped": self.stopped, "error": None})
        return 128 + sig if sig else code


def read_config_line():
    """Read the first stdin line with os.read, keeping whatever follows it for the lifeline."""
    buf = b""
    while b"\n" not in buf:
        data = os.read(0, 4096)
        if not data:
            break
        buf += data
    line, _, rest = buf.partition(b"\n")
    return line, rest


def main():
    for sig in (signal.SIGPIPE,):
        signal.signal(sig, signal.SIG_IGN)  # a dead reader is an EPIPE we handle, not a silent death
    line, rest = read_config_line()
    try:
        config = json.loads(line.decode("utf-8"))
        guard = Guard(config)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        sys.stderr.write("roleguard: error: bad config line: %s\n" % exc)
        return GUARD_FAILED
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, guard.on_signal)
    return guard.run(rest)


if __name__ == "__main__":
    sys.exit(main())
