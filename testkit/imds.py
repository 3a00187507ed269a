"""A stub EC2 instance metadata service (IMDSv2) for tests: session tokens and the spot interruption notice.

    PUT /latest/api/token  (X-aws-ec2-metadata-token-ttl-seconds: 1..21600) -> a token (400 without the header)
    GET /latest/meta-data/spot/instance-action  (X-aws-ec2-metadata-token: a token it gave) -> 404: no notice,
        200 {"action": ..., "time": ...}: the notice; 401 without a valid token, as IMDSv2 does
    anything else -> 404

In a test's thread: `with ImdsStub() as stub: stub.notice(); ... stub.served` (`once`: the notice is served
to one GET, then 404 again). As a program (stdlib only, one file: a box host runs it with `python3 -c SOURCE`
in its own network namespace), the notice is on while NOTICE_FILE exists; each GET that served it adds a line
to SERVED_FILE, and with --once only the first does:

    python3 imds.py PORT NOTICE_FILE SERVED_FILE [--once]
"""
import http.server
import json
import os
import secrets
import sys
import threading

TOKEN_PATH = "/latest/api/token"
SPOT_PATH = "/latest/meta-data/spot/instance-action"
NOTICE = {"action": "terminate", "time": "2026-11-27T12:02:00Z"}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the test reads `requests` instead
        pass

    def _answer(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        stub = self.server.stub
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        stub.record("PUT", self.path, None)
        if self.path != TOKEN_PATH:
            return self._answer(404)
        if not (ttl.isdigit() and 1 <= int(ttl) <= 21600):
            return self._answer(400)
        token = secrets.token_hex(16)
        stub.tokens.add(token)
        self._answer(200, token.encode())

    def do_GET(self):
        stub = self.server.stub
        token = self.headers.get("X-aws-ec2-metadata-token")
        stub.record("GET", self.path, token)
        if token not in stub.tokens:
            return self._answer(401)
        if self.path != SPOT_PATH:
            return self._answer(404)
        notice = stub.take_notice()
        self._answer(404) if notice is None else self._answer(200, json.dumps(notice).encode())


class ImdsStub(object):
    """The stub on 127.0.0.1 (a free port), served by a thread until `stop()`."""

    def __init__(self, port=0, once=True):
        self.once = once
        self.tokens = set()
        self.requests = []  # (method, path, token) of every request, in order
        self.served = 0  # GETs that got the notice
        self._notice = None
        self._lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.server.daemon_threads = True
        self.server.stub = self
        self.thread = threading.Thread(target=self.server.serve_forever, name="imds-stub", daemon=True)

    @property
    def endpoint(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def record(self, method, path, token):
        with self._lock:
            self.requests.append((method, path, token))

    def notice(self, notice=None):
        """From now on GETs get a notice (one GET only, with `once`)."""
        with self._lock:
            self._notice = dict(notice or NOTICE)

    def clear(self):
        with self._lock:
            self._notice = None

    def take_notice(self):
        with self._lock:
            notice = self._notice
            if notice is not None:
                self.served += 1
                if self.once:
                    self._notice = None
            return notice


class _FileStub(ImdsStub):
    """The program's stub: the notice is on while a file exists; what it served goes to another file."""

    def __init__(self, port, notice_file, served_file, once):
        ImdsStub.__init__(self, port, once)
        self.notice_file, self.served_file = notice_file, served_file

    def take_notice(self):
        with self._lock:
            if not os.path.exists(self.notice_file) or (self.once and self.served):
                return None
            self.served += 1
            with open(self.served_file, "a") as f:
                f.write(json.dumps(NOTICE) + "\n")
            return dict(NOTICE)


def main(argv):
    port, notice_file, served_file = int(argv[0]), argv[1], argv[2]
    stub = _FileStub(port, notice_file, served_file, once="--once" in argv[3:])
    sys.stdout.write("listening %s\n" % stub.endpoint)
    sys.stdout.flush()
    stub.server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
