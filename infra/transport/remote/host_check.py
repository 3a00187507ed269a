"""host_check: one host's preflight checks, run by the job's interpreter on that host.

Stdlib only, Python >= 3.6, one file: launcher/jobs/preflight.py sends its source as `python -c SOURCE`, so
nothing has to be installed on the host; a missing or broken interpreter shows as no reply at all.

stdin, one JSON line (the request):
    {"workdir": "/dir",              # where the roles run; null: the current directory
     "files": ["data/train.rec"],    # must exist (relative paths: under workdir)
     "bind": ["10.0.0.5"],           # must be addresses of this host (the roles' DMLC_NODE_HOST)
     "probe": ["10.0.0.1", 9091],    # or null: connect to the scheduler's address and port
     "probe_timeout": 3.0,
     "full": true,                   # also import mxnet (false: only the probe matters)
     "gpus": [0, 1],                 # optional, with full: the GPUs the job uses here
     "smi_timeout": 15, "op_timeout": 60}
stdout, one line: MARKER and a JSON object
    {"python": "3.10.12", "workdir": true, "missing": [...], "bind": ["10.0.0.9 (reason)", ...],
     "probe": "ok" | why not,                   # only with a probe
     "mxnet": "1.9.1" | "mxnet_error": "...",   # only when full
     "gpu": {"smi": [["NVIDIA A10G", "8.6", "23028 MiB", "535.54.03"], ...] | null,  # only with gpus
             "smi_error": null | "not found" | why it failed,
             "cuda": true, "num_gpus": 4, "op": "ok" | one line, "hung": false}}  # these when mxnet imported
Nothing here judges the GPUs (which compute capability the wheel runs is launcher-side knowledge):
infra/transport/gpu_check.py does, from this reply.
"""
import csv
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading

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


def one_line(error):
    """An exception as one line: MXNet's errors carry a C++ traceback, whose last line is the message."""
    name = type(error).__name__
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    last = lines[-1][:300] if lines else ""
    return last if last.startswith(name + ":") else "%s: %s" % (name, last)


def nvidia_smi(timeout):
    """(rows, None) from `nvidia-smi --query-gpu=...`, each [name, compute_cap, memory.total, driver_version];
    or (None, why not). Bounded: on a broken driver nvidia-smi can hang, even in the kernel, where no
    signal ends it, so it is killed and left behind rather than waited for."""
    path = shutil.which("nvidia-smi")
    if not path:
        return None, "not found"
    try:
        proc = subprocess.Popen([path, "--query-gpu=name,compute_cap,memory.total,driver_version",
                                 "--format=csv,noheader"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True)
    except OSError as e:
        return None, "cannot run %s: %s" % (path, e.strerror)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None, "%s did not answer within %gs (a hung driver?)" % (path, timeout)
    if proc.returncode != 0:
        tail = " ".join(out.split())[-300:]
        return None, "%s exited %d: %s" % (path, proc.returncode, tail or "no output")
    return [[cell.strip() for cell in row] for row in csv.reader(out.splitlines()) if row], None


def gpu_op(mx, gpus, timeout):
    """What MXNet says about the GPUs, and one real operation per requested GPU (an array made on mx.gpu(i),
    computed there and copied back), all on a thread bounded by `timeout`: the first CUDA call on a broken
    driver can hang. {"num_gpus": n | None, "op": "ok" | one line}."""
    out = {"num_gpus": None, "op": "did not finish within %gs (a hung driver?)" % timeout}

    def work():
        device = None
        try:
            out["num_gpus"] = mx.context.num_gpus()
            for device in gpus:
                got = (mx.nd.ones((4,), ctx=mx.gpu(device)) * 2).asnumpy().tolist()
                if got != [2.0] * 4:
                    out["op"] = "mx.gpu(%d) computed %r for 2*ones(4)" % (device, got)
                    return
            out["op"] = "ok"
        except BaseException as e:  # a CUDA failure is an MXNetError, a missing library an OSError ...
            out["op"] = ("mx.gpu(%d): " % device if device is not None else "") + one_line(e)

    worker = threading.Thread(target=work, name="gpu-op", daemon=True)
    worker.start()
    worker.join(timeout)
    out["hung"] = worker.is_alive()
    return out


def gpu_report(req, mx):
    """The GPU part of the reply: nvidia-smi's rows (or why there are none), whether this mxnet is a CUDA
    build, and the result of the GPU operation (only when mxnet imported)."""
    rows, smi_error = nvidia_smi(req.get("smi_timeout", 15))
    report = {"smi": rows, "smi_error": smi_error}
    if mx is not None:
        try:
            report["cuda"] = bool(mx.runtime.Features().is_enabled("CUDA"))
        except BaseException:  # an mxnet without the feature list: the operation tells
            report["cuda"] = None
        report.update(gpu_op(mx, req["gpus"], req.get("op_timeout", 60)))
    return report


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
    mx = None
    try:
        if req["full"]:  # what is checked, not a dependency: by name
            mx = importlib.import_module("mxnet")
            out["mxnet"] = mx.__version__
    except BaseException as e:  # a broken install may raise anything, even SystemExit
        out["mxnet_error"] = "%s: %s" % (type(e).__name__, " ".join(str(e).split())[:200])
    if req["full"] and req.get("gpus"):
        out["gpu"] = gpu_report(req, mx)
    return out


def parse_reply(text):
    """The reply in a host's stdout (launcher side; other lines, e.g. a library's warnings, are skipped), or
    None when there is none."""
    for line in text.splitlines():
        if line.startswith(MARKER + " "):
            try:
                return json.loads(line[len(MARKER) + 1:])
            except ValueError:
                return None
    return None


def main():
    req = json.loads(sys.stdin.readline())
    reply = check(req)
    sys.stdout.write(MARKER + " " + json.dumps(reply) + "\n")
    sys.stdout.flush()
    if reply.get("gpu", {}).get("hung"):  # a GPU call that never returns would also hang MXNet's exit
        os._exit(0)


if __name__ == "__main__":
    main()
