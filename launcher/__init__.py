"""`launch`: the commands (cli) over the job layer (jobs).

  cli   every click command: launch train/runs/logs/stop/plot and the `launch cluster` group
  jobs  plan, run, watch, restart and record a parameter-server job
"""