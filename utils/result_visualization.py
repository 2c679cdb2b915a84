"""Export a checkpoint's predicted primitives as meshes and renders for any frames, or a sequence as a GIF.

    python3 utils/result_visualization.py model.pth [--data-dir PREPROCESSED]
        [--frame SEQUENCE:FRAME ...] [--test-frames K] [--output-dir DIR]
    python3 utils/result_visualization.py model.pth --gif [SEQUENCE] [--gif-stride N] [--gif-size PIXELS]

OUTPUT defaults to <checkpoint dir>/result (test.py writes <checkpoint dir>/test). For each frame,
OUTPUT/SEQUENCE_FRAME/ gets primitive_00.obj, primitive_01.obj, ... (world coordinates), union.obj (boolean union
of the primitives, watertight), primitives_colored.ply (one colour per primitive), and renders from the input
camera: input.png, prediction.png (coloured by primitive), ground_truth.png (the registration mesh) and
comparison.png (the three side by side).

With --gif, instead, OUTPUT/SEQUENCE.gif animates every N-th frame of one sequence (default: the first test
sequence), each frame three panels: the input image | the prediction coloured by primitive | the ground-truth
mesh coloured by the primitive that owns each vertex (smallest g_m, as evaluation/part_consistency.py). Primitive
m has the same colour in every frame, so a primitive that keeps covering the same body part shows as a colour
that stays put on the body.
"""
from __future__ import annotations

import argparse
import os


import numpy as np
import torch
import trimesh
from PIL import Image
from tqdm import tqdm

import config as config_module
from data import format as fmt
from data.dataset import FrameDataset
from data.preprocessed import Frame, SequenceReader, read_frame
from evaluation.part_consistency import vertex_owners
from models.meshes import primitive_meshes, union_mesh
from checkpoint import load_model
from common.errors import UserError, run_main
from common.atomic import write_atomic
from rendering.renderer import render_meshes

# Ten well separated colours (RGB in [0, 1]); primitive m gets PALETTE[m % 10].
PALETTE = np.array([[0.90, 0.30, 0.25], [0.25, 0.55, 0.90], [0.35, 0.75, 0.35], [0.95, 0.70, 0.20],
                    [0.60, 0.40, 0.80], [0.20, 0.75, 0.75], [0.90, 0.45, 0.70], [0.55, 0.55, 0.55],
                    [0.65, 0.50, 0.30], [0.70, 0.85, 0.30]])
RENDER_SIZE = 448
GIF_FRAME_MS = 100  # display time of one GIF frame
HONOURED = ("eval",)  # --set keys that change the export, not the model exported


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a .pth written by train.py")
    parser.add_argument("--data-dir", help="preprocessed frames (default: the checkpoint's data.preprocessed_dir)")
    parser.add_argument("--split-file", help="split CSV (default: the checkpoint's data.split_file)")
    parser.add_argument("--frame", action="append", default=[], metavar="SEQUENCE:FRAME",
                        help="e.g. 50002_hips:42 (repeatable)")
    parser.add_argument("--test-frames", type=int, default=1,
                        help="without --frame: this many evenly spaced test-split frames (default 1)")
    parser.add_argument("--output-dir", help="default: <checkpoint dir>/result")
    parser.add_argument("--gif", nargs="?", const="", metavar="SEQUENCE",
                        help="write SEQUENCE.gif instead of exporting frames (--test-frames does not apply); "
                             "no SEQUENCE: the first test sequence")
    parser.add_argument("--gif-stride", type=int, default=1, metavar="N",
                        help="every N-th frame in the GIF (default 1)")
    parser.add_argument("--gif-size", type=int, default=256, metavar="PIXELS",
                        help="side of each of the three GIF panels (default 256)")
    config_module.add_override_argument(parser, HONOURED)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    overrides = config_module.honoured_overrides(args.overrides, HONOURED, "result_visualization.py")
    device = torch.device("cpu")
    model, cfg = load_model(args.checkpoint, device)
    config_module.validate(config_module.apply_overrides(cfg, overrides))
    root = args.data_dir or cfg.data.preprocessed_dir
    split_file = args.split_file or cfg.data.split_file
    output_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(args.checkpoint)), "result")
    if args.gif is not None:
        if args.frame:
            raise UserError("--gif renders one whole sequence; drop --frame (or --gif)")
        if args.gif_stride < 1 or args.gif_size < 16:
            raise UserError(f"--gif-stride {args.gif_stride} / --gif-size {args.gif_size}: need a stride >= 1 and "
                            f"panels of >= 16 pixels")
        splits = ("train", "val", "test") if args.gif else cfg.data.test_splits
        dataset = FrameDataset(root, split_file, splits, cfg.data)
        sequence = args.gif or dataset.frames[0][0]
        path = write_gif(model, dataset, sequence, args.gif_stride, args.gif_size, cfg.eval.n_export_vertices,
                         output_dir)
        print(f"wrote {path}")
        return 0
    splits = ("train", "val", "test") if args.frame else cfg.data.test_splits
    dataset = FrameDataset(root, split_file, splits, cfg.data)
    for key in tqdm(_frame_indices(dataset, args), desc="export", unit="frame"):
        sequence, frame = dataset.frames[key]
        out = os.path.join(output_dir, f"{sequence}_{frame:05d}")
        export_frame(model, dataset[key]["image"], read_frame(root, sequence, frame), cfg.eval.n_export_vertices,
                     out)
    print(f"wrote {output_dir}/")
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


def write_gif(model, dataset: FrameDataset, sequence: str, stride: int, size: int, n_vertices: int,
              output_dir: str) -> str:
    """Render every `stride`-th frame of `sequence` (one of dataset's) as a GIF frame of three `size` x `size`
    panels (input | prediction | ground truth by owning primitive); write output_dir/SEQUENCE.gif, return its path."""
    indices = [i for i, (name, _) in enumerate(dataset.frames) if name == sequence][::stride]
    if not indices:
        example = dataset.frames[0][0]
        raise UserError(f"--gif {sequence!r} is not a preprocessed sequence of the split file (for example {example})")
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {output_dir}: {error.strerror}; choose another --output-dir") from None
    frames = []
    with SequenceReader(fmt.sequence_path(dataset.root, sequence)) as reader:
        for index in tqdm(indices, desc="gif", unit="frame"):
            row = reader.row(dataset.frames[index][1])
            frames.append(Image.fromarray(gif_frame(model, dataset.image(index), reader.image(row),
                                                    reader.vertices(row), reader.faces, n_vertices, size)))
    path = os.path.join(output_dir, f"{sequence}.gif")
    write_atomic(path, lambda temp: frames[0].save(temp, format="GIF", save_all=True, append_images=frames[1:],
                                                   duration=GIF_FRAME_MS, loop=0))
    return path


def gif_frame(model, image: torch.Tensor, render: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
              n_vertices: int, size: int) -> np.ndarray:
    """One GIF frame (size, 3 size, 3) uint8: the stored input render (S, S, 3) | the primitives predicted from
    the network input `image` (3, H, W) | the ground-truth mesh (vertices (V, 3), faces (F, 3)) with each face in
    the colour of the primitive owning it."""
    with torch.no_grad():
        C = model.conditioning(image[None])  # (1, M, 512)
        meshes = primitive_meshes(model, C, n_vertices)
        owners = vertex_owners(model, C, torch.from_numpy(vertices)[None])[0].numpy()  # (V,)
    face_owner = majority_owner(owners[faces])  # (F,)
    parts = [(m, np.flatnonzero(face_owner == m)) for m in range(len(meshes))]
    ground_truth = [trimesh.Trimesh(vertices, faces[chosen], process=False) for _, chosen in parts if len(chosen)]
    panels = [np.asarray(Image.fromarray(render).resize((size, size), Image.BILINEAR)),
              render_meshes(meshes, [PALETTE[m % len(PALETTE)] for m in range(len(meshes))], size),
              render_meshes(ground_truth, [PALETTE[m % len(PALETTE)] for m, chosen in parts if len(chosen)], size)]
    return np.concatenate(panels, axis=1)


def majority_owner(corner_owners: np.ndarray) -> np.ndarray:
    """Per face (F,), the owner shared by at least two of its corners (F, 3), else the first corner's."""
    first, second, third = corner_owners.T
    return np.where((second == third) & (first != second), second, first)


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
