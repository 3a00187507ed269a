"""Programs that run on the job's hosts with nothing of mxlaunch installed there: one file each, standard
library only, Python >= 3.6. The launcher sends a program's source over SSH (`python -c SOURCE`, or on stdin
as the role guard's bootstrap does) and talks to it over stdin/stdout; each file's docstring is its protocol.

  roleguard        starts one role, streams its output, stops it when the launcher goes away
  host_check       one host's preflight checks: interpreter, mxnet, workdir, files, addresses, the scheduler's port,
                   and on GPU jobs its GPUs (nvidia-smi) and one real operation on each GPU asked for
  port_listener    holds the scheduler's address:port open while the other hosts probe it
  checkpoint_scan  a --model-prefix's checkpoints and the newest whole one, read where the files are
  run_file         one file of a run directory, read where it is: never through a link, bounded
  detach_starter   starts a detached launcher in its own session on a cluster's instance 0
"""
import os


def source(name):
    """The text of the remote program `name` (e.g. "host_check"), as it is sent to a host."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py"), encoding="utf-8") as f:
        return f.read()
