"""infra: `launch cluster` — EC2 GPU clusters with a shared EFS file system, tags as the state.

Modules, one job each:
  catalog   instance types: GPUs, price estimates, retired types and what replaces them
  spec      ClusterSpec: the user's request, validated before any AWS call
  aws       the AWS boundary: client factory, the single `call` seam, error translation, --dry-run
  record    ClusterRecord: what exists, found by the tag launch:cluster=NAME
  provision `up`: idempotent steps with a ledger; rollback on failure
  teardown  `down` and rollback: delete in dependency order, bounded DependencyViolation retry
  wait      bounded polls (no sleep as synchronisation)
  state     local state dir: key (0600), cluster.json, hostfile, ssh config
  remote    --wait ssh: SSH readiness, wheel build and install into the EFS venv
  targets   cluster_target(): what `launch train --cluster NAME` needs
  cli       the click commands
"""
