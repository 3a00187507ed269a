"""A trivial MXNet dist_sync job: every worker pushes and pulls one key for N rounds.

Run as every role of a job (like MXNet's own tracker does): the scheduler and the servers run on MXNet's library
alone (trainer/ps_scheduler.py), or by `import mxnet` with PUSHPULL_MXNET_IMPORT=1. Options make a worker fail or
dawdle, and --dump records exactly what a worker received (argv and TORTURE_* environment) for the torture test.
"""
import argparse
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--rounds", type=int, default=5)
parser.add_argument("--round-seconds", type=float, default=0.0, help="pause per round (to keep a job running)")
parser.add_argument("--fail-rank", type=int, default=-1)
parser.add_argument("--fail-code", type=int, default=3)
parser.add_argument("--fail-round", type=int, default=0)
parser.add_argument("--dump", help="worker writes DUMP.<rank>.json: its argv and TORTURE_* environment")
parser.add_argument("rest", nargs="*", help="anything: recorded by --dump")
args, unknown = parser.parse_known_args()

if os.environ.get("DMLC_ROLE") in ("scheduler", "server") and not os.environ.get("PUSHPULL_MXNET_IMPORT"):
    # as the trainer's scheduler, on MXNet's library alone: ~1.5 s of CPU less per role start, and the suite
    # starts dozens of these jobs. A server here is sent no optimizer (the workers only push and pull), so it
    # needs nothing of MXNet's Python package either. PUSHPULL_MXNET_IMPORT=1: both by `import mxnet`, as in a
    # user's own script.
    from mxlaunch.trainer import ps_scheduler

    ps_scheduler.run()

import mxnet as mx  # noqa: E402  (with PUSHPULL_MXNET_IMPORT=1, servers and the scheduler end in this import)

kv = mx.kv.create(os.environ.get("PUSHPULL_KVSTORE", "dist_sync"))
rank = kv.rank
print("pushpull worker rank=%d of %d ready" % (rank, kv.num_workers), flush=True)
if args.dump:
    with open("%s.%d.json" % (args.dump, rank), "w", encoding="utf-8") as f:
        json.dump({"argv": sys.argv[1:], "env": {k: v for k, v in os.environ.items() if k.startswith("TORTURE_")}},
                  f, ensure_ascii=False)
shape = (4, 4)
kv.init(7, mx.nd.zeros(shape))
out = mx.nd.zeros(shape)
for i in range(args.rounds):
    if rank == args.fail_rank and i == args.fail_round:
        print("pushpull worker rank=%d failing with code %d" % (rank, args.fail_code), flush=True)
        os._exit(args.fail_code)  # a clean exit would block in kvstore's finalize barrier
    kv.push(7, mx.nd.ones(shape) * (rank + 1))
    kv.pull(7, out=out)
    out.wait_to_read()
    print("pushpull worker rank=%d round=%d value=%g" % (rank, i, out.asnumpy()[0, 0]), flush=True)
    if args.round_seconds:
        time.sleep(args.round_seconds)
print("pushpull worker rank=%d done" % rank, flush=True)
