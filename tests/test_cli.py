"""The CLI end to end on digits, and the one-line errors of bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import datadistill as dd


def cli(*args, env=None, check=True):
    """`datadistill ARGS` in a new process: the console script's real start-up and exit."""
    proc = subprocess.run(
        [sys.executable, "-m", "datadistill.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    return _checked(proc, check)


def _checked(proc, check):
    """``proc``, or an AssertionError with its output when ``check`` and it failed."""
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli_here(monkeypatch, capfd):
    """`datadistill ARGS` through the console entry point in this process.

    The same code as the console script (`datadistill.cli.main`: argument parsing, the
    one-line errors, the exit status) without the five seconds a new interpreter spends
    importing torch; an exception that escapes `main` fails the test, as a traceback would.
    Returns a `CompletedProcess` like `cli`.
    """
    import warnings

    from datadistill import cli as cli_module

    def run(*args, env=None, check=True):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(sys, "argv", ["datadistill", *args])
        monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() sets it
        monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # typer's app() sets it
        capfd.readouterr()
        with pytest.raises(SystemExit) as exit_:
            cli_module.main()
        out, err = capfd.readouterr()  # file-descriptor level: torch's C++ output too
        code = exit_.value.code  # sys.exit(None) is status 0, sys.exit("text") status 1
        status = 0 if code is None else code if isinstance(code, int) else 1
        return _checked(subprocess.CompletedProcess(args, status, out, err), check)

    return run


def test_distill_evaluate_show_export_end_to_end(tmp_path, cli_here):
    out = tmp_path / "run"
    proc = cli(
        "distill",
        "--dataset",
        "digits",
        "--method",
        "dm",
        "--ipc",
        "1",
        "--out",
        str(out),
        "--iterations",
        "3",
        "--protocol",
        "fast",
        "--eval-seeds",
        "1",
        "--eval-arch",
        "convnetw32,MLP",
        "--hp",
        "width=32",
        "--hp",
        "batch_real=32",
        "--quiet",
    )
    for name in (
        "distilled.safetensors",
        "config.json",
        "report.json",
        "report.md",
        "grid.png",
        "curves.png",
        "checkpoint.pt",
    ):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert (report["dataset"], report["method"], report["ipc"], report["protocol"]) == (
        "digits",
        "dm",
        1,
        "fast",
    )
    assert list(report["results_by_arch"]) == ["convnetw32", "mlp"]  # registered spellings
    assert report["results"] == report["results_by_arch"]["convnetw32"]
    # the summary names each architecture it reports
    assert "ipc=1 convnetw32: distilled" in proc.stdout and "ipc=1 mlp: distilled" in proc.stdout
    assert "(protocol fast, 1 seed, test accuracy %)" in " ".join(proc.stdout.split())
    for kind in ("distilled", "random", "full"):
        r = report["results"][kind]
        assert set(r) >= {"accs", "mean", "std"} and 0 <= r["mean"] <= 1
    assert report["distill_seconds"] > 0 and report["peak_memory_bytes"] > 0
    assert report["artefact_bytes"] == (out / "distilled.safetensors").stat().st_size
    art = dd.load(out / "distilled.safetensors")
    assert art.manifest["evaluation"]["protocol"] == "fast"
    assert art.manifest["hparams"]["width"] == 32
    assert art.manifest["artefact_bytes"] == report["artefact_bytes"]
    # the files read, by digest: the set's data can be told from other data of its name
    digest = dd.load_dataset("digits").options["digest"]
    assert report["data_digest"] == art.manifest["data"]["digest"] == digest
    assert f"data digest {digest}" in (out / "report.md").read_text()

    cli_here(
        "evaluate",
        str(out / "distilled.safetensors"),
        "--arch",
        "mlp",
        "--seeds",
        "1",
        "--no-full",
        "--device",
        "cpu",  # in this process: no CUDA context or compile caches left behind on a GPU runner
        "--json",
        str(tmp_path / "ev.json"),
    )
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert list(ev["results"]) == ["mlp"] and "random" in ev["results"]["mlp"]
    cli_here("show", str(out / "distilled.safetensors"), "--out", str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").stat().st_size > 0
    cli_here("export", str(out / "distilled.safetensors"), "--out", str(tmp_path / "png"))
    assert len(list((tmp_path / "png").rglob("*.png"))) == 10
    # a second export into the same folder would mix two sets: refused
    again = cli_here(
        "export", str(out / "distilled.safetensors"), "--out", str(tmp_path / "png"), check=False
    )
    assert again.returncode == 2 and "is a folder that is not empty" in again.stderr
    # --show without a suffix writes (and prints) a .png; --json to a folder fails at once
    assert cli_here(
        "show", str(out / "distilled.safetensors"), "--out", str(tmp_path / "g2")
    ).stdout
    assert (tmp_path / "g2.png").is_file()
    bad_json = cli_here(
        "evaluate", str(out / "distilled.safetensors"), "--json", str(tmp_path), check=False
    )
    assert bad_json.returncode == 2 and "is a folder" in bad_json.stderr
    report = (out / "report.json").read_text()  # an existing file (the run's report): kept
    bad_json = cli_here("evaluate", str(out), "--json", str(out / "report.json"), check=False)
    assert bad_json.returncode == 2 and "already exists" in bad_json.stderr
    assert (out / "report.json").read_text() == report
    (tmp_path / "afile").write_text("")  # --json under a file: refused before training
    bad_json = cli_here(
        "evaluate",
        str(out / "distilled.safetensors"),
        "--json",
        str(tmp_path / "afile" / "r"),
        check=False,
    )
    assert bad_json.returncode == 2 and "afile" in bad_json.stderr
    assert len(bad_json.stderr.strip().splitlines()) == 1
    listed = cli_here("list").stdout
    for name in ("dm", "herding", "mnist", "convnet", "resnet18", "dc", "imagefolder:PATH"):
        assert name in listed
    assert "--ipc" in cli_here("distill", "--help").stdout


@pytest.mark.parametrize(
    "args,expected",
    [
        (["distill", "--dataset", "mnsit", "--out", "X"], "Did you mean 'mnist'"),
        (["distill", "--dataset", "digits", "--method", "dn", "--out", "X"], "Did you mean 'dm'"),
        (["distill", "--dataset", "digits", "--ipc", "0", "--out", "X"], "IPC must be an integer"),
        (["distill", "--dataset", "digits", "--ipc", "500", "--out", "X"], "IPC 500 exceeds"),
        (["distill", "--dataset", "digits", "--protocol", "dcc", "--out", "X"], "Unknown protocol"),
        (
            ["distill", "--dataset", "digits", "--eval-arch", "resnet81", "--out", "X"],
            "Did you mean 'resnet18'",
        ),
        (["distill", "--dataset", "digits", "--hp", "lr_img=-2", "--out", "X"], "'lr_img'"),
        (["distill", "--dataset", "mnist", "--out", "X"], "DATADISTILL_DATA"),
        (["evaluate", "missing.safetensors"], "No distilled set"),
        (["list", "things"], "Cannot list"),
        (["distill", "--dataset", "npz:X", "--out", "X"], "does not exist"),
        (["distill", "--dataset", "digits", "--select", "best-val", "--out", "X"], "--validate"),
        (["distill", "--dataset", "digits", "--method", "mtt", "--out", "X"], "expert buffer"),
        (
            ["distill", "--dataset", "digits", "--method", "mtt", "--hp", "buffer=nobuf"]
            + ["--out", "X"],
            "No expert buffer",
        ),
        (["experts", "--dataset", "digits", "--num", "0", "--out", "X"], "number of experts"),
        (["experts", "--dataset", "digits", "--momentum", "2", "--out", "X"], "expert momentum"),
        (["experts", "--dataset", "digits", "--lr", "inf", "--out", "X"], "finite number > 0"),
        (
            ["experts", "--dataset", "digits", "--weight-decay", "-1", "--out", "X"],
            "expert weight decay",
        ),
        (["distill", "--dataset", "digits", "--device", "mps", "--out", "X"], "not supported"),
        (["distill", "--dataset", "digits", "--hp", "dsa=no", "--out", "X"], "true or false"),
        (
            ["distill", "--dataset", "digits", "--hp", "factor=3", "--out", "X"],
            "A multi-formation factor of 3 does not divide the 8x8 images; choose 1 or one of",
        ),
        (["distill", "--dataset", "digits", "--hp", "factor=0", "--out", "X"], "'factor'"),
        (
            ["distill", "--dataset", "digits", "--ipc", "10", "--method", "dc", "--hp", "factor=8"]
            + ["--out", "X"],
            "IPC 10 with a multi-formation factor of 8 needs 640 images per class",
        ),
        (["distill", "--dataset", "digits", "--full-epochs", "0", "--out", "X"], "--full-epochs"),
        (["distill", "--dataset", "digits", "--max-train", "5", "--out", "X"], "--max-train 5"),
        (
            ["distill", "--dataset", "digits", "--val-size", "0", "--validate-every", "1"]
            + ["--out", "X"],
            "--val-size above 0",
        ),
        (["show", "missing.safetensors", "--out", "X.txt"], "a .png name"),
        (["distill", "--dataset", "digits", "--val-size", "1.5", "--out", "X"], "whole number"),
        (["distill", "--dataset", "digits", "--val-size", "inf", "--out", "X"], "in [0, 1)"),
        (["show", "missing.safetensors", "--out", "."], "give show a .png file name"),
        (["distill", "--dataset", "digits", "--hp", "=3", "--out", "X"], "a name before '='"),
        (
            ["distill", "--dataset", "digits", "--hp", "lr_img=1e400", "--out", "X"],
            "--hp lr_img=1e400 is not a finite number",
        ),
        (["distill", "--dataset", "digits", "--hp", "lr_img=NaN", "--out", "X"], "not a finite"),
        (["distill", "--dataset", "digits", "--hp", "lr_imgg=3", "--out", "X"], "'lr_img'?"),
        (
            ["distill", "--dataset", "digits", "--hp", "arch=convnett", "--out", "X"],
            "'arch' parameter of DM: Unknown model 'convnett'. Did you mean 'convnet'?",
        ),
        (
            ["distill", "--dataset", "digits", "--method", "dc", "--hp", "arch=lenett"]
            + ["--out", "X"],
            "Did you mean 'lenet'",
        ),
        (
            ["distill", "--dataset", "digits", "--method", "herding", "--hp", "arch=mpl"]
            + ["--out", "X"],
            "Did you mean 'mlp'",
        ),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, cli_here, args, expected):
    env = {"DATADISTILL_DATA": str(tmp_path / "nodata")}
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    proc = cli_here(*args, env=env, check=False)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert expected in err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    if args[0] == "distill":  # bad options fail before the run folder is created
        assert not (tmp_path / "X").exists()


def test_mismatched_expert_buffer_is_one_line_and_nonzero(tmp_path, expert_buffer):
    """A buffer trained on other data (here: without ZCA) is refused before any work."""
    proc = cli(
        "distill",
        "--dataset",
        "digits",
        "--zca",
        "--method",
        "mtt",
        "--hp",
        f"buffer={expert_buffer}",
        "--out",
        str(tmp_path / "run"),
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert "train experts for this data" in err and str(expert_buffer) in err
    assert "load the data as the buffer was (without --zca)" in err  # the simpler fix
    assert "Traceback" not in err and len(err.splitlines()) == 1, err


def test_an_interrupted_run_exits_with_130(monkeypatch, cli_here):
    from datadistill import cli as cli_module
    from datadistill.errors import Interrupted

    def interrupted(**kwargs):
        raise Interrupted("Interrupted at iteration 3; a resumable checkpoint is saved.")

    monkeypatch.setattr(cli_module, "app", interrupted)
    proc = cli_here("distill", check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip() == (
        "error: Interrupted at iteration 3; a resumable checkpoint is saved."
    )


def test_a_mistyped_or_missing_flag_is_typers_usage_line_and_status_2(cli_here):
    """typer's usage errors (typer.TyperException, or click's ClickException before typer
    0.28) reach main(), which shows them without a traceback."""
    proc = cli_here("distill", "--bogus", check=False)
    assert proc.returncode == 2
    assert "No such option: --bogus" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli_here("distill", "--method", "dm", check=False)
    assert proc.returncode == 2
    assert "Missing option '--dataset'" in proc.stderr and "Traceback" not in proc.stderr


def test_end_of_input_inside_a_command_is_an_interruption(monkeypatch, cli_here):
    """click turns an EOFError into typer.Abort, a RuntimeError: it is an interruption, not
    a bug to show with a traceback."""
    import datadistill.artefact

    def end_of_input(path):
        raise EOFError

    monkeypatch.setattr(datadistill.artefact, "load", end_of_input)
    proc = cli_here("show", "set.safetensors", check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip().splitlines()[-1] == "error: interrupted."


def test_ctrl_c_inside_a_command_says_how_to_resume(monkeypatch, cli_here):
    """typer turns a KeyboardInterrupt inside a command into exit code 130 without a word;
    the CLI says what happened and how to continue."""
    import datadistill.artefact

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(datadistill.artefact, "load", interrupted)
    proc = cli_here("show", "set.safetensors", check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip().splitlines() == ["error: interrupted."]  # nothing to resume
    proc = cli_here("evaluate", "set.safetensors", check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip().splitlines() == [
        "error: interrupted. The networks it finished are kept in the evaluation cache: the "
        "same command goes on after them."
    ]
    proc = cli_here("evaluate", "set.safetensors", env={"DATADISTILL_CACHE": "OFF"}, check=False)
    assert proc.stderr.strip().splitlines() == ["error: interrupted."]  # nothing was kept
    import datadistill.experts

    def interrupted_experts(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(datadistill.experts, "train_experts", interrupted_experts)
    proc = cli_here("experts", "--dataset", "digits", "--out", "buf", check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip().splitlines() == [
        "error: interrupted. The finished epochs are kept: the same command continues from them."
    ]


def test_ctrl_c_before_a_runs_first_checkpoint_says_nothing_was_saved(
    monkeypatch, cli_here, tmp_path
):
    import importlib

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    # the module (datadistill.run is the function on the package)
    monkeypatch.setattr(importlib.import_module("datadistill.run"), "run", interrupted)
    out = tmp_path / "run"
    args = ("distill", "--dataset", "digits", "--out")
    proc = cli_here(*args, str(out), check=False)
    assert proc.returncode == 130
    assert proc.stderr.strip() == (
        "error: interrupted. Nothing was saved yet; run the same command (without --resume) "
        "to start."
    )
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")  # a run with a checkpoint: resume it
    proc = cli_here(*args[:-1], f"--out={out}", check=False)
    assert "--resume" in proc.stderr and "Nothing was saved" not in proc.stderr
    proc = cli_here(*args, str(tmp_path / "other"), "--out", str(out), check=False)
    assert "--resume" in proc.stderr  # the last --out is the run's, as the parser reads it


@pytest.mark.parametrize(
    "raised,one_line",
    [
        (MemoryError(), True),
        (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),  # a bug
    ],
)
def test_out_of_memory_is_one_line(monkeypatch, cli_here, raised, one_line):
    """Running out of memory is the user's to fix (smaller settings, a larger device): one
    line; any other RuntimeError is a bug and keeps its traceback."""
    from datadistill import cli as cli_module

    def fail(**kwargs):
        raise raised

    monkeypatch.setattr(cli_module, "app", fail)
    if not one_line:
        with pytest.raises(RuntimeError, match="shapes"):
            cli_here("distill", check=False)
        return
    proc = cli_here("distill", check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: out of memory;") and len(err.splitlines()) == 1


def test_out_of_memory_in_a_resumable_run_says_what_a_resume_may_change(
    tmp_path, monkeypatch, cli_here
):
    """A resumed run keeps its settings (only the device may change), so lowered settings
    are said to start over in another folder, not to go on with --resume."""
    from datadistill import cli as cli_module

    def fail(**kwargs):
        raise MemoryError

    monkeypatch.setattr(cli_module, "app", fail)
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(b"")
    proc = cli_here("distill", "--out", str(out), check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1
    assert "--resume (and another --device)" in err and "start over in another --out" in err


def test_show_never_writes_its_grid_over_the_set(tmp_path, cli_here):
    """A set saved under a .png name: the grid's default name (and an --out naming it) is
    the set itself, which is refused and left as it was."""
    out = tmp_path / "run"
    args = ("distill", "--dataset", "digits", "--method", "random", "--ipc", "1")
    cli_here(*args, "--no-evaluate", "--quiet", "--out", str(out))
    saved = (out / "distilled.safetensors").read_bytes()
    png = tmp_path / "set.png"
    png.write_bytes(saved)
    for extra in ([], ["--out", str(png)]):
        proc = cli_here("show", str(png), *extra, check=False)
        assert proc.returncode == 2 and "the artefact itself" in proc.stderr
        assert png.read_bytes() == saved


def test_experts_without_a_validation_split_do_not_report_a_score(tmp_path, cli_here):
    proc = cli_here(
        "experts",
        "--dataset",
        "digits",
        "--num",
        "1",
        "--epochs",
        "1",
        "--width",
        "8",
        "--val-size",
        "0",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "buf"),
    )
    assert "1 expert in" in proc.stdout and "no validation split" in proc.stdout


def test_resume_with_a_lower_learning_rate(tmp_path, cli_here):
    out = tmp_path / "run"
    args = ["distill", "--dataset", "digits", "--method", "dm", "--ipc", "1", "--out", str(out)]
    args += ["--hp", "width=32", "--hp", "batch_real=32", "--no-evaluate", "--quiet"]
    args += ["--device", "cpu"]  # in this process: no CUDA context or compile caches left behind
    cli_here(*args, "--iterations", "2", "--checkpoint-every", "1")
    resumed = cli_here(*args, "--iterations", "4", "--hp", "lr_img=0.25", "--resume")
    assert "warning: Resuming from iteration 2 with lr_img 1.0 -> 0.25" in resumed.stderr
    assert "UserWarning" not in resumed.stderr
    manifest = dd.load(out).manifest
    assert manifest["iterations"] == 4
    assert manifest["resume_changes"] == [{"iteration": 2, "changed": {"lr_img": [1.0, 0.25]}}]
    report = json.loads((out / "report.json").read_text())
    assert report["resume_changes"] == manifest["resume_changes"]
    assert report["stopped_by"] == "iterations"
    assert "- resumed at iteration 2 with lr_img 1.0 -> 0.25" in (out / "report.md").read_text()
    refused = cli_here(*args, "--iterations", "6", "--hp", "width=16", "--resume", check=False)
    assert refused.returncode == 2
    assert "only lr_img may change on resume" in refused.stderr


def test_evaluate_reloads_the_data_with_the_artefacts_whitening(tmp_path):
    from datadistill.evaluation.evaluate import dataset_of

    real = dd.load_dataset("digits", zca=True, zca_eps=0.5)
    d = dd.Distilled(
        images=real.train_x[:10], labels=real.train_y[:10], info=real.info, zca=real.zca
    )
    d = d.with_manifest(data={"name": "digits", "val_size": 0.1, "max_train": None})
    back = dataset_of(dd.load(d.save(tmp_path / "z.safetensors")), None)
    assert back.info.zca_eps == 0.5
    assert torch.allclose(back.train_x, real.train_x)


def test_a_set_distilled_from_python_records_how_to_load_its_data(tmp_path, monkeypatch):
    """`dd.distill` + `save` (the README's Python example) with other data options than
    the defaults: `datadistill evaluate` / `relabel` load the same data again."""
    from datadistill.evaluation.evaluate import dataset_of

    real = dd.load_dataset("digits", val_size=0.3, max_train=500, normalization="none")
    d = dd.distill(real, "random", ipc=2, seed=0, device="cpu")
    assert d.manifest["data"] == {
        "name": "digits",
        "val_size": 0.3,
        "max_train": 500,
        "normalization": "none",
        "digest": dd.load_dataset("digits").options["digest"],  # of the files, not the split
    }
    monkeypatch.chdir(tmp_path)  # a relative npz: path is recorded absolute
    np.savez("d.npz", x=np.zeros((8, 6, 6), np.uint8), y=np.arange(8) % 2)
    assert dd.load_dataset("npz:d.npz", val_size=0).options["name"] == (f"npz:{tmp_path / 'd.npz'}")
    back = dataset_of(dd.load(d.save(tmp_path / "z.safetensors")), None)
    assert torch.equal(back.train_x, real.train_x) and torch.equal(back.val_y, real.val_y)


def test_summary_prints_names_as_they_are(tmp_path, capsys):
    """A user's names (npz:PATH, a run folder) may hold rich markup: printed literally."""
    from datadistill.cli import _print_summary

    r = {"accs": [0.5], "mean": 0.5, "std": 0.0}
    report = {
        "method": "dm",
        "dataset": "npz:data[/x]/a[b].npz",
        "ipc": 1,
        "protocol": "dc",
        "evaluation": {"seeds": 2},
        "results_by_arch": {"convnet": {"distilled": r, "random": r}},
    }
    _print_summary(report, tmp_path / "run[1]")
    out = " ".join(capsys.readouterr().out.split())
    assert "npz:data[/x]/a[b].npz ipc=1 convnet: distilled 50.00 ± 0.00" in out
    assert "(protocol dc, 2 seeds, test accuracy %)" in out and "run[1]" in out


def test_evaluate_finds_moved_user_data_with_dataset(tmp_path, cli_here):
    """A set distilled from npz:PATH whose file has moved since: a one-line error saying
    how to point at it, and --dataset to do so."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "d.npz", x=digits.images.astype(np.float32) / 16, y=digits.target)
    out = tmp_path / "run"
    options = "--method random --ipc 1 --protocol fast --eval-seeds 1 --no-full".split()
    cli_here("distill", "--dataset", f"npz:{tmp_path / 'd.npz'}", *options, "--out", str(out))
    (tmp_path / "moved").mkdir()
    (tmp_path / "d.npz").rename(tmp_path / "moved" / "d.npz")
    args = ["evaluate", str(out / "distilled.safetensors"), "--protocol", "fast", "--seeds", "1"]
    proc = cli_here(*args, "--no-full", "--no-baselines", check=False)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and "which is not there" in err and "--dataset" in err, err
    assert len(err.splitlines()) == 1
    moved = f"npz:{tmp_path / 'moved' / 'd.npz'}"
    proc = cli_here(*args, "--no-full", "--no-baselines", "--dataset", moved)
    assert "convnet" in proc.stdout
    # the moved data keeps the recorded name: expert buffers and caches know it by that
    from datadistill.evaluation.evaluate import dataset_of

    distilled = dd.load(out / "distilled.safetensors")
    assert dataset_of(distilled, data=moved).info.name == distilled.manifest["data"]["name"]
    # --dataset is for user data that moved, not a way to swap datasets
    with pytest.raises(dd.ConfigError, match="--dataset digits is not user data.*data-root"):
        dataset_of(distilled, data="digits")
    builtin = dd.distill(dd.load_dataset("digits"), "random", 1, seed=0, device="cpu")
    with pytest.raises(dd.ConfigError, match="builtin dataset digits, not from user data"):
        dataset_of(builtin, data=moved)


def test_the_summary_of_a_run_without_evaluation_says_so(tmp_path, capsys):
    """``--no-evaluate``: no empty accuracy columns under a protocol that was not run."""
    from datadistill.cli import _print_summary

    report = {"method": "dm", "dataset": "digits", "ipc": 2, "protocol": "dc", "results": {}}
    _print_summary(report, tmp_path)
    out = capsys.readouterr().out
    assert "distilled, not evaluated" in out and "datadistill evaluate" in out
    assert "protocol dc" not in out and "random -" not in out


def test_every_option_and_argument_of_every_command_says_what_it_does():
    import typer

    from datadistill.cli import app

    group = typer.main.get_command(app)
    missing = [
        f"{name} {'/'.join(p.opts)}"
        for name, command in group.commands.items()  # type: ignore[attr-defined]
        for p in command.params
        if not getattr(p, "help", None)
    ]
    assert not missing, f"options without help text: {missing}"


@pytest.fixture
def plugin_state(monkeypatch, tmp_path):
    """Whatever plugins register or import here is forgotten after the test."""
    import datadistill.plugins as plugins
    from datadistill.methods import METHODS

    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_meta", dict(METHODS._meta))
    monkeypatch.setattr(plugins, "_loaded", {})
    monkeypatch.setattr(plugins, "_code", set())
    monkeypatch.setattr(plugins, "_scanned", {})
    monkeypatch.setattr(sys, "path", list(sys.path))  # plugin folders are appended to it
    before = set(sys.modules)
    yield plugins
    for name in set(sys.modules) - before:  # plugins are imported under their own names
        file = getattr(sys.modules[name], "__file__", None) or ""
        if "moments" in name or file.startswith(str(tmp_path)):
            del sys.modules[name]


def _moments_plugin(folder, example):
    """README's example method, without its last lines (the run), as a plugin file."""
    path = folder / "moments.py"
    path.write_text(example.split("\nreal = dd.load_dataset")[0])
    return path


def test_a_plugin_file_adds_a_method_to_the_command_line(
    cli_here, plugin_state, tmp_path, readme_method_example
):
    plugin = _moments_plugin(tmp_path, readme_method_example)
    env = {"DATADISTILL_PLUGINS": f" {plugin} ,"}  # spaces and empty entries are ignored
    listed = cli_here("list", "methods", env=env).stdout
    assert "moments" in listed and "Match each class's feature mean" in listed
    proc = cli_here(
        "distill",
        "--method",
        "momentz",
        "--dataset",
        "digits",
        "--out",
        str(tmp_path / "x"),
        env=env,
        check=False,
    )
    assert proc.returncode == 2 and "Did you mean 'moments'?" in proc.stderr
    out = tmp_path / "run"
    args = ("distill", "--dataset", "digits", "--method", "moments", "--ipc", "1")
    cli_here(
        *args,
        "--iterations",
        "2",
        "--hp",
        "lr_img=0.5",
        "--no-evaluate",
        "--quiet",
        "--out",
        str(out),
        env=env,
    )
    assert dd.load(out / "distilled.safetensors").manifest["method"] == "moments"


def test_a_plugin_from_an_installed_package_is_loaded(
    cli_here, plugin_state, tmp_path, monkeypatch, readme_method_example
):
    import importlib.metadata
    from importlib.metadata import EntryPoint

    package = tmp_path / "site"
    package.mkdir()
    _moments_plugin(package, readme_method_example).rename(package / "moments_pkg.py")
    monkeypatch.syspath_prepend(str(package))
    entry = EntryPoint("moments", "moments_pkg", plugin_state.ENTRY_POINT_GROUP)
    real_entry_points = plugin_state._entry_points
    monkeypatch.setattr(plugin_state, "_entry_points", lambda: [entry])
    assert "moments" in cli_here("list", "methods").stdout
    assert plugin_state.load_plugins() == ["moments = moments_pkg"]  # once per process
    # a broken installed plugin names its package, and can be skipped
    monkeypatch.setattr(plugin_state, "_loaded", {})
    broken = EntryPoint("broken", "no_such_plugin_module", plugin_state.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [broken])
    monkeypatch.setattr(plugin_state, "_entry_points", real_entry_points)
    proc = cli_here("list", "methods", check=False)
    assert proc.returncode == 2 and "'broken = no_such_plugin_module'" in proc.stderr
    assert "(skip: DATADISTILL_PLUGIN_AUTOLOAD=0)" in proc.stderr
    cli_here("list", "methods", env={"DATADISTILL_PLUGIN_AUTOLOAD": "0"})  # skipped


def test_a_plugin_named_twice_or_already_imported_registers_once(
    cli_here, plugin_state, tmp_path, monkeypatch, readme_method_example
):
    """The same file as a module and as a path (or imported by the user's script before
    the command line runs) is one plugin: its names are registered once."""
    plugin = _moments_plugin(tmp_path, readme_method_example)
    monkeypatch.syspath_prepend(str(tmp_path))
    env = {"DATADISTILL_PLUGINS": f"moments,{plugin},{tmp_path}/./moments.py"}
    assert "moments" in cli_here("list", "methods", env=env).stdout
    # the module, then the file it was imported from (not imported again), named once
    assert plugin_state.load_plugins() == ["moments", str(plugin)]


@pytest.mark.parametrize(
    "entry,message",
    [
        ("bad.py", "could not be loaded: ZeroDivisionError: division by zero at bad.py:2; fix it"),
        ("syntax.py", "could not be loaded: SyntaxError: invalid syntax (syntax.py, line 2) at "),
        ("again.py", "ValueError: method 'dc' is already registered at again.py:4"),
        ("asks.py", "could not be loaded: UnknownNameError: Unknown model 'convnt'. Did you"),
        ("missing.py", "is not a file; give the path of a .py file"),
        ("no_such_module", "is not an importable module; give a .py file's path, or put"),
        ("os.no_such_module", "is not an importable module; give a .py file's path, or put"),
    ],
)
def test_a_plugin_that_cannot_load_is_one_line(cli_here, plugin_state, tmp_path, entry, message):
    """One line naming the plugin, what failed and where in the plugin's own code (a
    syntax error's line; not importlib's frames, nor the registry's refusal)."""
    (tmp_path / "bad.py").write_text("import datadistill\nx = 1 / 0\n")
    (tmp_path / "syntax.py").write_text("import datadistill\ndef f(:\n")
    (tmp_path / "again.py").write_text(
        "from datadistill.methods import Method, register_method\n\n\n"
        '@register_method("dc")\nclass Again(Method):\n    """A second dc."""\n'
    )
    (tmp_path / "asks.py").write_text(
        'from datadistill.models import MODELS\n\nMODELS.canonical("convnt")\n'
    )
    name = str(tmp_path / entry) if entry.endswith(".py") else entry
    for args in (("list",), ("distill", "--dataset", "digits", "--out", str(tmp_path / "r"))):
        proc = cli_here(*args, env={"DATADISTILL_PLUGINS": name}, check=False)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "$DATADISTILL_PLUGINS" in lines[0]
    assert not (tmp_path / "r").exists()


def test_check_runs_the_contract_checks_of_a_method_or_model(
    cli_here, plugin_state, tmp_path, readme_method_example
):
    quick = ("--hp", "width=16", "--hp", "batch_real=16")
    proc = cli_here("check", "dm", *quick, "--hp", "compile=no")
    assert "method 'dm': passed" in proc.stdout and "resume" in proc.stdout
    assert "model 'lenet': passed" in cli_here("check", "lenet").stdout
    proc = cli_here("check", "dmm", check=False)
    assert proc.returncode == 2 and "neither a method nor a model" in proc.stderr
    assert "Did you mean 'dm'?" in proc.stderr
    # README's method without its optimiser in state_dict: the resume check fails (status 1)
    plugin = _moments_plugin(tmp_path, readme_method_example)
    text = plugin.read_text().replace('"optimizer": self.optimizer.state_dict()', "")
    plugin.write_text(text.replace('self.optimizer.load_state_dict(state["optimizer"])', "pass"))
    env = {"DATADISTILL_PLUGINS": str(plugin)}
    proc = cli_here("check", "moments", *quick, "--hp", "lr_img=0.5", env=env, check=False)
    assert proc.returncode == 1 and "method 'moments': FAILED" in proc.stdout
    assert "FAIL" in proc.stdout and "optimiser's state" in " ".join(proc.stdout.split())
    assert "error: method 'moments' failed 1 check(s). resume: a run resumed" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (("dm", "--hp", "ipc=2"), "--hp ipc=... is the check's own setting for a method"),
        (("dm", "--ipc", "0"), "IPC must be an integer >= 1"),
        (("dm", "--device", "bogus"), "Unknown device 'bogus'; use 'auto', 'cpu' or 'cuda[:N]'"),
        (("dm", "--channels", "3"), "--channels does not apply here: dm is a method"),
        (("lenet", "--ipc", "2"), "--ipc does not apply here: lenet is a model"),
        (("lenet", "--data-root=/tmp"), "--data-root does not apply here: lenet is a model"),
        (("lenet", "--hp", "channels=3"), "use --channels"),
        (("lenet", "--hp", "widht=3"), "got unknown option(s) 'widht'"),
        (("lenet", "--image-size", "32x"), "--image-size takes sizes such as 28 or 32x16"),
        (("mtt",), "expert buffer"),
    ],
)
def test_check_refuses_a_mistake_in_the_command_in_one_line(cli_here, args, message):
    proc = cli_here("check", *args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_check_of_a_model_at_given_shapes_prints_details_as_text(
    cli_here, plugin_state, tmp_path, monkeypatch
):
    from datadistill.models import MODELS

    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))
    monkeypatch.setattr(MODELS, "_meta", dict(MODELS._meta))
    out = cli_here("check", "convnetw32", "--channels", "3", "--image-size", "32x16").stdout
    assert "builds [3x32x16]" in out and "[1x28x28]" not in out
    (tmp_path / "odd.py").write_text(
        "import torch\nfrom datadistill.models import MODELS\n\n\n"
        '@MODELS.register("odd")\ndef odd(channels, num_classes, image_size):\n'
        '    raise ValueError("no [red]size[/red] fits [/tmp/x]")\n'
    )
    proc = cli_here(
        "check", "odd", env={"DATADISTILL_PLUGINS": str(tmp_path / "odd.py")}, check=False
    )
    # rich markup in a detail is shown as written, not read as markup
    assert proc.returncode == 1 and "no [red]size[/red] fits [/tmp/x]" in proc.stdout


def test_a_plugins_warning_names_its_file_and_line(cli_here, plugin_state, tmp_path, monkeypatch):
    (tmp_path / "warner.py").write_text("import warnings\n\nwarnings.warn('this plugin is old')\n")
    package = tmp_path / "site" / "warnpkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from warnpkg import inner  # noqa\n")
    (package / "inner.py").write_text("import warnings\nwarnings.warn('so is this one')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    env = {"DATADISTILL_PLUGINS": f"{tmp_path / 'warner.py'},warnpkg"}
    err = cli_here("list", "methods", env=env).stderr
    assert "warning: this plugin is old (warner.py:3)" in err
    assert "warning: so is this one (inner.py:2)" in err  # a module of a plugin package
    # datadistill's own warnings are not located (they say what to change in words)
    assert plugin_state.plugin_location(plugin_state.__file__, 1) == ""


def test_plugin_files_import_their_siblings_and_errors_point_at_their_lines(
    cli_here, plugin_state, tmp_path
):
    register = (
        "from datadistill.methods import register_method\nfrom datadistill.methods.dm import DM\n"
    )
    (tmp_path / "mine.py").write_text(
        f"{register}\n\n@register_method('mine')\nclass Mine(DM):\n    pass\n"
    )
    (tmp_path / "more.py").write_text(
        f"{register}import mine\n\n\n@register_method('more')\nclass More(mine.Mine):\n    pass\n"
    )
    plugins = f"{tmp_path / 'mine.py'},{tmp_path / 'more.py'}"
    listed = cli_here("list", "methods", env={"DATADISTILL_PLUGINS": plugins}).stdout
    assert "mine" in listed and "more" in listed  # mine.py imported once, by both
    (tmp_path / "loose.py").write_text(
        "import dataclasses\nfrom datadistill.methods import HParams\n\n\n"
        "@dataclasses.dataclass\nclass Loose(HParams):\n    lr: float = 1.0\n"
    )
    (tmp_path / "needs.py").write_text("import datadistill\nimport no_such_helper_module\n")
    for name, message in [
        (
            "loose.py",
            "TypeError: cannot inherit non-frozen dataclass from a frozen one at loose.py:",
        ),
        ("needs.py", "ModuleNotFoundError: No module named 'no_such_helper_module' at needs.py:2;"),
    ]:
        proc = cli_here("list", env={"DATADISTILL_PLUGINS": str(tmp_path / name)}, check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_plugin_whose_package_fails_is_one_line(cli_here, plugin_state, tmp_path, monkeypatch):
    package = tmp_path / "brokenpkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('boom in __init__')\n")
    (package / "plugin.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    proc = cli_here("list", env={"DATADISTILL_PLUGINS": "brokenpkg.plugin"}, check=False)
    assert proc.returncode == 2 and "RuntimeError: boom in __init__ at __init__.py:1" in proc.stderr


def test_a_sets_evaluation_protocol_is_its_methods_and_evaluate_defaults_to_it(
    tmp_path, cli_here, monkeypatch
):
    """The manifest records the protocol the method's sets are made for, and `evaluate`
    without --protocol trains with it."""
    from datadistill.methods import METHODS, register_method
    from datadistill.methods.dm import DM

    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))
    monkeypatch.setattr(METHODS, "_meta", dict(METHODS._meta))

    @register_method("dm_fast")
    class FastDM(DM):
        expected_protocol = "fast"

    real = dd.load_dataset("digits")
    d = dd.distill(real, "dm_fast", ipc=1, iterations=1, device="cpu", width=16)
    assert d.manifest["protocol"] == "fast"
    path = d.save(tmp_path / "set.safetensors")
    cli_here(
        "evaluate", str(path), "--seeds", "1", "--no-full", "--device", "cpu",
        "--json", str(tmp_path / "ev.json"),
    )  # fmt: skip
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["protocol"] == "fast" and ev["protocol_config"]["epochs"] == 100
