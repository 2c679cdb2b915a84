"""Export a checkpoint's predicted primitives as meshes and renders for any frames.

    python3 utils/result_visualization.py model.pth [--data-dir PREPROCESSED]
        [--frame SEQUENCE:FRAME ...] [--test-frames K] [--output-dir result/]

For each frame, OUTPUT/SEQUENCE_FRAME/ gets primitive_00.obj, primitive_01.obj, ... (world coordinates),
union.obj (boolean union of the primitives, watertight), primitives_colored.ply (one colour per primitive), and
renders from the input camera: input.png, prediction.png (coloured by primitive), ground_truth.png (the
registration mesh) and comparison.png (the three side by side).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
from PIL import Image  # noqa: E402
from tqdm import tqdm  # noqa: E402

from data.dataset import FrameDataset  # noqa: E402
from data.preprocessed import Frame, read_frame  # noqa: E402
from models.meshes import primitive_meshes, union_mesh  # noqa: E402
from checkpoint import load_model  # noqa: E402
from common.errors import UserError, run_main  # noqa: E402
from common.atomic import write_atomic  # noqa: E402
from rendering.renderer import render_meshes  # noqa: E402

# Ten well separated colours (RGB in [0, 1]); primitive m gets PALETTE[m % 10].
PALETTE = np.array([[0.90, 0.30, 0.25], [0.25, 0.55, 0.90], [0.35, 0.75, 0.35], [0.95, 0.70, 0.20],
                    [0.60, 0.40, 0.80], [0.20, 0.75, 0.75], [0.90, 0.45, 0.70], [0.55, 0.55, 0.55],
                    [0.65, 0.50, 0.30], [0.70, 0.85, 0.30]])
RENDER_SIZE = 448


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a .pth written by train.py")
    parser.add_argument("--data-dir", help="preprocessed frames (default: the checkpoint's data.preprocessed_dir)")
    parser.add_argument("--split-file", help="split CSV (default: the checkpoint's data.split_file)")
    parser.add_argument("--frame", action="append", default=[], metavar="SEQUENCE:FRAME",
                        help="e.g. 50002_hips:42 (repeatable)")
    parser.add_argument("--test-frames", type=int, default=1,
                        help="without --frame: this many evenly spaced test-split frames (default 1)")
    parser.add_argument("--output-dir", default="result", help="default: result/")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    device = torch.device("cpu")
    model, cfg = load_model(args.checkpoint, device)
    if cfg.eval.n_export_vertices < 1:
        raise UserError(f"{args.checkpoint} has eval.n_export_vertices={cfg.eval.n_export_vertices}; it must be >= 1")
    root = args.data_dir or cfg.data.preprocessed_dir
    split_file = args.split_file or cfg.data.split_file
    splits = ("train", "val", "test") if args.frame else cfg.data.test_splits
    dataset = FrameDataset(root, split_file, splits, cfg.data)
    for key in tqdm(_frame_indices(dataset, args), desc="export", unit="frame"):
        sequence, frame = dataset.frames[key]
        out = os.path.join(args.output_dir, f"{sequence}_{frame:05d}")
        export_frame(model, dataset[key]["image"], read_frame(root, sequence, frame), cfg.eval.n_export_vertices,
                     out)
    print(f"wrote {args.output_dir}/")
    return 0


def export_frame(model, image: torch.Tensor, frame: Frame, n_vertices: int, out: str) -> None:
    """Write the meshes and renders of one frame into directory `out`.

    image: (3, H, W) in [0, 1], the model's input; frame: the stored frame (input render, ground-truth mesh).
    """
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {out}: {error.strerror}; choose another --output-dir") from None
    with torch.no_grad():
        C = model.conditioning(image[None])  # (1, M, 512)
        meshes = primitive_meshes(model, C, n_vertices)
    colors = [PALETTE[m % len(PALETTE)] for m in range(len(meshes))]
    for m, mesh in enumerate(meshes):
        write_atomic(os.path.join(out, f"primitive_{m:02d}.obj"),
                     lambda temp, mesh=mesh: mesh.export(temp, file_type="obj"))
    union = union_mesh(meshes)
    write_atomic(os.path.join(out, "union.obj"), lambda temp: union.export(temp, file_type="obj"))
    colored = trimesh.util.concatenate([_painted(mesh, color) for mesh, color in zip(meshes, colors)])
    write_atomic(os.path.join(out, "primitives_colored.ply"), lambda temp: colored.export(temp, file_type="ply"))

    ground_truth = trimesh.Trimesh(frame.vertices, frame.faces, process=False)
    panels = [frame.image, render_meshes(meshes, colors, RENDER_SIZE), render_meshes([ground_truth], None, RENDER_SIZE)]
    names = ["input.png", "prediction.png", "ground_truth.png"]
    for name, panel in zip(names, panels):
        write_atomic(os.path.join(out, name),
                     lambda temp, panel=panel: Image.fromarray(panel).save(temp, format="PNG"))
    side_by_side = np.concatenate([np.asarray(Image.fromarray(p).resize((RENDER_SIZE, RENDER_SIZE))) for p in panels],
                                  axis=1)  # (RENDER_SIZE, 3 RENDER_SIZE, 3)
    write_atomic(os.path.join(out, "comparison.png"),
                 lambda temp: Image.fromarray(side_by_side).save(temp, format="PNG"))


def _painted(mesh: trimesh.Trimesh, color: np.ndarray) -> trimesh.Trimesh:
    painted = mesh.copy()
    painted.visual.vertex_colors = np.tile((np.append(color, 1.0) * 255).astype(np.uint8), (len(mesh.vertices), 1))
    return painted


def _frame_indices(dataset: FrameDataset, args: argparse.Namespace) -> list[int]:
    if not args.frame:
        count = max(1, min(args.test_frames, len(dataset)))
        return sorted(set(np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()))
    lookup = {(sequence, frame): i for i, (sequence, frame) in enumerate(dataset.frames)}
    indices = []
    for text in args.frame:
        sequence, _, frame = text.rpartition(":")
        if not sequence or not frame.isdigit() or (sequence, int(frame)) not in lookup:
            raise UserError(f"--frame {text!r} is not a preprocessed frame of the form SEQUENCE:FRAME "
                            f"(for example {dataset.frames[0][0]}:{dataset.frames[0][1]})")
        indices.append(lookup[(sequence, int(frame))])
    return indices


if __name__ == "__main__":
    run_main(main)
