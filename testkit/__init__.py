"""What tests/ and bench/ share: the SSH test bed (bed), the launcher's job harness and a trivial dist_sync
workload (jobs, pushpull), and moto's missing placement groups (aws). Not used by the product itself."""
