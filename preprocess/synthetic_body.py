"""The synthetic person: a template body with a skeleton and skinning weights, per-subject shapes, and skinning.

The template is a smooth union of round cones and ellipsoids (head, neck, chest, abdomen, pelvis, upper arms,
forearms, hands, thighs, shins, feet) meshed once by marching cubes in a calibration A-pose and decimated to
SMPL's size (6,890 vertices, 13,776 faces). That one topology is shared by every subject and frame, as SMPL's
is in DFAUST. Subjects reshape the
template bone by bone (lengths, widths, thickness) and are then scaled to their height; frames pose it by
linear blend skinning (LBS). Skinning weights start as the body part that claims each vertex and are
smoothed over the mesh, so joints bend without tearing and weights never leak between parts that only lie
close in space (a hand and a thigh).

Coordinates are metres, y up; the body faces +z, so its left side is +x. The soles rest at FLOOR_Y.
"""
from __future__ import annotations

from dataclasses import dataclass

import igl
import numpy as np
import scipy.sparse

JOINTS = ("pelvis", "spine", "chest", "neck", "head",
          "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
          "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle")
PARENTS = (-1, 0, 1, 2, 3, 2, 5, 6, 2, 8, 9, 0, 11, 12, 0, 14, 15)  # parents precede children
JOINT_INDEX = {name: index for index, name in enumerate(JOINTS)}
K = len(JOINTS)
# The body part each joint moves, named for what a viewer sees (the left_shoulder joint moves the upper arm).
PART_NAMES = ("pelvis", "abdomen", "chest", "neck", "head",
              "left_upper_arm", "left_forearm", "left_hand", "right_upper_arm", "right_forearm", "right_hand",
              "left_thigh", "left_shin", "left_foot", "right_thigh", "right_shin", "right_foot")

FLOOR_Y = -0.6  # soles in the calibration pose, as in DFAUST's coordinates
TEMPLATE_HEIGHT = 1.70  # metres, soles to top of head, before per-subject scaling
ARM_ABDUCTION_DEG = 12.0  # calibration A-pose: arms this far from hanging straight down
GRID_SPACING = 0.011  # marching-cubes cell, metres (about 18,000 vertices before decimation)
N_FACES = 13_776  # after decimation: SMPL's face count, hence its 6,890 vertices (a closed genus-0 mesh)
BLEND_RADIUS = 0.025  # smooth-union blending distance between parts, metres
WEIGHT_SMOOTHING_STEPS = 40  # neighbour-averaging sweeps that spread skinning weights across joints


@dataclass(frozen=True)
class Template:
    """The shared body: vertices (V, 3) and faces (F, 3) of the calibration pose, template joints (K, 3),
    skinning weights (V, K) (rows sum to 1), all in metres with the soles at y = 0, and the body part of each
    vertex (V,), an index into PART_NAMES (and JOINTS: the joint that moves it before weights are smoothed)."""

    vertices: np.ndarray
    faces: np.ndarray
    joints: np.ndarray
    weights: np.ndarray
    parts: np.ndarray


@dataclass(frozen=True)
class BodyShape:
    """One subject's proportions; factors are relative to the template (1 = template)."""

    height: float  # metres, soles to top of head in the calibration pose
    torso_length: float
    leg_length: float
    arm_length: float
    shoulder_width: float
    hip_width: float
    torso_depth: float  # front-to-back thickness of chest and belly
    limb_thickness: float
    head_size: float


@dataclass(frozen=True)
class Body:
    """One subject in the calibration pose: vertices (V, 3), joints (K, 3), weights (V, K), soles at FLOOR_Y."""

    vertices: np.ndarray
    joints: np.ndarray
    weights: np.ndarray


def sample_shape(rng: np.random.Generator, gender: str) -> BodyShape:
    """Random proportions of a subject; men are taller with wider shoulders, women have wider hips."""
    male = gender == "m"
    return BodyShape(
        height=rng.uniform(1.65, 1.80) if male else rng.uniform(1.50, 1.70),
        torso_length=rng.uniform(0.94, 1.06),
        leg_length=rng.uniform(0.94, 1.06),
        arm_length=rng.uniform(0.95, 1.04),
        shoulder_width=rng.uniform(1.0, 1.08) if male else rng.uniform(0.9, 0.98),
        hip_width=rng.uniform(0.92, 1.0) if male else rng.uniform(1.0, 1.1),
        torso_depth=rng.uniform(0.85, 1.2),
        limb_thickness=rng.uniform(0.85, 1.2),
        head_size=rng.uniform(0.94, 1.04),
    )


def template_joints() -> np.ndarray:
    """Joint positions (K, 3) of the template in the calibration pose, metres, soles at y = 0."""
    arm = np.array([np.sin(np.radians(ARM_ABDUCTION_DEG)), -np.cos(np.radians(ARM_ABDUCTION_DEG)), 0.0])
    left_shoulder = np.array([0.175, 1.41, -0.01])
    left = {
        "shoulder": left_shoulder,
        "elbow": left_shoulder + 0.28 * arm,
        "wrist": left_shoulder + 0.53 * arm,
        "hip": np.array([0.09, 0.91, 0.0]),
        "knee": np.array([0.095, 0.50, 0.01]),
        "ankle": np.array([0.10, 0.085, -0.01]),
    }
    positions = {"pelvis": (0.0, 0.96, 0.0), "spine": (0.0, 1.10, -0.01), "chest": (0.0, 1.27, -0.01),
                 "neck": (0.0, 1.46, -0.01), "head": (0.0, 1.55, 0.0)}
    for part, position in left.items():
        positions[f"left_{part}"] = position
        positions[f"right_{part}"] = position * np.array([-1.0, 1.0, 1.0])
    return np.array([positions[name] for name in JOINTS], dtype=np.float64)


def _primitives(joints: np.ndarray) -> list[tuple[str, tuple, int]]:
    """The template's parts as (kind, parameters, owning joint): "cone" (a, b, r_a, r_b) or "ellipsoid"
    (centre, radii). Distances in metres."""
    j = {name: joints[index] for index, name in enumerate(JOINTS)}
    parts = [
        ("ellipsoid", ((0.0, 1.60, 0.015), (0.075, 0.105, 0.095)), "head"),
        ("cone", ((0.0, 1.585, 0.09), (0.0, 1.575, 0.11), 0.016, 0.014), "head"),  # nose: shows which way it faces
        ("cone", ((0.0, 1.42, -0.01), (0.0, 1.56, 0.0), 0.056, 0.052), "neck"),
        ("ellipsoid", ((0.0, 1.30, 0.0), (0.165, 0.15, 0.105)), "chest"),
        ("cone", ((-0.15, 1.39, -0.015), (0.15, 1.39, -0.015), 0.062, 0.062), "chest"),  # shoulder line
        ("ellipsoid", ((0.0, 1.12, 0.0), (0.14, 0.13, 0.095)), "spine"),
        ("ellipsoid", ((0.0, 0.95, -0.01), (0.165, 0.11, 0.11)), "pelvis"),
    ]
    for side, sign in (("left", 1.0), ("right", -1.0)):
        shoulder, elbow, wrist = j[f"{side}_shoulder"], j[f"{side}_elbow"], j[f"{side}_wrist"]
        hip, knee, ankle = j[f"{side}_hip"], j[f"{side}_knee"], j[f"{side}_ankle"]
        hand_tip = wrist + 0.15 * (wrist - elbow) / np.linalg.norm(wrist - elbow)
        parts += [
            ("cone", (shoulder, shoulder, 0.056, 0.056), f"{side}_shoulder"),
            ("cone", (shoulder, elbow, 0.048, 0.037), f"{side}_shoulder"),
            ("cone", (elbow, wrist, 0.037, 0.026), f"{side}_elbow"),
            ("cone", (wrist, hand_tip, 0.03, 0.022), f"{side}_wrist"),
            ("cone", (hip, knee, 0.084, 0.052), f"{side}_hip"),
            ("cone", (knee, ankle, 0.05, 0.032), f"{side}_knee"),
            ("cone", ((sign * 0.10, 0.04, -0.05), (sign * 0.11, 0.028, 0.15), 0.04, 0.028), f"{side}_ankle"),
        ]
    return [(kind, params, JOINT_INDEX[joint]) for kind, params, joint in parts]


def _round_cone_sdf(points: np.ndarray, a, b, r_a: float, r_b: float) -> np.ndarray:
    """Exact signed distance (N,) to the convex hull of a ball (a, r_a) and a ball (b, r_b)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ba = b - a
    l2 = ba @ ba
    if l2 < 1e-12:
        return np.linalg.norm(points - a, axis=1) - max(r_a, r_b)
    rr = r_a - r_b
    a2 = l2 - rr * rr
    pa = points - a  # (N, 3)
    y = pa @ ba
    z = y - l2
    x2 = np.sum((pa * l2 - np.outer(y, ba)) ** 2, axis=1)
    y2, z2 = y * y * l2, z * z * l2
    k = np.sign(rr) * rr * rr * x2
    cap_b = np.sign(z) * a2 * z2 > k
    cap_a = np.sign(y) * a2 * y2 < k
    side = (np.sqrt(x2 * a2 / l2) + y * rr) / l2 - r_a
    return np.where(cap_b, np.sqrt(x2 + z2) / l2 - r_b, np.where(cap_a, np.sqrt(x2 + y2) / l2 - r_a, side))


def _ellipsoid_sdf(points: np.ndarray, centre, radii) -> np.ndarray:
    """Signed distance bound (N,) to an axis-aligned ellipsoid; exact zero set, approximate elsewhere."""
    q = points - np.asarray(centre)
    radii = np.asarray(radii)
    k0 = np.linalg.norm(q / radii, axis=1)
    k1 = np.linalg.norm(q / radii ** 2, axis=1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-12)


def _part_distances(points: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed distances (P, N) of N points to each of the P parts, and each part's owning joint (P,)."""
    primitives = _primitives(joints)
    distances = np.stack([_round_cone_sdf(points, *params) if kind == "cone" else _ellipsoid_sdf(points, *params)
                          for kind, params, _ in primitives])
    return distances, np.array([joint for _, _, joint in primitives])


def _smooth_union(distances: np.ndarray, radius: float) -> np.ndarray:
    """Polynomial smooth minimum over the first axis of (P, N) distances: parts melt together within `radius`."""
    result = distances[0]
    for d in distances[1:]:
        h = np.maximum(radius - np.abs(result - d), 0.0) / radius
        result = np.minimum(result, d) - h * h * radius / 4.0
    return result


def build_template() -> Template:
    """Mesh the template body once (marching cubes) and compute its skinning weights. Deterministic."""
    joints = template_joints()
    low, high = np.array([-0.5, -0.03, -0.2]), np.array([0.5, TEMPLATE_HEIGHT + 0.05, 0.25])
    counts = np.ceil((high - low) / GRID_SPACING).astype(int) + 1
    axes = [low[i] + GRID_SPACING * np.arange(counts[i]) for i in range(3)]
    # igl wants x varying fastest: index x + y * nx + z * nx * ny.
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).transpose(2, 1, 0, 3).reshape(-1, 3)
    field = _body_field(grid, joints)
    vertices, faces, _ = igl.marching_cubes(field, grid, int(counts[0]), int(counts[1]), int(counts[2]), 0.0)
    # Marching cubes leaves slivers (angles under 1 degree); collapsing the shortest edges first removes
    # them and lands on a fixed, SMPL-sized vertex count. Collapses put vertices at edge midpoints, so
    # they are pulled back onto the surface afterwards.
    vertices, faces, _, _ = igl.decimate(np.asfortranarray(vertices), np.asfortranarray(faces, dtype=np.int32),
                                         N_FACES)
    if len(faces) != N_FACES:
        raise RuntimeError(f"decimation stopped at {len(faces)} faces instead of {N_FACES}")
    vertices = _project_to_surface(np.ascontiguousarray(vertices), joints)
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    parts = vertex_parts(vertices, joints)
    return Template(vertices=vertices, faces=faces, joints=joints, weights=_skinning_weights(parts, faces),
                    parts=parts)


def _body_field(points: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Implicit body (N,): negative inside, zero on the surface, roughly metres."""
    return _smooth_union(_part_distances(points, joints)[0], BLEND_RADIUS)


def _project_to_surface(points: np.ndarray, joints: np.ndarray, steps: int = 3, eps: float = 1e-5) -> np.ndarray:
    """Newton steps along the field's gradient (central differences) onto the zero level set, (N, 3)."""
    for _ in range(steps):
        value = _body_field(points, joints)
        gradient = np.stack([(_body_field(points + eps * e, joints) - _body_field(points - eps * e, joints))
                             / (2 * eps) for e in np.eye(3)], axis=1)  # (N, 3)
        points = points - (value / np.maximum(np.sum(gradient ** 2, axis=1), 1e-12))[:, None] * gradient
    return points


def vertex_parts(vertices: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Body part of each vertex (V,) int64: the joint owning the part of the template closest to it."""
    distances, owners = _part_distances(vertices, joints)
    return owners[np.argmin(distances, axis=0)].astype(np.int64)


def _skinning_weights(parts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, K) weights: one-hot on each vertex's body part (V,), then averaged with mesh neighbours."""
    n_vertices = len(parts)
    weights = np.zeros((n_vertices, K))
    weights[np.arange(n_vertices), parts] = 1.0
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = scipy.sparse.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])),
                                        shape=(n_vertices,) * 2).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    average = scipy.sparse.diags(1.0 / np.asarray(adjacency.sum(axis=1)).ravel()) @ adjacency
    for _ in range(WEIGHT_SMOOTHING_STEPS):
        weights = 0.5 * weights + 0.5 * (average @ weights)
    return weights / weights.sum(axis=1, keepdims=True)


def make_body(template: Template, shape: BodyShape) -> Body:
    """Reshape the template into one subject (same topology), soles at FLOOR_Y, height `shape.height`.

    Every joint gets a linear map M_j of its bone (lengths along the bone, widths across it); child joints
    move with their parent's map, and a vertex blends the maps of its joints with the skinning weights,
    which keeps the surface continuous where parts meet.
    """
    maps = _bone_maps(template.joints, shape)  # (K, 3, 3)
    joints = template.joints.copy()
    for j, parent in enumerate(PARENTS):
        if parent >= 0:
            joints[j] = joints[parent] + maps[parent] @ (template.joints[j] - template.joints[parent])
    offsets = template.vertices[:, None, :] - template.joints[None, :, :]  # (V, K, 3)
    per_joint = joints[None] + np.einsum("kab,vkb->vka", maps, offsets)  # (V, K, 3)
    vertices = np.einsum("vk,vka->va", template.weights, per_joint)
    sole, top = vertices[:, 1].min(), vertices[:, 1].max()
    scale = shape.height / (top - sole)
    origin = np.array([0.0, sole, 0.0])
    floor = np.array([0.0, FLOOR_Y, 0.0])
    return Body(vertices=(vertices - origin) * scale + floor, joints=(joints - origin) * scale + floor,
                weights=template.weights)


def _bone_maps(joints: np.ndarray, shape: BodyShape) -> np.ndarray:
    """Per-joint linear maps (K, 3, 3) applied to offsets from that joint, in the template frame."""
    j = {name: joints[index] for index, name in enumerate(JOINTS)}
    torso = lambda width: np.diag([width, shape.torso_length, shape.torso_depth])  # noqa: E731
    maps = {"pelvis": torso(shape.hip_width), "spine": torso(0.5 * (shape.hip_width + shape.shoulder_width)),
            "chest": torso(shape.shoulder_width), "head": shape.head_size * np.eye(3),
            "neck": np.diag([shape.limb_thickness, 1.0, shape.limb_thickness])}
    for side in ("left", "right"):
        arm = j[f"{side}_wrist"] - j[f"{side}_shoulder"]
        leg = j[f"{side}_ankle"] - j[f"{side}_hip"]
        for bone in ("shoulder", "elbow", "wrist"):
            maps[f"{side}_{bone}"] = _along_and_across(arm, shape.arm_length, shape.limb_thickness)
        for bone in ("hip", "knee"):
            maps[f"{side}_{bone}"] = _along_and_across(leg, shape.leg_length, shape.limb_thickness)
        maps[f"{side}_ankle"] = np.diag([shape.limb_thickness, shape.limb_thickness, 1.0])
    return np.stack([maps[name] for name in JOINTS])


def _along_and_across(axis: np.ndarray, along: float, across: float) -> np.ndarray:
    """Linear map (3, 3) scaling by `along` in the direction of `axis` and by `across` perpendicular to it."""
    a = axis / np.linalg.norm(axis)
    return along * np.outer(a, a) + across * (np.eye(3) - np.outer(a, a))


def forward_kinematics(joints: np.ndarray, rotations: np.ndarray, translation: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """World rotations (T, K, 3, 3) and positions (T, K, 3) of the joints.

    joints: (K, 3) rest positions; rotations: (T, K, 3, 3) local rotations, each relative to its parent and
    expressed in rest-pose axes; translation: (T, 3) added to the root.
    """
    world_rotation = np.empty_like(rotations)
    world_position = np.empty(rotations.shape[:2] + (3,))
    world_rotation[:, 0] = rotations[:, 0]
    world_position[:, 0] = joints[0] + translation
    for j in range(1, K):
        p = PARENTS[j]
        world_rotation[:, j] = world_rotation[:, p] @ rotations[:, j]
        world_position[:, j] = world_position[:, p] + world_rotation[:, p] @ (joints[j] - joints[p])
    return world_rotation, world_position


def skin(body: Body, rotations: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Posed vertices (T, V, 3) by linear blend skinning of `body` with local rotations (T, K, 3, 3) and root
    translation (T, 3)."""
    world_rotation, world_position = forward_kinematics(body.joints, rotations, translation)
    shift = world_position - np.einsum("tkab,kb->tka", world_rotation, body.joints)  # (T, K, 3)
    n_frames = len(rotations)
    transforms = np.concatenate([world_rotation.reshape(n_frames, K, 9), shift], axis=-1)  # (T, K, 12)
    # Weighted sums of the joints' affine maps, as one (V, K) x (K, T * 12) product.
    blended = (body.weights @ transforms.transpose(1, 0, 2).reshape(K, -1)).reshape(-1, n_frames, 12)  # (V, T, 12)
    rotation = blended[..., :9].reshape(-1, n_frames, 3, 3)  # (V, T, 3, 3)
    return np.einsum("vtab,vb->tva", rotation, body.vertices) + blended[..., 9:].transpose(1, 0, 2)
