"""The machines: reaching hosts (transport) and making them on EC2 (cloud). Knows nothing of jobs or commands.

  transport  hosts, the one SSH connection, role runners, the programs sent to hosts
  cloud      EC2 + EFS: a cluster spec in, a running cluster (and its local state) out
"""