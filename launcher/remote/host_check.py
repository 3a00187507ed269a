"""host_check: one host's preflight checks, run by the job's interpreter on that host.

Stdlib only, Python >= 3.6, one file: launcher/preflight.py sends its source as `python -c SOURCE`, so
nothing has to be installed on the host; a missing or broken interpreter shows as no reply at all.

stdin, one JSON line (the request):
    {"workdir": "/dir",              # where the roles run; null: the current directory
     "files": ["data/train.rec"],    # must exist (relative paths: under workdir)
     "bind": ["10.0.0.5"],           # must be addresses of this host (the roles' DMLC_NODE_HOST)
     "probe": ["10.0.0.1", 9091],    # or null: connect to the scheduler's address and port
     "probe_timeout": 3.0,
     "full": true}                   # also import mxnet (false: only the probe matters)
stdout, one line: MARKER and a JSON object
    {"python": "3.10.12", "workdir": true, "missing": [...], "bind": ["10.0.0.9 (reason)", ...],
     "probe": "ok" | why not,                   # only with a probe
     "mxnet": "1.9.1" | "mxnet_error": "..."}   # only when full
"""
import importlib
import json
import os
import socket
import sys

MARKER = "@@preflight"


def bind_problem(address):
    """None when `address` is one of this host's (binding it works), else "address (reason)"."""
    try:
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        s.bind((address, 0))
        s.close()
    except OSError as e:
        return "%s (%s)" % (address, e.strerror)
    return None


def probe(address, port, timeout):
    """"ok" when the port accepts a connection within `timeout` seconds, else why not."""
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return "ok"
    except socket.timeout:
        return "timed out after %gs (a firewall or security group drops it?)" % timeout
    except OSError as e:
        return e.strerror or str(e)


def check(req):
    """The reply to one request."""
    out = {"python": sys.version.split()[0]}
    base = req["workdir"] or os.getcwd()
    out["workdir"] = os.path.isdir(base)
    out["missing"] = [f for f in req["files"] if not os.path.exists(os.path.join(base, f))]
    out["bind"] = [bad for bad in map(bind_problem, req["bind"]) if bad]
    if req["probe"]:
        address, port = req["probe"]
        out["probe"] = probe(address, port, req["probe_timeout"])
    try:
        if req["full"]:  # what is checked, not a dependency: by name
            out["mxnet"] = importlib.import_module("mxnet").__version__
    except BaseException as e:  # a broken install may raise anything, even SystemExit
        out["mxnet_error"] = "%s: %s" % (type(e).__name__, " ".join(str(e).split())[:200])
    return out


def main():
    req = json.loads(sys.stdin.readline())
    sys.stdout.write(MARKER + " " + json.dumps(check(req)) + "\n")


if __name__ == "__main__":
    main()
