"""EC2 and EFS: a cluster spec in, a running cluster (and its local state) out. AWS is reached through `aws` only;
tags on the cluster's resources are the state.

  aws             the AWS boundary: client factory, the single `call` seam, error translation, --dry-run
  catalog         instance types: GPUs, price estimates, types the MXNet wheel cannot run and what replaces them
  cluster_target  the hosts, interpreter, workdir and SSH settings of a cluster, for a job
  deadlines       the --max-hours deadline: recorded, inherited by every launch, what `status` says of it
  install         `up --wait ssh`: wait for the instances, install mxlaunch into the EFS venv, check the GPUs
  local_state     the cluster's local files: key (0600), cluster.json, hostfile, ssh config, known_hosts
  owner           where a cluster lives (account, region) and who owns it: the checks before acting on one
  policy          the least-privilege IAM policy, as data
  prelaunch       reads `up` makes before creating anything: network, image, zones, quota
  provision       `up`: idempotent steps recorded in a ledger; rollback on failure
  record          ClusterRecord (what exists, found by tag) and the Ledger of one `up`
  repair          a cluster made whole: unreachable instances replaced
  run_instances   `up`'s instance step: zone by zone, spot or on-demand
  signals         SIGTERM/SIGHUP during `up` roll back as Ctrl-C does
  spec            ClusterSpec: the user's request, validated before any AWS call; the tags
  teardown        `down` and rollback: delete in dependency order
  userdata        the instances' user data
  wait            bounded polls (no sleep as synchronisation)
"""