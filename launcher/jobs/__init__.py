"""The job layer: plan, run, watch, restart and record a parameter-server job."""
