"""`launch stop --cluster NAME RUN`: the run's launcher is stopped by the same command on instance 0, where it
runs. A detached launcher runs on the instance 0 it was started on; after a spot loss or `launch cluster repair`
instance 0 may be another instance, which cannot tell whether the launcher still lives elsewhere (exit 10,
RunsElsewhere) and has no AWS credentials to ask. This machine has them: it asks AWS which of the cluster's
instances are pending or running, and instance 0 marks the run lost when the launcher's instance is none of
them (launcher/cli/stop.py), so that `launch runs` and `launch logs --follow` see the run ended.

    stop_on_cluster(name, run, timeout) -> exit status
"""
from __future__ import annotations

from typing import List, Optional

import click

from mxlaunch.exits import Exit
from mxlaunch.launcher.jobs import detached, instance0

LIVE_STATES = ("pending", "running")  # where a process can still run: stopping, stopped or gone ends it


def live_addresses(name: str, region: Optional[str] = None) -> List[str]:
    """The private addresses of cluster `name`'s instances that AWS lists as pending or running."""
    from mxlaunch.infra.cloud import local_state  # heavy
    from mxlaunch.infra.cloud.aws import Aws  # heavy
    from mxlaunch.infra.cloud.record import find_instances  # heavy

    aws = Aws(region=region or local_state.read_meta(name).region)
    return [i.private_ip for i in find_instances(aws, name, states=LIVE_STATES) if i.private_ip]


def stop_on_cluster(name: str, run: str, timeout: float) -> int:
    """`launch stop RUNS/RUN` on instance 0; when its launcher ran on another instance (exit 10), once more
    with the addresses AWS lists as live, so that a launcher gone with its instance is marked lost there."""
    run_dir = detached.run_dir_of(run)
    said: List[str] = []
    code = instance0.launch(name, ["stop", run_dir], dict(timeout=timeout), err=said.append)
    if code != Exit.ELSEWHERE:
        for line in said:
            click.echo(line, err=True)
        return code
    return instance0.launch(name, ["stop", run_dir], dict(timeout=timeout, live_instances=",".join(
        live_addresses(name))))
