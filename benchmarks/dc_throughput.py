"""Seconds per DC / DSA outer iteration: datadistill against a reference-style per-class loop.

Both sides run the same outer iteration on the same machine in the same process: MNIST,
IPC 10 (the paper's schedule: 10 matches, 50 network epochs on the synthetic set between
matches), 256 real images per class, ConvNet-3 (width 32 by default, the table's CPU
matching width; ``--width 128`` is the paper's), the per-channel cosine distance.

* ours: ``datadistill``'s ``dc`` / ``dsa`` method step (one-pass per-class gradients,
  real side in compiled chunks, compiled inner training);
* loop: written the way the reference code does it: for each class one forward and one
  ``autograd.grad`` on the real batch and one (with ``create_graph``) on the synthetic
  batch, the summed distance back-propagated, then eager epochs of SGD on the synthetic set.

Writes benchmarks/results/dc-throughput.json (``ours_s_per_outer``, ``loop_s_per_outer``;
with ``--dsa`` dc-throughput-dsa.json, on a GPU ``-gpu`` is added, ``--out`` names another).
Usage:

    .venv/bin/python -m benchmarks.dc_throughput [--width 32] [--iterations 3] [--dsa] \\
        [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

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
from datadistill.augment import one_family_per_batch
from datadistill.functional import gradient_distance
from datadistill.methods import create_method
from datadistill.models import reset_parameters


def reference_outer_iteration(m, real: dd.RealData, gen: torch.Generator) -> None:
    """One outer iteration the reference way, on the method's own network and set."""
    hp = m.hparams
    dev = m.device
    net, k = m.net, real.info.num_classes
    dsa = m.dsa  # the method's own augmentation (None without --dsa, then unused)
    reset_parameters(net, gen)
    net_opt = torch.optim.SGD(net.parameters(), lr=hp.lr_net)
    params = list(net.parameters())
    for ol in range(m.outer_loop):
        loss = torch.zeros((), device=dev)
        syn_all = m.synthetic().class_images()
        for c in range(k):
            x_real = real.sample(c, hp.batch_real, gen)
            x_syn = syn_all[c]
            if hp.dsa:
                p = dsa.sample(1, gen, dev)
                x_real, x_syn = dsa(x_real[None], p)[0], dsa(x_syn[None], p)[0]
            y_real = torch.full((x_real.shape[0],), c, device=dev)
            y_syn = torch.full((x_syn.shape[0],), c, device=dev)
            g_real = torch.autograd.grad(F.cross_entropy(net(x_real), y_real), params)
            g_real = [g.detach() for g in g_real]
            g_syn = torch.autograd.grad(
                F.cross_entropy(net(x_syn), y_syn), params, create_graph=True
            )
            loss = loss + gradient_distance(
                [g[None] for g in g_real], [g[None] for g in g_syn], hp.distance
            )
        m.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        m.optimizer.step()
        if ol == m.outer_loop - 1:
            break
        images, labels, _ = m.synthetic().materialize()
        images = images.detach()
        for _ in range(m.inner_loop):
            order = torch.randperm(images.shape[0], generator=gen).to(dev)
            for s in range(0, images.shape[0], hp.batch_train):
                idx = order[s : s + hp.batch_train]
                x = images[idx]
                if hp.dsa:
                    x = dsa(x, one_family_per_batch(dsa.sample(x.shape[0], gen, x.device)))
                out = F.cross_entropy(net(x), labels[idx])
                net_opt.zero_grad(set_to_none=True)
                out.backward()
                net_opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--dsa", action="store_true")
    ap.add_argument("--device", default="cpu")
    add_output_options(ap, "dc-throughput[-dsa][-gpu].json, by method and device")
    add_bf16_option(ap, "precision=bfloat16")
    add_data_root(ap)
    args = ap.parse_args()
    dev = dd._device.prepare_device(dd._device.resolve_device(args.device))
    # the table's figure is plain DC on CPU; DSA or a GPU write their own files
    kind = ("-dsa" if args.dsa else "") + ("" if dev.type == "cpu" else "-gpu")
    out = output_name(ap, args, f"dc-throughput{kind}.json")
    real = dd.load_dataset("mnist", root=data_root(args)).to(dev)
    name = "dsa" if args.dsa else "dc"
    m = create_method(name, width=args.width)
    gen = torch.Generator().manual_seed(0)
    # Both sides run in this process, so both get the library's CPU allocator setting.
    m.setup(real, args.ipc, gen, dev)
    t0 = time.perf_counter()
    m.step()  # warm-up: compilation happens here
    warmup = time.perf_counter() - t0
    fns = [m.step, lambda: reference_outer_iteration(m, real, gen)]
    with_bf16 = wants_bf16(args.bf16, dev)
    if with_bf16:  # the same iteration in bfloat16, its own synthetic set and generator
        m16 = create_method(name, width=args.width, precision="bfloat16")
        m16.setup(real, args.ipc, torch.Generator().manual_seed(0), dev)
        m16.step()
        fns.append(m16.step)
    # interleaved iteration by iteration; medians of the timed iterations
    ours_t, loop_t, *rest = time_interleaved(fns, args.iterations, dev)
    ours, loop = statistics.median(ours_t), statistics.median(loop_t)
    print(f"ours {ours:.2f} s per outer iteration (warm-up {warmup:.1f} s): {ours_t}")
    print(f"loop {loop:.2f} s per outer iteration: {loop_t}; speed-up {loop / ours:.2f}x")
    extra: dict[str, object] = {}
    if with_bf16:
        b = statistics.median(rest[0])
        extra = {"bf16_s_per_outer": b, "bf16_speedup": loop / b, "bf16_s_each": rest[0]}
        print(f"ours in bfloat16 {b:.2f} s per outer iteration: speed-up {loop / b:.2f}x")
    write(
        out,
        {
            "ours_s_per_outer": ours,
            "loop_s_per_outer": loop,
            "speedup": loop / ours,
            "ours_warmup_seconds": warmup,
            "iterations_timed": args.iterations,
            "ours_s_each": ours_t,
            "loop_s_each": loop_t,
            **extra,
            "timing": TIMING,
            "settings": (
                f"{name}, MNIST IPC {args.ipc}, (outer, inner) = ({m.outer_loop}, "
                f"{m.inner_loop}), batch_real 256 per class, ConvNet-3 w{args.width} "
                f"instancenorm, distance ours, {dev.type.upper()}"
            ),
        },
    )


if __name__ == "__main__":
    run_main(main)
