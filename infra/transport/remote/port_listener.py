"""port_listener: hold the scheduler's address:port open on its host while the other hosts probe it.

Stdlib only, Python >= 3.6, one file: launcher/jobs/preflight.py runs its source as
`python -u -c SOURCE ADDRESS PORT` on the scheduler's host.

stdout, one line: READY once it listens, or FAILED and the reason (exit status 1).
stdin: the lifeline. It accepts connections until stdin reaches EOF (or LIFETIME seconds pass), then
closes everything, so the port is free again for the scheduler. An accepted connection is closed only
after the prober closed its end: the prober, not the scheduler's port, keeps the TIME_WAIT.
"""
import os
import select
import socket
import sys
import time

READY = "@@listen ready"
FAILED = "@@listen failed"
LIFETIME = 120.0  # seconds: a bound on its life even when stdin is never closed


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve(listener, lifetime=LIFETIME):
    """Accept and hold connections until stdin's EOF or `lifetime` seconds."""
    conns, deadline = [], time.time() + lifetime
    while time.time() < deadline:
        ready, _, _ = select.select([listener, 0] + conns, [], [], 1.0)
        if 0 in ready and not os.read(0, 4096):
            break
        if listener in ready:
            conns.append(listener.accept()[0])
        for c in [c for c in conns if c in ready]:
            if not c.recv(1):
                c.close()
                conns.remove(c)
    for c in conns:
        c.close()


def main(argv):
    address, port = argv[0], int(argv[1])
    s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
    try:
        s.bind((address, port))
        s.listen(128)
    except OSError as e:
        say("%s %s" % (FAILED, e.strerror or e))
        return 1
    say(READY)
    serve(s)
    s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
