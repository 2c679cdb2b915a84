"""Cost of the model's forward + backward on this machine, split by part, and the INN's matmul efficiency.

    python3 bench/model.py [--batch 1 4] [--repeats 1] [--threads 2] [--no-bf16] [--clock wall|cpu]

At the authors' D-FAUST sizes (M = 6, Nv = 5000 volume, Ns = 1500 surface, S = 200 sphere points, 224 x 224
images), for each batch size and precision (fp32; bf16 = training-mode autocast of the INN), times:

  resnet     ResNet-18 + head -> C, forward + backward
  phi        y_prim = phi(sphere points), forward + backward
  implicit   gradient-free g_m at the volume points, surface points and y_prim (signs, phi_surface, on_surface),
             plus the euclidean implicit's nearest-point distances, forward + backward
  normal     g_{m*} at the surface points, its gradient with create_graph, and the normal loss's double backward
  step       the whole NeuralParts.forward + backward of a loss touching every output (one call, not a sum)

The INN's floating-point work (matrix multiplies only, counted by torch's FlopCounterMode, backward included) over
the time of phi + implicit + normal gives its rate, compared with this machine's dense matmul rate measured in the
same run (the faster of a 2048^3 product and a (4096 x 256) @ (256 x 256) one). Every time is the best of
--repeats runs (the least disturbed by other processes on a shared machine) after one warm-up; the step needs no
warm-up of its own after its parts. The last line is `inn_matmul_fraction=<fp32 value at the first batch size>`.
On a machine shared with other jobs, `--threads 1 --clock cpu` (process CPU time) gives figures that contention
barely moves; with more threads CPU time would also count the threads' spin-waiting, so keep it to one thread.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable


import torch
from torch.utils.flop_counter import FlopCounterMode

from config import ModelConfig
from models.geometry import euclidean_implicit, sample_sphere_points
from models.neural_parts import NeuralParts
from common.errors import UserError, run_main

NV, NS, S, M, IMAGE = 5000, 1500, 200, 6, 224
INN_PARTS = ("phi", "implicit", "normal")
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(run: Callable[[], None], repeats: int, clock: Callable[[], float]) -> float:
    times = []
    for _ in range(repeats):
        started = clock()
        run()
        times.append(clock() - started)
    return min(times)


def counted_flops(run: Callable[[], None]) -> int:
    """Matrix-multiply flops of one run (also serves as the warm-up)."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def matmul_rate(dtype: torch.dtype, repeats: int, clock: Callable[[], float]) -> float:
    """Dense matmul flop/s: the faster of a square product and an INN-shaped one."""
    rates = []
    for rows, inner, cols in ((2048, 2048, 2048), (4096, 256, 256)):
        a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, cols, dtype=dtype)
        a @ b
        rates.append(2 * rows * inner * cols / best_time(lambda: a @ b, max(5, repeats), clock))
    return max(rates)


def normal_loss(g: torch.Tensor, x: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    (gradient,) = torch.autograd.grad(g.sum(), x, create_graph=True)
    return (1 - (torch.nn.functional.normalize(gradient, dim=-1) * normals).sum(-1)).mean()


def part_runs(model: NeuralParts, B: int) -> dict[str, Callable[[], None]]:
    """One closure per part, each doing its forward and backward on random inputs of the authors' sizes.

    The INN parts are disjoint and together do the INN work of one step: their inputs that come from another part
    (C, y_prim, the closest primitive m*) are computed here, untimed.
    """
    images = torch.rand(B, 3, IMAGE, IMAGE)
    volume = torch.rand(B, NV, 3) - 0.5
    normals = torch.nn.functional.normalize(torch.randn(B, NS, 3), dim=-1)
    surface = 0.3 * normals
    with torch.no_grad():
        C_value = model.conditioning(images)  # (B, M, 512)
        y_prim_value = model.phi(sample_sphere_points(B, S, M, model.cfg.sphere_radius), C_value)  # (B, S, M, 3)
        closest = model.implicit(surface, C_value).square().argmin(-1)  # (B, Ns)

    def resnet():
        model.conditioning(images).square().mean().backward()

    def phi():
        C = C_value.clone().requires_grad_(True)
        sphere = sample_sphere_points(B, S, M, model.cfg.sphere_radius)
        model.phi(sphere, C).square().mean().backward()

    def implicit():
        y_prim = y_prim_value.clone().requires_grad_(True)
        with torch.no_grad():
            g_volume = model.implicit(volume, C_value)  # signs for the euclidean implicit
            model.implicit(surface, C_value)  # phi_surface
            model.implicit(y_prim.flatten(1, 2), C_value)  # on_surface
        euclidean_implicit(g_volume, volume, y_prim).square().mean().backward()

    def normal():
        C = C_value.clone().requires_grad_(True)
        x = surface.clone().requires_grad_(True)
        u = model.inn.inverse(x, model.inn.condition(C).select(closest))  # (B, Ns, 3)
        normal_loss(torch.linalg.vector_norm(u, dim=-1), x, normals).backward()

    def step():
        x = surface.clone().requires_grad_(True)
        prediction = model(images, volume, x)
        loss = (prediction.y_prim.square().mean() + prediction.phi_volume.square().mean()
                + normal_loss(prediction.g_closest_surface, x, normals))
        loss.backward()

    return {"resnet": resnet, "phi": phi, "implicit": implicit, "normal": normal, "step": step}


def bench(B: int, bf16: bool, repeats: int, clock: Callable[[], float]) -> dict[str, tuple[float, int]]:
    """{part: (best seconds, matmul flops)} for batch size B; the step's flops are not counted (0)."""
    torch.manual_seed(0)
    model = NeuralParts(ModelConfig(pretrained="false", bf16=bf16)).train()
    results = {}
    for name, run in part_runs(model, B).items():
        # FlopCounterMode's module hooks break autograd.grad on the model's inputs, so the whole step is not counted.
        flops = counted_flops(run) if name != "step" else 0
        model.zero_grad(set_to_none=True)
        results[name] = (best_time(run, repeats, clock), flops)
        model.zero_grad(set_to_none=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes (default: 1 4)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (best of)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 measurements")
    parser.add_argument("--clock", choices=list(CLOCKS), default="wall",
                        help="wall time, or process CPU time (use with --threads 1 on a shared machine)")
    args = parser.parse_args()
    if args.repeats < 1 or args.threads < 1 or min(args.batch) < 1:
        raise UserError("--repeats, --threads and --batch must be >= 1")
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    precisions = ["fp32"] + ([] if args.no_bf16 else ["bf16"])
    peak = {p: matmul_rate(torch.float32 if p == "fp32" else torch.bfloat16, args.repeats, clock)
            for p in precisions}
    print(f"threads={args.threads} clock={args.clock}  dense matmul rate: "
          + ", ".join(f"{p} {peak[p] / 1e9:.1f} GFLOP/s" for p in precisions))
    print(f"sizes: M={M} Nv={NV} Ns={NS} S={S} image={IMAGE}; best of {args.repeats} after a warm-up")
    fraction = None
    for B in args.batch:
        for precision in precisions:
            results = bench(B, precision == "bf16", args.repeats, clock)
            print(f"\nB={B} {precision}: part       seconds   matmul GFLOP   GFLOP/s")
            for name, (seconds, flops) in results.items():
                work = f"{flops / 1e9:14.2f} {flops / seconds / 1e9:9.1f}" if flops else f"{'-':>14} {'-':>9}"
                print(f"  {name:<16} {seconds:9.3f} {work}")
            inn_seconds = sum(results[name][0] for name in INN_PARTS)
            inn_flops = sum(results[name][1] for name in INN_PARTS)
            rate = inn_flops / inn_seconds
            print(f"  INN (phi+implicit+normal) {inn_seconds:.3f} s, {inn_flops / 1e9:.1f} GFLOP, "
                  f"{rate / 1e9:.1f} GFLOP/s = {rate / peak[precision]:.0%} of the {precision} matmul rate; "
                  f"step {results['step'][0]:.3f} s ({results['step'][0] / B:.3f} s per item)")
            if fraction is None and precision == "fp32":
                fraction = rate / peak["fp32"]
    print(f"inn_matmul_fraction={fraction:.3f}")
    return 0


if __name__ == "__main__":
    run_main(main)
