"""The CLI: the exact config a command builds, its outputs, and one-line errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nnps.cli.main import app, main
from nnps.core.config import TrainConfig
from tests.conftest import MNIST_10K

runner = CliRunner()


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(args)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_train_builds_the_exact_config(tiny_npz: Path, tmp_path: Path) -> None:
    rd = tmp_path / "run"
    result = runner.invoke(app, ["train", "--data", str(tiny_npz), "--hidden", "16,8", "--activation", "tanh",
                                 "--output", "softmax", "--cost", "cross-entropy", "--optimizer", "nesterov", "--lr",
                                 "0.1", "--momentum", "0.8", "--l2", "0.001", "--schedule", "step", "--lr-step-epochs",
                                 "2", "--lr-gamma", "0.5", "--batch-size", "16", "--epochs", "2", "--checkpoint-every",
                                 "5", "--seed", "11", "--dtype", "float64", "--weight-init", "scaled",
                                 "--transport", "tcp", "--no-warm-start", "--run-dir", str(rd), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    expected = TrainConfig(data=str(tiny_npz), hidden=(16, 8), activation="tanh", output="softmax",
                           cost="cross-entropy", weight_init="scaled", optimizer="nesterov", lr=0.1, momentum=0.8,
                           l2=0.001, schedule="step", lr_step_epochs=2, lr_gamma=0.5, batch_size=16, epochs=2,
                           checkpoint_every=5, seed=11, dtype="float64", workers=0, transport="tcp",
                           warm_start=False)  # fmt: skip
    # --workers auto (the default) resolved to in-process for this tiny net, and said so
    assert json.loads((rd / "config.json").read_text()) == expected.to_dict()
    assert "--workers auto: in-process (" in result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["step"] == 30 and summary["final"] == str(rd / "final.npz")
    assert summary["metrics"]["epoch"] == 2


def test_seed_defaults() -> None:
    c = TrainConfig()
    assert (c.hidden, c.activation, c.output, c.cost, c.lr, c.batch_size, c.epochs, c.weight_init) == (
        (30,), "sigmoid", "sigmoid", "quadratic", 3.0, 10, 30, "normal")


def test_evaluate_and_predict(tmp_path: Path) -> None:
    rd = tmp_path / "r"
    res = runner.invoke(app, ["train", "--data", str(MNIST_10K), "--epochs", "1", "--run-dir", str(rd)])
    assert res.exit_code == 0, res.output
    ev = runner.invoke(app, ["evaluate", str(rd / "final.npz"), "--data", str(MNIST_10K), "--json"])
    assert ev.exit_code == 0, ev.output
    out = json.loads(ev.stdout)
    metrics = json.loads((rd / "metrics.jsonl").read_text().splitlines()[-1])
    assert out["accuracy"] == pytest.approx(metrics["test_accuracy"]) and out["examples"] == 10000
    assert np.array(out["confusion"]).sum() == 10000
    # a PNG of test image 0 (a 7), dark on light and twice the size: inverted, fitted and centred
    from PIL import Image

    from nnps.core.idx import read_images

    img = read_images(MNIST_10K / "t10k-images-idx3-ubyte.gz")[0]
    png = tmp_path / "seven.png"
    Image.fromarray(255 - img).resize((56, 56)).save(png)
    pr = runner.invoke(app, ["predict", str(rd / "final.npz"), str(png),
                             f"{MNIST_10K / 't10k-images-idx3-ubyte.gz'}:0", "--json"])  # fmt: skip
    assert pr.exit_code == 0, pr.output
    results = json.loads(pr.stdout)
    assert [r["prediction"] for r in results] == [7, 7]
    assert results[0]["note"] == "inverted (light background); 56x56, its ink fitted to 20x20 and centred"
    assert len(results[1]["activations"]) == 10


def test_evaluate_and_predict_take_a_run_directory_and_its_own_data(tmp_path: Path) -> None:
    rd = tmp_path / "held"
    res = runner.invoke(app, ["train", "--data", str(MNIST_10K), "--epochs", "1", "--workers", "0",
                              "--validation-fraction", "0.1", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0 and "validation accuracy" in res.output, res.output
    metrics = json.loads((rd / "metrics.jsonl").read_text().splitlines()[-1])
    val = json.loads(runner.invoke(app, ["evaluate", str(rd), "--split", "validation", "--json"]).stdout)
    assert (val["split"], val["examples"], val["checkpoint"]) == ("validation", 1000, str(rd / "final.npz"))
    assert val["accuracy"] == pytest.approx(metrics["test_accuracy"])  # what training measured on the held-out part
    test = json.loads(runner.invoke(app, ["evaluate", str(rd), "--json"]).stdout)  # no --data: the run's own
    assert (test["data"], test["split"], test["examples"]) == (str(MNIST_10K), "test", 10000)
    pr = runner.invoke(app, ["predict", str(rd), f"{MNIST_10K / 't10k-images-idx3-ubyte.gz'}:0", "--json"])
    assert pr.exit_code == 0 and json.loads(pr.stdout)[0]["prediction"] == 7, pr.output
    no_split = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert no_split.exit_code == 1


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["train", "--lrr", "3"], 2, "error: nnps train: No such option: --lrr (Possible options: --l2, --lr)"),
        (["train", "--hidden", "3,x"], 1, "error: --hidden must be comma-separated layer widths like 30 or 16,16, got '3,x'"),
        (["train", "--activation", "gelu"], 1, "error: --activation must be one of relu, sigmoid, tanh; got 'gelu'"),
        (["train", "--lr", "-1"], 1, "error: --lr must be positive, got -1.0"),
        (["train", "--data", "{missing}/dir"], 1, "error: {missing}/dir: no such file or directory"),
        (["train", "--resume"], 1, "error: --resume needs --run-dir, the run to continue"),
        (["train", "--transport", "shm"], 1, "error: --transport must be one of auto, unix, tcp, ray; got 'shm'"),
        # an option that would be ignored in the mode chosen is refused, echoing it
        (["train", "--lr-gamma", "0.5"], 1, "error: --lr-gamma 0.5 does nothing here: it applies with --schedule step"),
        (["train", "--momentum", "0.5"], 1,
         "error: --momentum 0.5 does nothing here: it applies with --optimizer momentum or nesterov"),
        (["train", "--workers", "0", "--transport", "tcp"], 1,
         "error: --transport tcp does nothing here: it applies with Ray workers (--workers N, or auto)"),
        (["train", "--workers", "0", "--no-warm-start"], 1, "error: --no-warm-start does nothing here: it applies "
         "with sync steps on Ray workers of an embedded Ray (no --address), the table not --partitioned"),
        (["evaluate", "/nonexistent.npz"], 1, "error: /nonexistent.npz: no such file"),
        (["evaluate", "/nonexistent"], 1, "error: /nonexistent: no checkpoint yet (neither final.npz nor ckpt-*.npz)"),
        (["data", "info", "cifar"], 1, "error: cifar: no such file or directory"),
        (["bench", "--workers", "0,2"], 1, "error: --workers must be positive integers, comma-separated, got '0,2'"),
        (["bench", "--batches", "10,x"], 1, "error: --batches must be positive integers, comma-separated, got '10,x'"),
    ],
)
def test_errors_are_one_line(args: list[str], code: int, message: str, capsys, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")  # a path this test knows is absent
    rc, out, err = run_main([a.replace("{missing}", missing) for a in args], capsys)
    assert (rc, err) == (code, message.replace("{missing}", missing) + "\n")


@pytest.mark.parametrize(("text", "fault"), [
    ("{", "not valid JSON (Expecting property name enclosed in double quotes"),
    ('{"hidden": "many"}', "a value of the wrong type (invalid literal for int() with base 10: 'm')"),
    ('{"lr": -2}', "--lr must be positive, got -2"),
    ('{"epochz": 3}', "unknown config keys ['epochz']"),
])  # fmt: skip
def test_an_edited_config_json_is_one_line_and_the_run_is_untouched(text: str, fault: str, tmp_path: Path,
                                                                    tiny_npz: Path, capsys) -> None:  # fmt: skip
    rd = tmp_path / "r"
    assert runner.invoke(app, ["train", "--data", str(tiny_npz), "--epochs", "1", "--run-dir", str(rd)]).exit_code == 0
    (rd / "config.json").write_text(text)
    before = {p.name: p.read_bytes() for p in rd.iterdir()}
    rc, _, err = run_main(["train", "--resume", "--run-dir", str(rd), "--epochs", "2"], capsys)
    assert rc == 1 and err.startswith(f"error: {rd / 'config.json'}: {fault}") and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in rd.iterdir()} == before


def test_corrupt_checkpoint_does_not_touch_the_run(tmp_path: Path, tiny_npz: Path, capsys) -> None:
    rd = tmp_path / "r"
    assert runner.invoke(app, ["train", "--data", str(tiny_npz), "--epochs", "2", "--run-dir", str(rd)]).exit_code == 0
    for ck in rd.glob("ckpt-*.npz"):
        ck.write_bytes(ck.read_bytes()[:100])  # every checkpoint is damaged
    ck = rd / "ckpt-000000048.npz"
    before = {p.name: p.read_bytes() for p in rd.iterdir()}
    rc, _, err = run_main(["train", "--data", str(tiny_npz), "--epochs", "3", "--run-dir", str(rd), "--resume",
                           "--workers", "0"], capsys)  # fmt: skip
    assert rc == 1 and err.startswith(f"error: {ck}: not a readable checkpoint (BadZipFile") and err.count("\n") == 1
    assert err.endswith(f"; no checkpoint of {rd} reads whole\n")
    assert {p.name: p.read_bytes() for p in rd.iterdir()} == before  # nothing written, nothing lost


def test_data_info_and_prepare(tiny_npz: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["data", "info", str(tiny_npz), "--json"])
    info = json.loads(res.stdout)
    assert (info["train"], info["test"], info["image_shape"]) == (240, 60, [6, 6]) and sum(info["train_classes"]) == 240
    res = runner.invoke(app, ["data", "prepare", str(tiny_npz), "--out", str(tmp_path / "pq")])
    assert res.exit_code == 0 and sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["test.parquet", "train.parquet"]
    again = json.loads(runner.invoke(app, ["data", "info", str(tmp_path / "pq"), "--json"]).stdout)
    assert again["fingerprint"] == info["fingerprint"]


def test_resume_needs_only_the_run_dir(tiny_npz: Path, tmp_path: Path) -> None:
    rd = tmp_path / "r"
    args = ["train", "--data", str(tiny_npz), "--hidden", "12", "--lr", "0.5", "--epochs", "3", "--workers", "0"]
    first = [*args, "--schedule", "step", "--lr-gamma", "0.5", "--run-dir", str(rd), "--steps", "30",
             "--checkpoint-every", "10"]  # fmt: skip
    assert runner.invoke(app, first).exit_code == 0
    res = runner.invoke(app, ["train", "--run-dir", str(rd), "--resume", "--steps", "60"])
    assert res.exit_code == 0, res.output
    saved = json.loads((rd / "config.json").read_text())
    # the resumed run kept what it was not told to change, --lr-gamma too
    assert (saved["hidden"], saved["lr"], saved["epochs"], saved["steps"], saved["lr_gamma"]) == ([12], 0.5, 3, 60, 0.5)
    whole = runner.invoke(app, [*args, "--schedule", "step", "--lr-gamma", "0.5", "--run-dir", str(tmp_path / "w"),
                                "--steps", "60"])  # fmt: skip
    assert whole.exit_code == 0
    with np.load(rd / "final.npz") as a, np.load(tmp_path / "w" / "final.npz") as b:
        np.testing.assert_array_equal(a["w1"], b["w1"])
        assert json.loads(str(a["meta"]))["step"] == 60


def test_resume_extends_a_finished_run(tiny_npz: Path, tmp_path: Path, capsys) -> None:
    """--resume --epochs 3 after 2 equals 3 epochs from the start (a step schedule allows
    it); a finished run resumed has nothing to do and starts no Ray; a cosine run says why not."""
    args = ["train", "--data", str(tiny_npz), "--hidden", "12", "--lr", "0.5", "--workers", "0", "--optimizer",
            "momentum", "--schedule", "step", "--lr-step-epochs", "1"]  # fmt: skip
    rd = tmp_path / "r"
    assert runner.invoke(app, [*args, "--epochs", "2", "--run-dir", str(rd)]).exit_code == 0
    assert runner.invoke(app, ["train", "--resume", "--run-dir", str(rd), "--epochs", "3"]).exit_code == 0
    assert runner.invoke(app, [*args, "--epochs", "3", "--run-dir", str(tmp_path / "w")]).exit_code == 0
    with np.load(rd / "final.npz") as a, np.load(tmp_path / "w" / "final.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files if k != "meta")
    assert [r["epoch"] for r in map(json.loads, (rd / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]
    code, out, err = run_main(["train", "--resume", "--run-dir", str(rd), "--workers", "2"], capsys)
    assert code == 0 and err.startswith(f"nothing left to do: {rd} has trained its 3 epochs (step ")
    assert "warm start" not in err and "Ray" not in err and not __import__("ray").is_initialized()
    cos = tmp_path / "c"
    assert runner.invoke(app, [*args[:-4], "--schedule", "cosine", "--epochs", "2", "--run-dir", str(cos)]).exit_code == 0
    code, out, err = run_main(["train", "--resume", "--run-dir", str(cos), "--epochs", "3"], capsys)
    assert code == 1 and err == (f"error: --resume --epochs 3: {cos} has a cosine schedule over 2 epochs (eta falls to "
                                 f"0 at its end); over 3 epochs every step from the first would have had another "
                                 f"rate, so the run cannot be extended. Train a new run with --epochs 3, or go on "
                                 f"from these weights with a new schedule: --init {cos}/final.npz\n")  # fmt: skip


def test_a_corrupt_newest_checkpoint_resumes_from_the_one_before(tiny_npz: Path, tmp_path: Path, capsys) -> None:
    """--resume skips a newest checkpoint that does not read whole, with a line, and the
    run ends as an uninterrupted one; with no readable checkpoint left, one line and exit 1."""
    args = ["train", "--data", str(tiny_npz), "--hidden", "12", "--lr", "0.5", "--workers", "0", "--optimizer", "momentum"]
    rd = tmp_path / "r"
    assert runner.invoke(app, [*args, "--epochs", "3", "--run-dir", str(rd)]).exit_code == 0
    kept = sorted(rd.glob("ckpt-*.npz"))
    newest = kept[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # a torn file
    code, _, err = run_main(["train", "--resume", "--run-dir", str(rd), "--epochs", "4"], capsys)
    assert code == 0 and err.startswith(f"note: {newest}: not a readable checkpoint (") and \
        err.splitlines()[0].endswith("; going on from the checkpoint before it"), err
    assert runner.invoke(app, [*args, "--epochs", "4", "--run-dir", str(tmp_path / "w")]).exit_code == 0
    with np.load(rd / "final.npz") as a, np.load(tmp_path / "w" / "final.npz") as b:
        assert all(np.array_equal(a[k], b[k]) for k in b.files if k != "meta")
    for ck in rd.glob("ckpt-*.npz"):
        ck.write_bytes(b"garbage")
    code, _, err = run_main(["train", "--resume", "--run-dir", str(rd), "--epochs", "5"], capsys)
    assert code == 1 and err.splitlines()[-1].startswith("error: ") and \
        err.splitlines()[-1].endswith(f"no checkpoint of {rd} reads whole") and "Traceback" not in err, err


def test_fashion_mnist_class_names_in_evaluate_and_predict(tmp_path: Path) -> None:
    """Debian's Fashion-MNIST (installed by `make test`): labels by name, not only by number."""
    rd = tmp_path / "f"
    res = runner.invoke(app, ["train", "--data", "fashion-mnist", "--hidden", "10", "--batch-size", "100", "--lr", "1.0",
                              "--steps", "100", "--workers", "0", "--run-dir", str(rd)])  # fmt: skip
    assert res.exit_code == 0, res.output
    ev = runner.invoke(app, ["evaluate", str(rd / "final.npz"), "--data", "fashion-mnist", "--json"])
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert json.loads(ev.stdout)["classes"] == names
    table = runner.invoke(app, ["evaluate", str(rd / "final.npz"), "--data", "fashion-mnist"]).stdout
    assert "9 Ankle boot" in table and "0 T-shirt/top" in table
    images = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    pr = json.loads(runner.invoke(app, ["predict", str(rd / "final.npz"), f"{images}:0", "--json"]).stdout)
    assert pr[0]["label"] == names[pr[0]["prediction"]]
    text = runner.invoke(app, ["predict", str(rd / "final.npz"), f"{images}:0"]).stdout
    assert text.startswith(f"{images}:0: {pr[0]['prediction']} {pr[0]['label']}   [")
    # MNIST's labels are their digits: no name added
    mn = tmp_path / "m"
    assert runner.invoke(app, ["train", "--data", str(MNIST_10K), "--steps", "5", "--workers", "0",
                               "--run-dir", str(mn)]).exit_code == 0  # fmt: skip
    out = json.loads(runner.invoke(app, ["predict", str(mn / "final.npz"), f"{images}:0", "--json"]).stdout)
    assert out[0]["label"] == str(out[0]["prediction"])


def test_two_trains_into_one_run_directory(tmp_path: Path) -> None:
    """The second is refused in one line naming the first; a lock left by a killed run is taken over."""
    import signal
    import subprocess
    import sys
    import time

    nnps = str(Path(sys.executable).parent / "nnps")
    rd = tmp_path / "r"
    args = [nnps, "train", "--data", str(MNIST_10K), "--hidden", "100", "--epochs", "30", "--workers", "0",
            "--run-dir", str(rd)]  # fmt: skip
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (rd / "metrics.jsonl").exists():  # the first is training
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    second = subprocess.run(args[:-4] + ["--epochs", "1", "--workers", "0", "--run-dir", str(rd)],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 1 and second.stderr.count("\n") == 1, second.stderr
    assert second.stderr.startswith(f"error: {rd} is in use by process {first.pid} on ")
    first.send_signal(signal.SIGKILL)  # killed: its lock stays, naming a process that is gone
    first.communicate()
    assert json.loads((rd / "run.lock").read_text())["pid"] == first.pid
    resumed = subprocess.run([nnps, "train", "--resume", "--run-dir", str(rd), "--epochs", "2"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"note: {rd / 'run.lock'} was left by {first.pid} on " in resumed.stderr and "taking it over" in resumed.stderr
    assert not (rd / "run.lock").exists()  # released at the end


def test_two_trains_racing_for_one_local_run_directory(tmp_path: Path) -> None:
    """Started at the same moment, three times over, each long enough to overlap the other:
    exactly one holds the directory, the other is refused in one line naming it."""
    import json as json_
    import subprocess
    import sys

    for race in range(3):
        rd = tmp_path / f"race-{race}"
        args = [sys.executable, "-m", "nnps.cli.main", "train", "--data", str(MNIST_10K), "--epochs", "1000",
                "--workers", "0", "--run-dir", str(rd)]  # fmt: skip
        winner, loser, err = race_of(args)
        assert err.startswith(f"error: {rd} is in use by process {winner} on ") and err.count("\n") == 1, err
        assert json_.loads((rd / "run.lock").read_text())["pid"] == winner


def race_of(args: list[str]) -> tuple[int, int, str]:
    """Two `args` started at once: (the pid that holds on, the pid refused, its stderr). The
    one holding on is killed once the other has been refused."""
    import signal
    import subprocess

    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 120
        while all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "neither was refused within 120 s"
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        winner = next(p for p in procs if p is not loser)
        _, err = loser.communicate()
        assert loser.returncode == 1 and winner.poll() is None, err  # the other still runs: they overlapped
        return winner.pid, loser.pid, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
            if p.stderr is not None and not p.stderr.closed:
                p.stderr.close()


def test_a_staleness_no_update_could_reach_is_refused(capsys) -> None:
    code, _, err = run_main(["train", "--data", str(MNIST_10K), "--workers", "1", "--consistency", "bounded",
                             "--staleness", "100000", "--steps", "10"], capsys)  # fmt: skip
    assert (code, err) == (1, "error: --staleness 100000 bounds nothing in a run of 10 updates: that is "
                              "--consistency async\n")  # fmt: skip
    assert not __import__("ray").is_initialized()  # said before Ray started


def test_a_new_run_into_a_directory_holding_one_is_refused(tiny_npz: Path, tmp_path: Path, capsys) -> None:
    """Without --resume, a run directory that holds a run keeps it: one line, nothing written."""
    rd = tmp_path / "run"
    args = ["train", "--data", str(tiny_npz), "--hidden", "4", "--epochs", "2", "--workers", "0", "--run-dir", str(rd)]
    assert run_main(args, capsys)[0] == 0
    before = {p.name: p.read_bytes() for p in rd.iterdir()}
    rc, _, err = run_main([*args[:-2], "--hidden", "6", "--run-dir", str(rd)], capsys)
    assert (rc, err) == (1, f"error: {rd} already holds a run: --resume it, or give another --run-dir\n")
    assert {p.name: p.read_bytes() for p in rd.iterdir()} == before


def test_the_default_run_directory_is_a_new_one(tmp_path: Path, monkeypatch) -> None:
    """Two runs started in the same second get runs/<time> and runs/<time>-2, not one directory."""
    import time as clock

    from nnps.core.rundir import default_run_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(clock, "strftime", lambda fmt: "20261204-050000")
    first = default_run_dir()
    Path(first).mkdir(parents=True)
    assert (first, default_run_dir()) == ("runs/20261204-050000", "runs/20261204-050000-2")
