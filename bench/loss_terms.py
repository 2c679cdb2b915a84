"""Cost of the loss arithmetic and of the Chamfer metric on the CPU, at the authors' D-FAUST sizes.

    python3 bench/loss_terms.py [--batch 4] [--repeats 7] [--threads 2]

The losses get random predictions of the contract's shapes (B, M = 6, Nv = 5000, Ns = 1500, S = 200) as leaf
tensors, so only the loss arithmetic (distances, reductions, BCE, forward + backward) is timed, not the INN that
produces them (bench/model.py counts that); g_closest_surface is a sphere |x - c| - r of the surface points, so
the normal term's double backward is timed through an analytic implicit. Budget: the losses under 10% of a
training step, the full step of bench/train_step.py at the same sizes, timed alternately with them so both see the
same machine load; the Chamfer metric for one frame (10,000 predicted vs 100,000 target points, trees built
inside) under 50 ms. Every time is the median of --repeats runs after one warm-up.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time


import numpy as np
import torch
import trimesh
from pykdtree.kdtree import KDTree

import config
from train_step import random_batch, timed_step  # bench/train_step.py, beside this script
from config import Config
from losses import TERMS, total_loss
from evaluation.metrics import chamfer_metrics, sample_union_surface
from losses.targets import Targets
from models.neural_parts import NeuralParts
from models.prediction import Prediction
from common.errors import run_main


def make_batch(B: int, M: int, Nv: int, Ns: int, S: int, gen: torch.Generator) -> tuple[Prediction, Targets]:
    """Body-scale inputs: target surface on a 0.5 m sphere, primitive points within ~5 cm of it."""
    directions = torch.nn.functional.normalize(torch.randn(B, Ns, 3, generator=gen), dim=2)
    surface_points = (0.5 * directions).requires_grad_()
    y_prim = (0.5 * torch.nn.functional.normalize(torch.randn(B, S, M, 3, generator=gen), dim=3)
              + 0.02 * torch.randn(B, S, M, 3, generator=gen)).requires_grad_()
    on_surface = torch.rand(B, S, M, generator=gen) < 0.7
    phi_volume = (0.05 * torch.randn(B, Nv, M, generator=gen)).requires_grad_()
    centre = (0.01 * torch.randn(B, 1, 3, generator=gen)).requires_grad_()
    g_closest = (surface_points - centre).norm(dim=2) - 0.5  # (B, Ns), stands in for the INN's g_m*
    labels = (torch.rand(B, Nv, generator=gen) < 0.5).float()
    weights = torch.where(labels > 0, 0.09, 1.91)  # the balanced draw's weights for a 4.5% interior
    pred = Prediction(y_prim, on_surface, phi_volume, phi_volume.detach(), g_closest)
    return pred, Targets(torch.rand(B, Nv, 3, generator=gen), labels, weights, surface_points, directions)


def median_time(run, setup, repeats: int) -> float:
    """Median seconds of run(setup()) over `repeats` runs, after one untimed warm-up; setup is not timed."""
    run(setup())
    times = []
    for _ in range(repeats):
        args = setup()
        started = time.perf_counter()
        run(args)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def alternate_times(first, second, repeats: int) -> tuple[float, float]:
    """Median seconds of first() and of second(), run alternately `repeats` times each after one warm-up, so that
    both see the same machine load."""
    first(), second()
    times = ([], [])
    for _ in range(repeats):
        for run, record in ((first, times[0]), (second, times[1])):
            started = time.perf_counter()
            run()
            record.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def random_order_chamfer(pred_points: np.ndarray, pred_normals: np.ndarray, target_points: np.ndarray,
                         target_normals: np.ndarray) -> float:
    """chamfer_metrics' work (unit normals, both nearest-neighbour directions, |cos|) with the queries in the
    points' own random order: the baseline. Returns Chamfer-L1."""
    def unit(n):
        return n / np.linalg.norm(n, axis=1, keepdims=True)

    def nearest(query, query_normals, data, data_normals):
        dist, index = KDTree(data).query(query, k=1)
        return dist, np.abs(np.einsum("ij,ij->i", query_normals, data_normals[index]))

    pred_normals, target_normals = unit(pred_normals), unit(target_normals)
    accuracy, _ = nearest(pred_points, pred_normals, target_points, target_normals)
    completeness, _ = nearest(target_points, target_normals, pred_points, pred_normals)
    return 0.5 * (accuracy.mean() + completeness.mean())


def bench_losses(args: argparse.Namespace, cfg: Config) -> None:
    B, M, S = args.batch, cfg.model.n_primitives, cfg.model.n_sphere_points
    Nv, Ns = cfg.data.n_volume_points, cfg.data.n_surface_points
    gen = torch.Generator().manual_seed(0)
    runs = {name: lambda batch, term=term: term(*batch, cfg.loss).backward() for name, (term, _) in TERMS.items()}
    runs["total"] = lambda batch: total_loss(*batch, cfg.loss)[0].backward()
    model = NeuralParts(cfg.model).train()
    optimizer = torch.optim.RAdam(model.parameters(), lr=cfg.train.lr, foreach=True)  # as train.py
    images, targets = random_batch(B, Nv, Ns, 224, gen, torch.device("cpu"))

    def step() -> float:
        """Seconds of one training step, as bench/train_step.py counts it (its separate normal timing left out)."""
        clock = timed_step(model, optimizer, images, targets, cfg)
        return sum(clock.values()) - clock["normal loss gradient (create_graph)"]

    times = {"step": [], **{name: [] for name in runs}}
    for repeat in range(args.repeats + 1):  # the first round warms up
        seconds = {"step": step()}
        for name, run in runs.items():
            batch = make_batch(B, M, Nv, Ns, S, gen)
            started = time.perf_counter()
            run(batch)
            seconds[name] = time.perf_counter() - started
        if repeat:
            for name, value in seconds.items():
                times[name].append(value)
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"losses, forward + backward, B={B} M={M} Nv={Nv} Ns={Ns} S={S}, against the training step at the same "
          f"sizes (224 px, fp32), timed alternately: step {median['step']:.2f} s")
    print(f"{'term':<16}{'ms':>10}{'% of step':>12}")
    for name in runs:
        print(f"{name:<16}{median[name] * 1e3:>10.1f}{100 * median[name] / median['step']:>11.2f}%")
    print(f"total: {'within' if median['total'] < 0.1 * median['step'] else 'OVER'} the 10% budget")


def bench_distance_modes(args: argparse.Namespace, cfg: Config) -> None:
    """Why the reconstruction loss does not use torch.cdist's default matmul expansion."""
    B, Ns, SM = args.batch, cfg.data.n_surface_points, cfg.model.n_sphere_points * cfg.model.n_primitives
    gen = torch.Generator().manual_seed(1)
    # a 1 x 2 x 1 m body box, primitive points ~2 cm from target points: distances as late in training
    x = torch.rand(B, Ns, 3, generator=gen) * torch.tensor([1.0, 2.0, 1.0]) - torch.tensor([0.5, 0.75, 0.5])
    y = x[:, torch.randint(0, Ns, (SM,), generator=gen)] + 0.01 * torch.randn(B, SM, 3, generator=gen)
    exact = torch.cdist(x.double(), y.double(), compute_mode="donot_use_mm_for_euclid_dist").min(dim=2).values
    print(f"\nfloat32 nearest-neighbour distances, {B}x{Ns} vs {SM} points (median NN {exact.median():.4f} m)")
    print(f"{'cdist compute_mode':<32}{'max abs error m':>16}{'fwd+bwd ms':>12}")
    for mode in ("use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"):
        error = (torch.cdist(x, y, compute_mode=mode).min(dim=2).values.double() - exact).abs().max()

        def run(leaves, mode=mode):
            dists = torch.cdist(*leaves, compute_mode=mode)
            (dists.min(dim=2).values.mean() + dists.min(dim=1).values.mean()).backward()
        seconds = median_time(run, lambda: (x.clone().requires_grad_(), y.clone().requires_grad_()), args.repeats)
        print(f"{mode:<32}{float(error):>16.2e}{seconds * 1e3:>12.1f}")


def bench_chamfer(args: argparse.Namespace, cfg: Config) -> None:
    rng = np.random.default_rng(0)
    n_pred, n_target = cfg.eval.n_chamfer_points, cfg.data.n_stored_points
    u = rng.normal(size=(n_target, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    print(f"\nChamfer metric, one frame: {n_pred} predicted vs {n_target} target points (0.5 m sphere), "
          "trees included; budget 50 ms. Baseline: the same pykdtree queries in the points' random order, timed "
          "alternately with chamfer_metrics")
    print(f"{'prediction offset':<20}{'ms':>10}{'baseline ms':>14}{'speed-up':>10}")
    for offset in (0.0, 0.01, 0.05):
        v = rng.normal(size=(n_pred, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        shipped, baseline = alternate_times(lambda: chamfer_metrics((0.5 + offset) * v, v, 0.5 * u, u),
                                            lambda: random_order_chamfer((0.5 + offset) * v, v, 0.5 * u, u), args.repeats)
        print(f"{f'{offset * 100:.0f} cm':<20}{shipped * 1e3:>10.1f}{baseline * 1e3:>14.1f}{baseline / shipped:>10.2f}")

    M = cfg.model.n_primitives
    centres = 0.3 * rng.normal(size=(M, 3))
    radii = np.full(M, cfg.model.sphere_radius)
    meshes = [trimesh.creation.icosphere(subdivisions=4, radius=r).apply_translation(c) for c, r in zip(centres, radii)]
    implicit = lambda p: np.linalg.norm(p[:, None] - centres[None], axis=2) - radii[None]  # noqa: E731
    seconds = median_time(lambda _: sample_union_surface(meshes, implicit, n_pred, rng), lambda: None, args.repeats)
    print(f"union-surface sampler, {M} spheres, analytic implicit (INN cost excluded): {seconds * 1e3:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=4, help="B (default 4)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = config.build_config("dfaust", ["model.pretrained=false"])  # the authors' sizes; no weight download
    print(f"torch {torch.__version__}, {args.threads} threads, load average {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs (a load near or above the CPU count means contended timings)")
    bench_losses(args, cfg)
    bench_distance_modes(args, cfg)
    bench_chamfer(args, cfg)


if __name__ == "__main__":
    run_main(main)
