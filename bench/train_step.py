"""One full training step at the authors' D-FAUST setting, timed and split into its parts.

    python3 bench/train_step.py [--batch 1] [--primitives 6] [--volume 5000] [--surface 1500] [--sphere 200]
                                [--bf16] [--threads 2] [--repeats 5]

A step is what train.py does per batch: forward (ResNet-18, the INN and the implicit), the five losses (the
normal term's gradient with create_graph), the training IoU, backward (through the normal term's double
backward), gradient clipping and the RAdam step. Inputs are random but well formed: an ellipsoidal "body", volume
points drawn balanced with importance weights, surface points and normals on the ellipsoid. Prints the median
of `--repeats` steps after 2 warm-ups, the split, peak RSS, and as its last line `s_per_step=<value>`.
For scale: the authors' code (paschalidoud/neural_parts at e4386e2, config/dfaust_6.yaml) took 5.44 s/step on
the same 2-core CPU kind, timed the same way (median of 5 after 2 warm-ups, 2 threads, fp32).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time


import torch

import config
from losses import TERMS, normal_consistency_loss, total_loss
from evaluation.metrics import weighted_iou
from losses.targets import Targets
from models.neural_parts import NeuralParts

AUTHORS_S_PER_STEP = 5.44  # B=1, M=6, 5,000 / 1,500 / 200, fp32, this machine kind
BODY_CENTRE, BODY_RADII = torch.tensor([0.0, 0.3, 0.0]), torch.tensor([0.2, 0.85, 0.12])


def random_batch(B: int, n_volume: int, n_surface: int, image_size: int, generator: torch.Generator,
                 device: torch.device):
    """Images (B, 3, S, S) and Targets of an axis-aligned ellipsoid inside the 1x2x1 box, on `device`."""
    box_min, box_max = torch.tensor([-0.5, -0.75, -0.5]), torch.tensor([0.5, 1.25, 0.5])
    pool = box_min + (box_max - box_min) * torch.rand(B, 20 * n_volume, 3, generator=generator)
    inside_pool = (((pool - BODY_CENTRE) / BODY_RADII) ** 2).sum(-1) < 1  # (B, P)
    n_in = inside_pool.sum(1, keepdim=True).float()
    n_out = inside_pool.shape[1] - n_in
    probability = torch.where(inside_pool, n_out, n_in) / (2 * n_in * n_out)  # balanced: half the draws inside
    index = torch.multinomial(probability, n_volume, replacement=True, generator=generator)
    points = torch.gather(pool, 1, index[..., None].expand(-1, -1, 3))
    labels = torch.gather(inside_pool, 1, index).float()
    weights = (1.0 / pool.shape[1]) / torch.gather(probability, 1, index)
    direction = torch.nn.functional.normalize(torch.randn(B, n_surface, 3, generator=generator), dim=-1)
    surface = BODY_CENTRE + BODY_RADII * direction
    normals = torch.nn.functional.normalize(direction / BODY_RADII, dim=-1)
    images = torch.rand(B, 3, image_size, image_size, generator=generator)
    return images.to(device), Targets(*(t.to(device) for t in (points, labels, weights, surface, normals)))


def timed_step(model, optimizer, images, targets, cfg) -> dict[str, float]:
    """One training step; returns seconds per part (CUDA work is synchronised before each reading)."""
    def now() -> float:
        if images.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    clock = {}
    targets.surface_points = targets.surface_points.detach().requires_grad_(True)
    started = now()
    prediction = model(images, targets.volume_points, targets.surface_points)
    clock["forward (ResNet + INN + implicit)"] = now() - started
    started = now()
    normal_consistency_loss(prediction, targets, cfg.loss)  # its autograd.grad(create_graph) alone
    clock["normal loss gradient (create_graph)"] = now() - started
    started = now()
    loss, _ = total_loss(prediction, targets, cfg.loss)
    with torch.no_grad():
        weighted_iou(prediction.phi_volume, targets.volume_labels, targets.volume_weights)
    clock["losses + IoU (normal gradient included)"] = now() - started
    started = now()
    loss.backward()
    clock["backward (incl. double backward)"] = now() - started
    started = now()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    clock["clip + optimizer"] = now() - started
    return clock


def resnet_seconds(model, images, repeats: int) -> float:
    """Median forward+backward time of the image encoder alone (part of the forward and backward above)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.conditioning(images).sum().backward()
        times.append(time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--primitives", type=int, default=6)
    parser.add_argument("--volume", type=int, default=5000)
    parser.add_argument("--surface", type=int, default=1500)
    parser.add_argument("--sphere", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the INN (model.bf16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = config.build_config("dfaust", [f"model.n_primitives={args.primitives}", f"model.n_sphere_points={args.sphere}",
                                         f"model.bf16={args.bf16}", "model.pretrained=false"])
    device = torch.device(args.device)
    model = NeuralParts(cfg.model).to(device).train()
    optimizer = torch.optim.RAdam(model.parameters(), lr=cfg.train.lr, foreach=True)  # as train.py
    generator = torch.Generator().manual_seed(0)
    batches = [random_batch(args.batch, args.volume, args.surface, args.image_size, generator, device)
               for _ in range(2 + args.repeats)]
    steps = [timed_step(model, optimizer, images, targets, cfg) for images, targets in batches]
    measured = steps[2:]
    parts = {name: statistics.median(step[name] for step in measured) for name in measured[0]}
    total = statistics.median(sum(step.values()) - step["normal loss gradient (create_graph)"] for step in measured)
    resnet = resnet_seconds(model, batches[0][0], args.repeats)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    peak_gpu = f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if device.type == "cuda" else ""

    print(f"training step: B={args.batch} M={args.primitives} volume={args.volume} surface={args.surface} "
          f"sphere={args.sphere} image={args.image_size} {'bf16 INN' if args.bf16 else 'fp32'} "
          f"{args.device} threads={args.threads}, median of {args.repeats} after 2 warm-ups")
    print(f"{'part':<42}{'seconds':>9}{'share':>8}")
    for name, seconds in parts.items():
        note = "  (timed separately; inside 'losses')" if name.startswith("normal") else ""
        print(f"{name:<42}{seconds:>9.3f}{seconds / total:>8.1%}{note}")
    print(f"{'ResNet-18 forward+backward (alone)':<42}{resnet:>9.3f}{resnet / total:>8.1%}  (inside forward/backward)")
    print(f"{'step':<42}{total:>9.3f}")
    print(f"s/shape {total / args.batch:.3f}  it/s {1 / total:.2f}  peak RSS {peak_gib:.2f} GiB{peak_gpu}  "
          f"loss terms: {', '.join(TERMS)}")
    print(f"authors' code at B=1, M=6, 5,000/1,500/200, fp32: {AUTHORS_S_PER_STEP} s/step -> "
          f"speed-up {AUTHORS_S_PER_STEP / total:.2f}x (meaningful at that setting only)")
    print(f"s_per_step={total:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
