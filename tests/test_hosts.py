"""The hostfile grammar (design.md) and the pure placement of roles onto hosts."""
import pytest

from mxlaunch.exits import Exit
from mxlaunch.infra.transport.hosts import Host, HostfileError, parse_host, parse_hostfile_text, parse_hosts, place
from mxlaunch.templates import render

pytestmark = pytest.mark.timeout(30)


def write(tmp_path, text, name="hosts"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_hostfile_grammar_comments_blank_lines_slots_users_ports_ipv6(tmp_path):
    path = write(tmp_path, """\
# the cluster
10.0.0.1 slots=0          # scheduler + server only

ubuntu@gpu-1.example.com:2222 slots=4
  gpu2
[fe80::1]:2200
root@[::1]
2001:db8::7 slots=2
""")
    assert parse_hosts(path) == (
        Host("10.0.0.1", slots=0),
        Host("gpu-1.example.com", user="ubuntu", port=2222, slots=4),
        Host("gpu2"),
        Host("fe80::1", port=2200),
        Host("::1", user="root"),
        Host("2001:db8::7", slots=2),
    )


def test_comma_list_uses_the_same_parser():
    assert parse_hosts("h1,user@h2:2222, [::1]:22 slots=3") == (
        Host("h1"), Host("h2", user="user", port=2222), Host("::1", port=22, slots=3))


def test_single_bare_name_is_a_host_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_hosts("localhost") == (Host("localhost"),)
    (tmp_path / "myhosts").write_text("a\nb slots=2\n")
    assert parse_hosts("myhosts") == (Host("a"), Host("b", slots=2))  # an existing file wins


@pytest.mark.parametrize("line, why", [
    ("host:99999", "port '99999' is not a number in 1..65535"),
    ("host:ssh", "port 'ssh' is not a number"),
    ("host slots=-1", "slots must be a whole number"),
    ("host slots=two", "slots must be a whole number"),
    ("host gpus=2", "unknown field 'gpus=2'"),
    ("host slots=1 slots=2", "slots given twice"),
    ("[10.0.0.1]:22", "brackets are only for IPv6"),
    ("[::1:22", "'[' without ']'"),
    ("[::1]22", "unexpected '22' after ']'"),
    ("[zz::1]:22", "'zz::1' is not a valid IPv6 address"),
    ("300.1.1.1", "'300.1.1.1' is not a valid IPv4 address"),
    ("bad!host", "'bad!host' is not a valid host name"),
    ("us er@host", "unknown field"),
    ("@host", "'' is not a valid user name"),
    (":22", "missing host"),
])
def test_bad_line_names_file_line_and_what_was_expected(tmp_path, line, why):
    path = write(tmp_path, f"# ok\ngood\n{line}\n")
    with pytest.raises(HostfileError) as err:
        parse_hosts(path)
    message = err.value.format_message()
    assert message.startswith(f"{path}:3: ")
    assert why in message
    assert "expected [user@]host[:port] [slots=N]" in message
    assert err.value.exit_code == Exit.USAGE


def test_bad_entry_in_a_list_names_the_entry():
    with pytest.raises(HostfileError, match=r"^--hosts entry 2: port '0' is not a number"):
        parse_hosts("h1,h2:0")
    with pytest.raises(HostfileError, match=r"^--hosts entry 2: empty entry"):
        parse_hosts("h1,,h3")


def test_empty_missing_and_duplicate(tmp_path):
    with pytest.raises(HostfileError, match="no hosts in the hostfile"):
        parse_hosts(write(tmp_path, "# nothing\n\n"))
    with pytest.raises(HostfileError, match="hostfile ./nope does not exist"):
        parse_hosts("./nope")
    path = write(tmp_path, "a\nb\nA slots=2\n")
    with pytest.raises(HostfileError, match=rf"{path}:3: host A is listed twice \(first at {path}:1\)"):
        parse_hosts(path)
    assert len(parse_hosts("a:22,a:2222")) == 2  # different sshd ports: different hosts


def test_cli_shows_one_line_and_exit_2(tmp_path):
    """What a user sees: `launch`'s error handler turns a bad hostfile into one line, exit 2."""
    import subprocess
    import sys
    path = write(tmp_path, "ok\nhost:abc\n")
    code = ("from mxlaunch.errors import run_cli; import click\n"
            "from mxlaunch.infra.transport.hosts import parse_hosts\n"
            "@click.command()\n@click.argument('spec')\ndef c(spec): parse_hosts(spec)\n"
            "run_cli(c, 'launch', [%r])" % path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"launch: error: {path}:2: port 'abc' is not a number in 1..65535, got 'host:abc' "
        f"(expected [user@]host[:port] [slots=N])"]


def test_rendered_hostfile_parses_back_to_the_same_hosts():
    hosts = (Host("10.0.0.1", slots=0), Host("gpu", user="u", port=2222, slots=4),
             Host("fe80::1", port=22), Host("::1"))
    assert parse_hostfile_text(render("hosts.j2", hosts=hosts)) == hosts


def test_target_round_trips():
    for text in ("h", "u@h:2", "[::1]:22", "u@::1", "10.1.2.3"):
        assert parse_host(text).target == text


# ---------------------------------------------------------------------------------------- placement

def test_placement_scheduler_first_servers_round_robin_workers_by_slots():
    a, b, c = Host("10.0.0.1", slots=0), Host("10.0.0.2", slots=2), Host("10.0.0.3", slots=1)
    p = place([a, b, c], num_workers=3, num_servers=4)
    assert p.scheduler == a
    assert p.servers == (a, b, c, a)
    assert p.workers == (b, b, c)
    assert p.roles()[0] == ("scheduler", 0, a)
    assert [r for r, _, _ in p.roles()] == ["scheduler"] + ["server"] * 4 + ["worker"] * 3
    assert p.hosts_used() == (a, b, c)


def test_acceptance_layout_scheduler_and_server_on_first_workers_on_others():
    hosts = parse_hosts("10.9.0.2 slots=0,10.9.0.3,10.9.0.4")
    p = place(hosts, num_workers=2, num_servers=1)
    assert (p.scheduler.address, p.servers[0].address) == ("10.9.0.2", "10.9.0.2")
    assert [h.address for h in p.workers] == ["10.9.0.3", "10.9.0.4"]


def test_placement_uses_only_as_many_slots_as_needed():
    a, b = Host("a", slots=4), Host("b", slots=4)
    assert place([a, b], num_workers=2, num_servers=0).workers == (a, a)
    assert place([a, b], num_workers=2, num_servers=0).hosts_used() == (a,)


def test_placement_errors():
    from mxlaunch.errors import UsageError
    with pytest.raises(UsageError, match="3 workers need 3 slots but the hosts offer 2"):
        place([Host("a"), Host("b")], 3, 1)
    with pytest.raises(UsageError, match="no hosts"):
        place([], 1, 1)
    with pytest.raises(UsageError, match="at least 1 worker"):
        place([Host("a")], 0, 1)
