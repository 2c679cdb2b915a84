"""Headless rendering of triangle meshes with the look of the authors' D-FAUST input images.

The authors rendered with simple-3dviz: flat face normals, a point light at the camera, no ambient or
specular term, and per-fragment colour = base * acos(dot(n, normalize(p - light))) / pi on white
(simple-3dviz v0.2.1's mesh shader; camera and light as in paschalidoud/hierarchical_primitives
scripts/render_dfaust.py). We evaluate that formula once per face (at the face centroid; D-FAUST faces are
~1 cm wide, 3 m from the light, so the angle barely varies across a face) and draw the result unlit with
pyrender's FLAT mode, through one OffscreenRenderer per process.

Never fork a process after it has rendered: a forked child inherits a GL context it cannot use. Create
worker pools first and render only inside the workers; `render_meshes` refuses a renderer inherited
through fork.
"""
from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")  # must precede the first OpenGL import

import numpy as np
import pyrender
import trimesh

DEFAULT_COLOR = (0.3, 0.3, 0.3)  # simple-3dviz's default mesh colour
CAMERA_POSITION = (1.0, 1.5, 3.0)  # the authors' D-FAUST camera, metres
CAMERA_TARGET = (0.0, 0.5, 0.0)
CAMERA_UP = (0.0, 1.0, 0.0)
FIELD_OF_VIEW = np.pi / 4  # vertical, radians (simple-3dviz default)
Z_NEAR, Z_FAR = 0.1, 1000.0

_renderer: pyrender.OffscreenRenderer | None = None
_renderer_pid: int | None = None


def render_meshes(meshes: list[trimesh.Trimesh], colors: list[tuple[float, float, float]] | None = None,
                  image_size: int = 224, camera_position=CAMERA_POSITION,
                  camera_target=CAMERA_TARGET) -> np.ndarray:
    """Render meshes on white, light at the camera, up +y.

    meshes: triangle meshes in world coordinates (metres).
    colors: one RGB base colour in [0, 1] per mesh; None gives every mesh DEFAULT_COLOR.
    Returns uint8 (image_size, image_size, 3).
    """
    if colors is None:
        colors = [DEFAULT_COLOR] * len(meshes)
    if len(colors) != len(meshes):
        raise ValueError(f"got {len(colors)} colours for {len(meshes)} meshes")
    eye = np.asarray(camera_position, dtype=np.float64)
    scene = pyrender.Scene(bg_color=[1.0, 1.0, 1.0, 1.0], ambient_light=[0.0, 0.0, 0.0])
    for mesh, color in zip(meshes, colors):
        scene.add(_shaded_mesh(mesh, np.asarray(color, dtype=np.float64), eye))
    camera = pyrender.PerspectiveCamera(yfov=FIELD_OF_VIEW, aspectRatio=1.0, znear=Z_NEAR, zfar=Z_FAR)
    scene.add(camera, pose=look_at(eye, np.asarray(camera_target, dtype=np.float64), np.asarray(CAMERA_UP)))
    renderer = _offscreen_renderer(image_size)
    color_image, _ = renderer.render(scene, flags=pyrender.RenderFlags.FLAT)
    return np.ascontiguousarray(color_image[:, :, :3])


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world pose (4, 4) for a camera at `eye` looking at `target` (OpenGL: looks along -z)."""
    backward = eye - target
    backward = backward / np.linalg.norm(backward)
    right = np.cross(up, backward)
    right = right / np.linalg.norm(right)
    pose = np.eye(4)
    pose[:3, 0] = right
    pose[:3, 1] = np.cross(backward, right)
    pose[:3, 2] = backward
    pose[:3, 3] = eye
    return pose


def face_shading(mesh: trimesh.Trimesh, light: np.ndarray) -> np.ndarray:
    """simple-3dviz luminance per face: acos(dot(n, normalize(centroid - light))) / pi, (F,) in [0, 1].

    1 for a face turned straight at the light, 0.5 for one seen edge-on, 0 for one facing away.
    """
    to_face = mesh.triangles_center - light  # (F, 3)
    to_face /= np.linalg.norm(to_face, axis=1, keepdims=True)
    cosine = np.einsum("fi,fi->f", mesh.face_normals, to_face)
    return np.arccos(np.clip(cosine, -1.0, 1.0)) / np.pi


def _shaded_mesh(mesh: trimesh.Trimesh, color: np.ndarray, light: np.ndarray) -> pyrender.Mesh:
    """Unshared vertices (3 per face) coloured with the face's shaded colour, for unlit drawing."""
    face_color = color[None, :] * face_shading(mesh, light)[:, None]  # (F, 3)
    positions = mesh.vertices[mesh.faces].reshape(-1, 3).astype(np.float32)  # (3F, 3)
    vertex_color = np.repeat(face_color, 3, axis=0)  # (3F, 3)
    vertex_color = np.concatenate([vertex_color, np.ones((len(vertex_color), 1))], axis=1).astype(np.float32)
    material = pyrender.MetallicRoughnessMaterial(baseColorFactor=[1.0, 1.0, 1.0, 1.0], doubleSided=True)
    return pyrender.Mesh([pyrender.Primitive(positions=positions, color_0=vertex_color, material=material)])


def _offscreen_renderer(image_size: int) -> pyrender.OffscreenRenderer:
    """This process's renderer, created on first use; refuses one inherited through fork."""
    global _renderer, _renderer_pid
    if _renderer is not None and _renderer_pid != os.getpid():
        raise RuntimeError("this process was forked after rendering; its GL context is unusable. "
                           "Start worker processes before the parent renders anything.")
    if _renderer is None:
        _renderer = pyrender.OffscreenRenderer(image_size, image_size)
        _renderer_pid = os.getpid()
    _renderer.viewport_width = image_size
    _renderer.viewport_height = image_size
    return _renderer
