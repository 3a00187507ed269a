"""`launch train`: plan a parameter-server job, start it, watch it, report it. The options become one checked
request (launcher/jobs/request.py); each mode of the job is a function of launcher/jobs/modes.py."""
from __future__ import annotations

import click

from mxlaunch.launcher.jobs import modes
from mxlaunch.launcher.jobs.request import parse


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--local", is_flag=True, help="Run every role on this machine, bound to 127.0.0.1.")
@click.option("--hosts", metavar="FILE|h1,h2:2222", help="Run over SSH on these hosts.")
@click.option("--cluster", metavar="NAME", help="Run over SSH on the hosts of a `launch cluster`.")
@click.option("-n", "--num-workers", type=int, help="Number of workers.")
@click.option("-s", "--num-servers", type=int, help="Number of servers (default: as many as workers).")
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory (default runs/<UTC time>-<id>).")
@click.option("--env", "env", multiple=True, metavar="KEY[=VALUE]",
              help="Environment for every role; KEY alone takes its value from this environment (keep secrets "
                   "off the command line).")
@click.option("--env-file", "env_files", multiple=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="KEY=VALUE lines (KEY alone: from this environment) for every role, before --env.")
@click.option("--env-worker", multiple=True, metavar="KEY[=VALUE]", help="Environment for workers only.")
@click.option("--env-server", multiple=True, metavar="KEY[=VALUE]", help="Environment for servers only.")
@click.option("--workdir", type=click.Path(file_okay=False),
              help="Directory the roles run in (default: --local: here; --hosts: this directory's path, on the "
                   "hosts; --cluster: the cluster's EFS workdir; --resume: the job's).")
@click.option("--python", metavar="PATH", help="Python on the hosts that runs each role's guard (default: --hosts: "
              "this launcher's interpreter path; --cluster: the cluster's venv on EFS; --resume: the job's).")
@click.option("--ssh-key", type=click.Path(dir_okay=False), help="SSH private key.")
@click.option("--ssh-user", help="SSH user (default: the hostfile's, else yours; --cluster: the cluster's login "
              "user).")
@click.option("--known-hosts", type=click.Path(dir_okay=False), help="known_hosts file to verify hosts with.")
@click.option("--accept-new-host-keys", is_flag=True, help="Trust and record hosts seen for the first time.")
@click.option("--timeout", type=float, metavar="SECONDS", help="Stop the whole job after this long.")
@click.option("--grace", type=float, default=1.0, show_default=True, metavar="SECONDS",
              help="Between SIGTERM and SIGKILL when roles are stopped.")
@click.option("--scheduler-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="Try this scheduler port first (default: a random free one); another is tried if it is taken.")
@click.option("--dry-run", is_flag=True, help="Print the plan (job.yaml) and exit.")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="Run the job of RUN_DIR again, where it ran, from the newest checkpoint its workers wrote. "
                   "--resume RUN_DIR --hosts FILE: a --hosts job on other hosts (as many worker slots); "
                   "--cluster NAME --detach --resume RUN: a detached run, on the cluster as it is now.")
@click.option("--num-epochs", type=int, metavar="N",
              help="With --resume: train up to N epochs (more than the newest checkpoint's epoch).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="When a role fails or a host is lost, start the job again from its newest whole checkpoint "
                   "(from scratch if it has none yet), in the same run directory, up to N times.")
@click.option("--restart-delay", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="Wait between a failed attempt and the next (Ctrl-C ends the wait and the launch).")
@click.option("--watch-spot/--no-watch-spot", default=None,
              help="Watch each host's spot interruption notice (EC2 metadata service, IMDSv2); on a notice rank 0 "
                   "saves a checkpoint where it is and the job stops (restarted from it with --max-restarts). "
                   "Default: on for --cluster, off for --local and --hosts; --resume keeps the job's.")
@click.option("-v", "--verbose", is_flag=True, help="Show every line of every role, ps-lite's and MXNet's engine "
              "lines too (the logs always have them).")
@click.option("--detach", is_flag=True,
              help="With --cluster: run the launcher itself on instance 0 (in the cluster's venv, its own session) "
                   "and return with the run id; the run directory is on EFS (see launch runs/logs/stop --cluster).")
@click.option("--detached-from", hidden=True, metavar="NAME")  # set by --detach on the launcher it starts
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def train(**options) -> None:
    """Run COMMAND as every role of an MXNet parameter-server job (1 scheduler, S servers, N workers).

    \b
    launch train --local -n 2 -s 1 -- trainer fit --network resnet ...
    launch train --resume runs/20260101-120000-ab12cd34 [--num-epochs 20]
    """
    modes.train(parse(**options))
