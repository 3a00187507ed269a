"""Every bound of work over SSH, in seconds: the one transport's own (connecting, a command, an SFTP request,
ending a remote command, the liveness watch) and the budgets of the cluster steps built on it (a booting
instance to answer, its user data to finish, the install, the upload, repair's reachability probe).
"""
from __future__ import annotations

# the transport
CONNECT = 10.0  # TCP connect, SSH banner, authentication, opening a channel: each, per try
COMMAND = 60.0  # a short remote command: `true`, a test of a file, an import check
SFTP_REQUEST = 60.0  # one SFTP request (not a whole file): a host that stops answering raises
KILL = 5.0  # signalling a remote command's process group, and waiting for the signal's answer
PID_WAIT = 5.0  # after a deadline, how long the pid line of the command to end may still take
PING_INTERVAL = 2.0  # Connection.watch asks the server for an answer this often ...
PING_TIMEOUT = 8.0  # ... and gives the host up after this long without one (a silent partition)

# the cluster steps (launch cluster up --wait ssh, repair)
BOOT = 600.0  # a new instance to answer SSH
READY = 900.0  # its user data to write the ready marker
POLL = 10.0  # between two tries of a host that did not answer yet
INSTALL = 1800.0  # the venv and mxlaunch[extra] installed on one host
UPLOAD = 3600.0  # one host's share of the wheelhouse (the gpu extra's is ~2 GB)
PROBE_ATTEMPTS = 3  # repair: an instance is unreachable when this many tries in a row fail ...
PROBE = 30.0  # ... each bounded (connecting is CONNECT of it)
PROBE_INTERVAL = 5.0  # ... this far apart
