"""Reaching hosts: the one Host type, the one SSH connection, the role runners, the programs sent to hosts.

  gpu_check     what to ask a host about its GPUs and how to judge the answer
  group         Group: one command on several hosts at once over lazily opened connections, an Outcome each
  hosts         Host, the one hostfile parser, the placement of roles onto hosts
  local_runner  LocalRunner: every role a local process under its guard
  remote        the programs sent to the hosts (standard library only)
  roles         Role and RoleId: a job's processes as the runners see them
  runner        the Runner seam and the events every runner reports
  ssh           Connection: one authenticated SSH connection per host; connect_all, parallel
  ssh_options   SSHOptions and Endpoint: where and how to reach a host, before connecting
  ssh_runner    SSHRunner: every role a guard at the end of an SSH channel
  target        JobTarget: where a job runs, however the user named it
  timeouts      every bound of work over SSH, in one place
  upload        local files into a folder of a host over SFTP, skipping those already there
"""