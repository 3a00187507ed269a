"""The console of `launch train`: engine chatter only in the logs, a live line on a terminal, a plain line per
epoch elsewhere, the final line; and the plan's rule that makes worker-i MXNet rank i. No processes."""
import io

import pytest

from mxlaunch.launcher.jobs import summary
from mxlaunch.infra.transport.hosts import Host, parse_hosts
from mxlaunch.launcher.jobs.output import RoleOutputSink, is_engine_chatter, times_path
from mxlaunch.launcher.jobs.plan import JobSpec, node_ports, plan_job, rank_order
from mxlaunch.launcher.jobs.progress import Progress

PS_LITE = [
    "[03:34:15] ../3rdparty/ps-lite/src/van.cc:310: Bind to role=scheduler, id=1, ip=127.0.0.1, port=26957, is_recovery=0",
    "[03:34:17] ../3rdparty/ps-lite/src/van.cc:199: Barrier count for 4 : 1",
    "[03:34:17] ../3rdparty/ps-lite/src/van.cc:257: W[11] is connected to others",
    "[03:34:22] ../3rdparty/ps-lite/src/./zmq_van.h:51: W[9] is stopping",
    "[03:34:17] ../src/executor/graph_executor.cc:1991: Subgraph backend MKLDNN is activated.",
    "[03:34:17] src/io/iter_image_recordio_2.cc:177: ImageRecordIOParser2: x.rec, use 1 threads for decoding..",
]
WORKLOAD = [
    "2026-11-27 03:34:17,288 Node[0] Epoch[0] Batch [0-20]\tSpeed: 373.87 samples/sec\taccuracy=0.350000",
    "2026-11-27 03:34:21,007 Node[0] Update[91]: Change learning rate to 1.00000e-02",
    "pushpull worker rank=1 of 2 ready",
    "MXNetError: Check failed: my_node_.port != -1 (-1 vs. -1) : bind failed",
    "[12:00:00] a line a program prints itself, with a time but no source:line",
    "",
]
RANK0_LINES = [  # what worker-0 of a 3-epoch trainer job logs, in order (lines of the trainer's own format)
    "N Node[0] rank 0 of 2: 1438 examples, 45 updates (global batches of 2 x 16) per epoch, epochs 0..2",
    "N Node[0] Epoch[0] Learning rate=0.1",
    "N Node[0] Epoch[0] Batch [0-20]\tSpeed: 373.87 samples/sec\taccuracy=0.350000",
    "N Node[0] Epoch[0] Batch [20-40]\tSpeed: 427.51 samples/sec\taccuracy=0.715625",
    "N Node[0] Epoch[0] Train-accuracy=0.565278",
    "N Node[0] Epoch[0] Time cost=1.775",
    "N Node[0] Epoch[0] Validation-accuracy=0.437326",
    "N Node[0] Epoch[1] Batch [0-20]\tSpeed: 467.97 samples/sec\taccuracy=0.850000",
]


@pytest.mark.parametrize("line", PS_LITE)
def test_engine_lines_are_chatter(line):
    assert is_engine_chatter(line)


@pytest.mark.parametrize("line", WORKLOAD)
def test_workload_lines_are_not(line):
    assert not is_engine_chatter(line)


def make_sink(tmp_path, **kw):
    (tmp_path / "logs").mkdir(exist_ok=True)
    spec = JobSpec(command=("x",), num_workers=2, num_servers=1, hosts=(Host.loopback(slots=2),))
    plan = plan_job(spec, "j", str(tmp_path), 20001)
    stream = io.StringIO()
    clock = iter(range(1000, 100000, 2))  # two fake seconds per line
    sink = RoleOutputSink(str(tmp_path), plan.roles, show_host=False, stream=stream, colour=False,
                          clock=lambda: float(next(clock)), **kw)
    return sink, stream


def test_chatter_goes_to_the_log_only_unless_verbose(tmp_path):
    for verbose in (False, True):
        sink, stream = make_sink(tmp_path, verbose=verbose, live=False)
        sink.line("scheduler", PS_LITE[1].encode() + b"\n")
        sink.line("worker-1", b"pushpull worker rank=1 of 2 ready\n")
        sink.close()
        assert ("Barrier count" in stream.getvalue()) is verbose
        assert "[worker 1] pushpull worker rank=1 of 2 ready\n" in stream.getvalue()
        assert (tmp_path / "logs" / "scheduler.log").read_text() == PS_LITE[1] + "\n"
        assert sink.tail("scheduler") == [PS_LITE[1]]  # the failure message still shows it
        assert (tmp_path / "logs" / "scheduler.log.times").read_text() == "1000.000\n"
        assert times_path(str(tmp_path / "logs" / "scheduler.log")).endswith("scheduler.log.times")


def test_without_a_terminal_one_plain_line_per_epoch_from_rank_0(tmp_path):
    sink, stream = make_sink(tmp_path, live=False)
    for line in RANK0_LINES:
        sink.line("worker-0", line.encode() + b"\n")
        sink.line("worker-1", line.replace("Node[0]", "Node[1]").replace("0.437326", "0.99").encode() + b"\n")
    sink.close()
    notices = [line for line in stream.getvalue().splitlines() if line.startswith("[launch]")]
    assert len(notices) == 1  # epoch 1 never finished
    assert notices[0].startswith("[launch] Epoch[0] 1/3  train 0.5653  validation 0.4373  lr 0.1  428 samples/s")
    assert "\r" not in stream.getvalue()


def test_on_a_terminal_one_live_line_redrawn_under_the_output(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the live line is cut to the terminal's width: a wide one here
    sink, stream = make_sink(tmp_path, live=True)
    for line in RANK0_LINES:
        sink.line("worker-0", line.encode() + b"\n")
    status = sink._status
    assert status.startswith("epoch 2/3  batch 20/45  468 samples/s  ETA ")
    assert status.endswith("validation 0.4373 (Epoch[0])  lr 0.1")
    sink.line("worker-1", b"hello\n")
    assert stream.getvalue().endswith("\r\033[K[worker 1] hello\n" + status)  # above the live line
    sink.close()
    assert stream.getvalue().endswith("\r\033[K")  # taken away before the final report
    assert "[launch] Epoch[" not in stream.getvalue()


def test_progress_eta_and_totals():
    p = Progress()
    p.feed(RANK0_LINES[0], 100.0)
    p.feed(RANK0_LINES[2], 104.0)  # 20 of 45 batches after 4 s: an epoch takes 9 s
    assert p.total_epochs() == 3 and p.batches == 45 and p.batch == 20
    assert p.eta(104.0) == pytest.approx((3 - 20 / 45) * 9.0)
    assert p.status(104.0) == "epoch 1/3  batch 20/45  374 samples/s  ETA 0:23"
    assert not p.feed("some other line", 105.0)


def test_final_line_names_status_epochs_accuracy_checkpoints_and_plot():
    records = [{"epoch": 0, "validation-accuracy": 0.5, "train-accuracy": 0.4},
               {"epoch": 1, "validation-accuracy": 0.97, "train-accuracy": 0.9},
               {"epoch": 2, "validation-accuracy": 0.96, "train-accuracy": 0.95}]
    metrics = summary.run_metrics(records, "metrics.jsonl", "/c/d", "/r/accuracy.png")
    assert (metrics.final_validation, metrics.best_validation, metrics.best_epoch) == (0.96, 0.97, 1)

    class Outcome:  # what final_line reads of a JobOutcome
        status, ended, started = 0, 12.0, 1.0
        plan = type("P", (), {"workers": (1, 2)})()

    line = summary.final_line(Outcome(), metrics)
    assert line == ("ok: all 2 workers exited 0 in 11.0s; 3 epochs (last Epoch[2]), validation accuracy 0.9600 "
                    "(best 0.9700 at Epoch[1]); checkpoints /c/d-NNNN.params; plot /r/accuracy.png")
    assert metrics.fields()["final_validation_accuracy"] == 0.96


# ------------------------------------------------------------------------------------------ ranks

def test_workers_are_numbered_in_ps_lites_rank_order_with_ports_ascending():
    """ps-lite sorts by DMLC_NODE_HOST as a string, descending, then by port: worker-i must sort i-th."""
    hosts = parse_hosts("10.0.0.1 slots=2,10.0.0.10:2222,10.0.0.9 slots=2")
    spec = JobSpec(command=("x",), num_workers=5, num_servers=2, hosts=hosts, local=False)
    plan = plan_job(spec, "j", "/r", 30000)
    workers = plan.workers
    assert [w.host.address for w in workers] == ["10.0.0.9", "10.0.0.9", "10.0.0.10", "10.0.0.1", "10.0.0.1"]
    ps_lite = sorted(workers, key=lambda w: (w.host.address, -int(w.env_dict()["PORT"])), reverse=True)
    assert [w.index for w in ps_lite] == [0, 1, 2, 3, 4]
    ports = [int(r.env_dict()["PORT"]) for r in plan.roles[1:]]
    assert ports == list(range(30001, 30008)) and "PORT" not in plan.scheduler.env_dict()
    assert node_ports(65530, 7) == tuple(range(65523, 65530))  # never past 65535, still ascending
    assert rank_order(()) == ()


def test_a_user_port_is_refused():
    from mxlaunch.errors import UsageError
    from mxlaunch.launcher.jobs.plan import parse_env_pair
    with pytest.raises(UsageError, match="set by the launcher"):
        parse_env_pair("PORT=1234")
