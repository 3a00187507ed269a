"""Benchmark (not a test): AWS API calls and wall time of `launch cluster up` and `down` for 1, 8 and 64
instances against a moto server on 127.0.0.1 (HTTP, via AWS_ENDPOINT_URL).

Progress goes to stderr, the table to stdout. Calls are counted with a botocore `before-parameter-build` event hook on every client the AWS boundary creates. moto has
no placement-group API: those calls are answered locally (testkit/aws.py) but still
counted, so the counts are what real AWS would receive (less botocore retries, none here).

    .venv/bin/python bench/cluster_moto.py [--sizes 1,8,64]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# testkit/ (the test support) is not installed: it is found beside bench/, in this checkout
sys.path.append(str(ROOT))
from testkit.aws import FakePlacementGroups  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,64")
    parser.add_argument("--instance-type", default="g5.12xlarge")
    args = parser.parse_args()

    import logging
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    tmp = tempfile.mkdtemp(prefix="mxlaunch-bench-")
    for var in [v for v in os.environ if v.startswith("AWS_")]:
        del os.environ[var]
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_CONFIG_FILE=os.path.join(tmp, "none"), AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "none"),
                      AWS_EC2_METADATA_DISABLED="true", MXLAUNCH_HOME=os.path.join(tmp, "home"))

    import click
    import mxlaunch.infra.cloud.aws
    from mxlaunch.launcher.cli.cluster import cluster
    from mxlaunch.errors import run_cli

    counts: collections.Counter = collections.Counter()
    pgs = FakePlacementGroups()
    original = mxlaunch.infra.cloud.aws.Aws.client

    def client(self, service):
        fresh = service not in self._clients
        c = original(self, service)
        if fresh:  # once per API call (retries are inside); unlike before-call, never short-circuited
            c.meta.events.register("before-parameter-build", lambda event_name, **_: counts.update([event_name[23:]]))
            pgs.install(c)
        return c
    mxlaunch.infra.cloud.aws.Aws.client = client
    root = click.Group("launch", commands={"cluster": cluster})

    def launch(*argv):
        counts.clear()
        start = time.perf_counter()
        try:
            run_cli(root, "launch", [str(a) for a in argv])
        except SystemExit as exc:
            if exc.code:
                raise RuntimeError(f"launch {' '.join(map(str, argv))} exited {exc.code}")
        return time.perf_counter() - start, dict(counts)

    launch("cluster", "list")  # warm-up: loads the service models once, as every later command finds them
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        name = f"bench{n}"
        up_s, up_calls = launch("cluster", "up", name, "--instance-type", args.instance_type, "--count", n,
                                "--ssh-cidr", "203.0.113.7/32", "--ami", "ami-dca37ea5", "--wait", "running", "--yes")
        again_s, again_calls = launch("cluster", "up", name, "--instance-type", args.instance_type, "--count", n,
                                      "--ssh-cidr", "203.0.113.7/32", "--ami", "ami-dca37ea5", "--wait", "running",
                                      "--yes")
        down_s, down_calls = launch("cluster", "down", name, "--yes")
        rows.append((n, up_calls, up_s, again_calls, again_s, down_calls, down_s))
    server.stop()

    print("\n| N | up: calls | up: wall s | up again: calls | up again: wall s | down: calls | down: wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, uc, us, ac, as_, dc, ds in rows:
        print(f"| {n} | {sum(uc.values())} | {us:.2f} | {sum(ac.values())} | {as_:.2f} | {sum(dc.values())} | "
              f"{ds:.2f} |")
    n, uc, _, ac, _, dc, _ = rows[-1]
    for label, calls in (("up", uc), ("up again", ac), ("down", dc)):
        print(f"\n{label} (N={n}): " + ", ".join(f"{op} {c}" for op, c in sorted(calls.items())))


if __name__ == "__main__":
    main()
