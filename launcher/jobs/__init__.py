"""The job layer: plan, run, watch, restart and record a parameter-server job.

  attempt          one attempt of a job, run and reported
  checkpoints      which checkpoints a job has, on whichever hosts hold them
  detached         jobs that run on without this machine (a cluster's instance 0)
  env_options      --env / --env-file / --env-worker / --env-server
  job              the job lifecycle: start the roles, watch them, tear down on the first failure
  launcher_record  launcher.json: whether a run's launcher still runs, and where
  outcome          how one attempt ended: reason, exit status, message
  output           role output: logs, the console, progress
  plan             JobSpec -> JobPlan: pure data from pure functions
  plotting         accuracy per epoch from metrics.jsonl
  ports            the job's ports, without the probe-then-release race
  preflight        SSH mode: every host proven ready before any role starts
  progress         training progress from MXNet's own log lines
  restarts         --max-restarts: run again from the newest whole checkpoint
  rundir           the run directory and job.yaml
  runners          the runner of a target: local, or SSH after the preflight
  spot             spot interruption notices in one attempt
  summary          summary.json and the final report
  workload         what the launcher reads from or adds to the workload's command line
"""