"""EC2 and EFS: a cluster spec in, a running cluster (and its local state) out."""
