"""Seconds to train one evaluation network: eager against compiled (``train_network``).

Every accuracy in the table, and every use of a distilled set, trains fresh networks on
it; ``train_network(compile="auto")`` compiles a long training (the forward and backward of
ConvNet-3 through ``stem_logits``, as DC's network training). Both sides train the same
network on the same MNIST images under the ``dc`` protocol's optimiser, in the same
process, interleaved (``_common.time_interleaved``); the compilation is timed apart, in
each case's first run after ``torch._dynamo.reset()``, as it is paid once per process and
input shape (with Inductor's on-disk cache as it stands). Cases (``--epochs`` of
each, a fraction of the protocol's 300 so that a run takes minutes):

* IPC 10: 100 images (the table's IPC 10 sets);
* IPC 10, multi-formation x2: 400 training images;
* 2560 real images (one epoch stands for the full-data reference's and experts' work).

Writes benchmarks/results/eval-throughput.json (on a GPU eval-throughput-gpu.json). Usage:

    .venv/bin/python -m benchmarks.eval_throughput [--epochs 10] [--rounds 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import datadistill as dd
from benchmarks._common import (
    TIMING,
    add_data_root,
    add_output_options,
    data_root,
    output_name,
    run_main,
    time_interleaved,
    write,
)
from datadistill.evaluation import get_protocol, train_network
from datadistill.evaluation.train import TRAIN_COMPILE_MIN_PIXELS, default_micro_batch
from datadistill.models import create_model_for


def default_micro_batch_of(real: dd.RealData, dev: torch.device) -> int:
    """The micro-batch ``train_network`` picks for the protocol's network on these images."""
    net = create_model_for(get_protocol("dc").arch, real.info)
    return default_micro_batch(net, real.train_x[:1].to(dev))


CASES = (("IPC 10", 10, 1.0), ("IPC 10, factor 2", 40, 1.0), ("2560 real images", 256, 0.1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=10, help="epochs of the IPC cases")
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each side")
    ap.add_argument("--device", default="cpu")
    add_output_options(ap, "eval-throughput.json, or eval-throughput-gpu.json on a GPU")
    add_data_root(ap)
    args = ap.parse_args()
    dev = dd._device.prepare_device(dd._device.resolve_device(args.device))
    result = output_name(
        ap, args, "eval-throughput-gpu.json" if dev.type == "cuda" else "eval-throughput.json"
    )
    real = dd.load_dataset("mnist", root=data_root(args))
    proto = get_protocol("dc")

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for name, per_class, epoch_share in CASES:
        x = real.sample_per_class(per_class, torch.Generator().manual_seed(0)).flatten(0, 1)
        y = torch.arange(real.info.num_classes).repeat_interleave(per_class)
        x, y = x.to(dev), y.to(dev)
        epochs = max(1, round(args.epochs * epoch_share))

        def train(mode: str, x=x, y=y, epochs=epochs) -> None:
            g = torch.Generator().manual_seed(1)
            net = create_model_for(proto.arch, real.info, generator=g).to(dev)
            train_network(
                net,
                x,
                y,
                epochs=epochs,
                lr=proto.lr,
                momentum=proto.momentum,
                weight_decay=proto.weight_decay,
                batch_size=proto.batch_size,
                decay_at=proto.decay_at,
                generator=g,
                compile=mode,
            )

        torch._dynamo.reset()  # each case's first run compiles (Inductor's disk cache kept)
        sync()
        t0 = time.perf_counter()
        train("yes")
        sync()
        first = time.perf_counter() - t0
        eager, compiled = time_interleaved(
            [lambda: train("no"), lambda: train("yes")], args.rounds, dev
        )
        e, c = statistics.median(eager), statistics.median(compiled)
        rows.append(
            {
                "case": name,
                "images": int(x.shape[0]),
                "epochs": epochs,
                "eager_s": e,
                "compiled_s": c,
                "speedup": e / c,
                "eager_s_each": eager,
                "compiled_s_each": compiled,
                "first_compiled_s": first,  # includes the compilation
            }
        )
        print(f"{name}: eager {e:.2f} s, compiled {c:.2f} s ({e / c:.2f}x); first {first:.1f} s")
    path = write(
        result,
        {
            "arch": proto.arch,
            "protocol": proto.name,
            "rounds": args.rounds,
            "timing": TIMING,
            "auto_threshold_pixels": TRAIN_COMPILE_MIN_PIXELS,
            "settings": f"ConvNet-3 width 128, micro-batches {default_micro_batch_of(real, dev)}",
            "cases": rows,
        },
    )
    print(path)


if __name__ == "__main__":
    run_main(main)
