"""What tests/ and bench/ share, beside the product and never installed: the SSH test bed (bed, its parts
system, sshd, users, require), the cluster in a box (box, box_server, image, imds), the launcher's job harness
and a trivial dist_sync workload (jobs, pushpull, procs, streams, scan), moto's missing placement groups (aws),
the xdist grouping (xdist_groups), and the checkout itself (checkout, pins, wheels). The product imports none
of it; tests import it through pytest's `pythonpath`, bench scripts and subprocesses from the checkout."""
