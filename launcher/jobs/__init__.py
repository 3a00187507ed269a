"""The job layer: plan, run, watch, restart and record a parameter-server job.

  attempt          one attempt of a job, run and reported
  checkpoints      which checkpoints a job has, on whichever hosts hold them
  detached         jobs that run on without this machine (a cluster's instance 0)
  env_options      --env / --env-file / --env-worker / --env-server
  instance0        `launch ...` on a cluster's instance 0: its command line built in one place
  job              the job lifecycle: start the roles, watch them, tear down on the first failure
  job_record       job.yaml: the record of a job (JobRecord), written and read back
  launcher_record  launcher.json: whether a run's launcher still runs, and where
  log_files        a role's log read as it grows, in bounded memory (`launch logs`)
  lost             `launch stop --cluster`: a detached run whose instance 0 is gone is marked lost
  modes            `launch train`, one function per mode: new, resume, detach, detached run, restarts
  outcome          how one attempt ended: reason, exit status, message
  output           role output: logs, the console, progress
  plan             JobSpec -> JobPlan: pure data from pure functions
  plotting         accuracy per epoch from metrics.jsonl
  ports            the job's ports, without the probe-then-release race
  preflight        SSH mode: every host proven ready before any role starts
  progress         training progress from MXNet's own log lines
  request          `launch train`'s options as one checked request (TrainRequest)
  restarts         --max-restarts: run again from the newest whole checkpoint
  resume           --resume: a run's job again, from the newest checkpoint every worker can load
  rundir           the run directory: its files' places, made and refused
  runners          the runner of a target: local, or SSH after the preflight
  spot             spot interruption notices in one attempt
  summary          summary.json and the final report
  where            where a job runs (JobTarget), and where it meets the cloud
  workload         what the launcher reads from or adds to the workload's command line
"""