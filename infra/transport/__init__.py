"""Reaching hosts: the one Host type, the one SSH connection, the role runners, the programs sent to hosts."""
