"""`make demo`'s entry point, shrunk to a few steps."""

from __future__ import annotations

import pytest

from datadistill import demo


def test_demo_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    demo.main(["--iterations", "2", "--seeds", "1", "--ipc", "1", "--full-epochs", "1"])
    out = capsys.readouterr().out
    assert "ConvNet-2, protocol fast: 100 epochs, 1 seed;" in out  # 8x8 digits: depth 2
    row = next(line for line in out.splitlines() if line.startswith("│ dm "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[:2] == ["dm", "1"]
    assert all("±" in c for c in cells[2:5])  # distilled, random subset, full data


def test_demo_rejects_an_unknown_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        demo.main(["--protocol", "dcc"])
    assert exc.value.code == 2
    assert "Did you mean 'dc'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--ipc", "0"], "'0' is not an integer >= 1"),
        (["--seeds", "-1"], "'-1' is not an integer >= 1"),
        (["--full-epochs", "x"], "'x' is not an integer >= 1"),
        (["--ipc", "1", "9999"], "IPC 9999 exceeds the smallest class of digits"),
    ],
)
def test_demo_refuses_bad_numbers_before_any_work(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        demo.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_demo_ctrl_c_stops_with_130_and_no_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise demo.Interrupted("Interrupted at iteration 3.")

    monkeypatch.setattr(demo.dd, "distill", interrupted)
    with pytest.raises(SystemExit) as exc:
        demo.main(["--ipc", "1"])
    assert exc.value.code == 130
    err = capsys.readouterr().err
    assert "the demo stopped" in err and "Traceback" not in err
