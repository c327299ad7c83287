"""Seconds per DM iteration at MNIST IPC 10 with the paper's settings.

256 real images per class, DSA on both sides, ConvNet-3 width 128 with instance norm.
On CPU the same process also times a reference-style step (``--reference``, on by default
there): written the way the reference code does it, one eager forward per class of the
class's 256 real and its synthetic images, each with its own DSA draw, the squared
distance of the mean embeddings summed over classes, one backward. The two are
interleaved iteration by iteration (a shared machine's speed drifts) and medians are
reported, so the speed-up is a same-machine figure. Where the device computes bfloat16
natively (``--bf16 auto``) it also times DM with ``real_precision="bfloat16"`` (the real
half's forward in bf16, everything with a gradient in float32). Writes
benchmarks/results/dm-throughput.json (``s_per_iteration`` is ours). Usage:

    .venv/bin/python -m benchmarks.dm_throughput [--iterations 10] [--compile auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import datadistill as dd
from benchmarks._common import (
    TIMING,
    add_bf16_option,
    add_data_root,
    add_output_options,
    data_root,
    output_name,
    run_main,
    time_interleaved,
    wants_bf16,
    write,
)
from datadistill.methods import create_method
from datadistill.models import reset_parameters


def reference_step(m, real: dd.RealData, gen: torch.Generator) -> None:
    """One DM iteration the reference way, on the method's own network and set."""
    hp = m.hparams
    net, k = m.net, real.info.num_classes
    dsa = m.dsa  # the method's own augmentation (the paper's DSA settings)
    reset_parameters(net, gen)
    syn_all = m.synthetic().class_images()
    loss = torch.zeros((), device=syn_all.device)
    for c in range(k):
        x_real = real.sample(c, hp.batch_real, gen).to(syn_all.device)
        x_syn = syn_all[c]
        p = dsa.sample(1, gen, x_syn.device)
        x_real, x_syn = dsa(x_real[None], p)[0], dsa(x_syn[None], p)[0]
        out_real = net.embed(x_real).detach()
        out_syn = net.embed(x_syn)
        loss = loss + ((out_real.mean(0) - out_syn.mean(0)) ** 2).sum()
    m.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    m.optimizer.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reference", choices=["auto", "yes", "no"], default="auto")
    add_bf16_option(ap, "real_precision=bfloat16")
    add_output_options(ap, "dm-throughput.json, or dm-throughput-gpu.json on a GPU")
    add_data_root(ap)
    args = ap.parse_args()
    dev = dd._device.prepare_device(dd._device.resolve_device(args.device))
    result = output_name(
        ap, args, "dm-throughput.json" if dev.type == "cpu" else "dm-throughput-gpu.json"
    )
    with_ref = args.reference == "yes" or (args.reference == "auto" and dev.type == "cpu")
    with_bf16 = wants_bf16(args.bf16, dev)
    # both sides sample from the same data on the same device (no host-to-device copies
    # in the reference's timing that ours does not pay)
    real = dd.load_dataset("mnist", root=data_root(args)).to(dev)
    m = create_method("dm", compile=args.compile)
    gen = torch.Generator().manual_seed(0)
    m.setup(real, 10, gen, dev)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        m.step()
    warmup = time.perf_counter() - t0
    fns = [m.step]
    if with_bf16:  # the same step with the real half in bfloat16, its own set and generator
        m16 = create_method("dm", compile=args.compile, real_precision="bfloat16")
        m16.setup(real, 10, torch.Generator().manual_seed(0), dev)
        for _ in range(args.warmup):
            m16.step()
        fns.append(m16.step)
    if with_ref:
        fns.append(lambda: reference_step(m, real, gen))

    ours_t, *rest = time_interleaved(fns, args.iterations, dev)
    s = statistics.median(ours_t)
    out: dict[str, object] = {
        "s_per_iteration": s,
        "warmup_seconds": warmup,
        "iterations_timed": args.iterations,
        "ours_s_each": ours_t,
    }
    if with_bf16:
        bf16_t = rest.pop(0)
        b = statistics.median(bf16_t)
        out |= {"bf16_real_s_per_iteration": b, "bf16_real_s_each": bf16_t}
        print(f"real half in bfloat16: {b:.3f} s per DM iteration")
    if with_ref:
        ref_t = rest[0]
        ref = statistics.median(ref_t)
        out |= {"reference_s_per_iteration": ref, "speedup": ref / s, "reference_s_each": ref_t}
        print(f"reference-style step {ref:.3f} s: speed-up {ref / s:.2f}x")
    path = write(
        result,
        {
            **out,
            "settings": "MNIST IPC 10, batch_real 256 per class, DSA, ConvNet-3 w128 instancenorm",
            "compile": args.compile,
            "device": str(dev),
            "timing": TIMING,
        },
    )
    print(f"{s:.3f} s per DM iteration ({path})")


if __name__ == "__main__":
    run_main(main)
