"""The OpenSSH server of a bed host: its configuration and the ForceCommand wrapper that records every
session's command (testkit.bed writes them per host; `Bed.session_commands` reads the record)."""
from __future__ import annotations

import shutil

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
COMMANDS_FILE = "commands"

SSHD_CONFIG = """\
ListenAddress {address}:22
ListenAddress [{address6}]:22
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PermitRootLogin {permit_root}
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
UseDNS no
MaxStartups 100
MaxSessions 100
PrintMotd no
LogLevel VERBOSE
Subsystem sftp {sftp}
ForceCommand {record} {dir}/{commands}
"""

# Every session of a bed host runs this first (sshd's ForceCommand): it appends the exact command the client
# asked for (NUL-terminated: commands hold newlines) to the host's record, then runs it as sshd would have,
# with the user's shell. A subsystem request arrives here too, as its configured command (`internal-sftp` is
# sshd's in-process server, which a shell cannot run: the sftp-server program stands in for it).
RECORD_COMMAND = """\
#!/bin/sh
cmd="${{SSH_ORIGINAL_COMMAND-}}"
unset SSH_ORIGINAL_COMMAND
printf '%s\\0' "$cmd" >> "$1"
case "$cmd" in
  internal-sftp|"internal-sftp "*) exec {sftp} ;;
  "") exec "${{SHELL:-/bin/sh}}" -l ;;
esac
exec "${{SHELL:-/bin/sh}}" -c "$cmd"
"""


def config(address: str, address6: str, dir: str, record: str, authorized_keys: str,
           permit_root: str = "prohibit-password") -> str:
    """sshd_config of one host. `authorized_keys`: one file for every user (the plain bed), or a path relative
    to each user's home (`.ssh/authorized_keys`: an instance, where cloud-init puts the key)."""
    return SSHD_CONFIG.format(address=address, address6=address6, dir=dir, authorized_keys=authorized_keys,
                              permit_root=permit_root, sftp=SFTP_SERVER, record=record, commands=COMMANDS_FILE)


def record_command() -> str:
    return RECORD_COMMAND.format(sftp=SFTP_SERVER)
