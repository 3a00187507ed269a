"""`launch plot`: epochs numbered as in metrics.jsonl on integer ticks, learning-rate changes marked, a label
per run, a title naming the runs, and the table of final/best values."""
import json

import pytest
from click.testing import CliRunner

from mxlaunch.launcher.jobs import plotting
from mxlaunch.launcher.cli.plot import plot

A = [{"epoch": e, "lr": lr, "train-accuracy": t, "validation-accuracy": v}
     for e, lr, t, v in ((0, 0.1, 0.5, 0.6), (1, 0.1, 0.8, 0.9), (2, 0.01, 0.9, 0.95), (3, 0.01, 0.92, 0.94))]
B = [{"epoch": e, "lr": 0.05, "train-accuracy": 0.3 + e / 10} for e in range(3)]  # no validation


def test_figure_numbers_epochs_as_the_logs_on_integer_ticks_and_marks_lr_changes():
    import matplotlib.pyplot as plt
    fig = plotting.figure([("first", A), ("second", B)])
    try:
        ax = fig.axes[0]
        curves = [line for line in ax.get_lines() if len(line.get_xdata()) > 2]
        assert sorted(list(c.get_xdata()) for c in curves) == [[0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]
        fig.canvas.draw()
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
        marks = [line for line in ax.get_lines() if line.get_linestyle() == ":" and len(line.get_xdata()) == 2]
        assert [m.get_xdata()[0] for m in marks] == [1.5]  # before Epoch[2], the first at lr 0.01
        assert [t.get_text() for t in ax.texts] == ["lr 0.01"]
        assert ax.get_title() == "Accuracy per epoch: first, second"
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend[:2] == ["first", "second"] and "learning rate changed" in legend
    finally:
        plt.close(fig)


def test_table_has_final_and_best_values():
    text = plotting.table([("first", A), ("second", B)])
    header, first, second = text.splitlines()
    assert header.split() == ["run", "epochs", "final", "train", "final", "validation", "best", "validation",
                              "best", "epoch", "final", "lr"]
    assert first.split() == ["first", "4", "0.9200", "0.9400", "0.9500", "2", "0.01"]
    assert second.split() == ["second", "3", "0.5000", "-", "-", "-", "0.05"]


def write_run(tmp_path, name, records):
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(run_dir)


def test_plot_command_labels_runs_and_prints_the_table(tmp_path):
    a, b = write_run(tmp_path, "a", A), write_run(tmp_path, "b", B)
    out = str(tmp_path / "both.png")
    result = CliRunner().invoke(plot, [a, b, "--label", "baseline", "-o", out])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split()[0] == "baseline" and lines[2].split()[0] == "b" and lines[-1] == out
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    result = CliRunner().invoke(plot, [a, "--label", "x", "--label", "y"])
    assert result.exit_code == 2 and "2 --label for 1 run directory" in result.stderr


@pytest.mark.parametrize("line", ['{"epoch": "x"}', '{"epoch": -1}', "not json", '{"lr": 0.1}'])
def test_a_damaged_metrics_line_is_named_or_skipped(tmp_path, line):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps(A[0]) + "\n" + line + "\n")
    with pytest.raises(Exception, match=r"metrics.jsonl:2: not an epoch record"):
        plotting.read_metrics(str(path))
    assert plotting.read_metrics(str(path), strict=False) == [A[0]]


def test_a_plot_that_cannot_be_written_is_one_line_naming_the_file(tmp_path):
    """-o in a folder that exists but takes no such file (procfs: not even root writes there): exit 2, not 70."""
    result = CliRunner().invoke(plot, [write_run(tmp_path, "a", A), "-o", "/proc/accuracy.png"])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "cannot write the plot /proc/accuracy.png" in result.stderr and result.stderr.count("\n") == 1
