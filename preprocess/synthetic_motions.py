"""Motions of the synthetic DFAUST sequences, named and shaped after their DFAUST namesakes.

A motion writes a pose for every frame: local joint rotations (T, K, 3, 3) in rest-pose axes and a root
translation (T, 3), built with the small vocabulary of `Pose` (arm, torso, root, place_foot). Every motion
takes the phase `theta` (T,) in radians (one motion cycle is 2 pi) and the per-frame strength `a` (T,) that
scales every angle and displacement: 0 is the calibration A-pose, 1 the full motion. Ground-contact feet
are placed by two-bone inverse kinematics, so they stay on the floor (or lift for hops) while the pelvis
moves. Angles are in degrees; lengths are in metres for the 1.70 m template and `Pose` scales them to the
subject. Amplitudes are modest because every frame must stay inside the 1 x 2 x 1 m volume box that the data
pipeline samples (the generator damps a motion that would still leave it).

Anatomical signs for the left side (the body faces +z, its left is +x); `Pose` mirrors them for the right:
abduction lifts a limb sideways, flexion swings it forward (the knee's flexion swings the shin back).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from preprocess.synthetic_body import JOINT_INDEX, K, forward_kinematics, template_joints

SIDES = ("left", "right")
TOE_REACH, TOE_DROP = 0.16, 0.057  # template toe-pad centre ahead of and below the ankle, metres


def rotation(axis: str, degrees: np.ndarray) -> np.ndarray:
    """Rotations (T, 3, 3) by `degrees` (T,) about the x, y or z axis (right-handed)."""
    angle = np.radians(np.asarray(degrees, dtype=np.float64))
    c, s = np.cos(angle), np.sin(angle)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]  # the plane the rotation turns
    matrix = np.zeros(angle.shape + (3, 3))
    matrix[..., 3 - i - j, 3 - i - j] = 1.0
    matrix[..., i, i], matrix[..., j, j] = c, c
    matrix[..., i, j], matrix[..., j, i] = -s, s
    return matrix


def _align(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Smallest rotations (T, 3, 3) turning directions source (T, 3) onto target (T, 3) (Rodrigues)."""
    u = source / np.linalg.norm(source, axis=-1, keepdims=True)
    v = target / np.linalg.norm(target, axis=-1, keepdims=True)
    axis = np.cross(u, v)  # (T, 3), length sin(angle)
    cosine = np.sum(u * v, axis=-1)
    cross = np.zeros(axis.shape[:-1] + (3, 3))
    cross[..., 0, 1], cross[..., 0, 2], cross[..., 1, 2] = -axis[..., 2], axis[..., 1], -axis[..., 0]
    cross = cross - np.swapaxes(cross, -1, -2)
    return np.eye(3) + cross + cross @ cross / (1.0 + cosine)[..., None, None]


class Pose:
    """The pose of T frames being built: local rotations (T, K, 3, 3) and root translation (T, 3)."""

    def __init__(self, joints: np.ndarray, n_frames: int):
        self.joints = joints  # (K, 3) rest positions of this subject, metres
        self.rotations = np.tile(np.eye(3), (n_frames, K, 1, 1))
        self.translation = np.zeros((n_frames, 3))
        self.scale = _leg_length(joints) / _leg_length(template_joints())  # template metres -> subject metres

    def turn(self, joint: str, axis: str, degrees) -> None:
        """Rotate `joint` by `degrees` (scalar or (T,)) about a rest-pose axis, after the rotations so far."""
        j = JOINT_INDEX[joint]
        self.rotations[:, j] = rotation(axis, np.broadcast_to(degrees, len(self.rotations))) @ self.rotations[:, j]

    def arm(self, side: str, flex=0.0, twist=0.0, abduct=0.0, elbow=0.0, wrist=0.0) -> None:
        """Shoulder flexion, then twist (positive turns a bent forearm outwards), then abduction; then elbow
        and wrist flexion."""
        self.turn(f"{side}_shoulder", "x", -np.asarray(flex))
        self.turn(f"{side}_shoulder", "y", mirror(side) * np.asarray(twist))
        self.turn(f"{side}_shoulder", "z", mirror(side) * np.asarray(abduct))
        self.turn(f"{side}_elbow", "x", -np.asarray(elbow))
        self.turn(f"{side}_wrist", "x", -np.asarray(wrist))

    def torso(self, joint: str = "chest", bend=0.0, lean=0.0, twist=0.0) -> None:
        """At a spine joint: bend forward, lean to the body's right, twist to its left (positive values)."""
        self.turn(joint, "x", bend)
        self.turn(joint, "z", lean)
        self.turn(joint, "y", twist)

    def root(self, x=0.0, y=0.0, z=0.0) -> None:
        """Move the pelvis, and the whole body with it, by (x, y, z) template metres."""
        self.translation += self.scale * _vectors(x, y, z, len(self.translation))

    def place_foot(self, side: str, out=0.0, lift=0.0, forward=0.0, tiptoe=0.0) -> None:
        """Move the foot outwards, up (its lowest point `lift` above the floor) and forwards from its rest
        place (template metres), pitched toes-down by `tiptoe` degrees, by choosing hip, knee and ankle
        angles (two-bone inverse kinematics, the knee bending forwards). Call after the pelvis is posed."""
        hip, knee, ankle = (JOINT_INDEX[f"{side}_{name}"] for name in ("hip", "knee", "ankle"))
        world_rotation, world_position = forward_kinematics(self.joints, self.rotations, self.translation)
        rise = np.asarray(lift) + toe_rise(tiptoe)
        offset = self.scale * _vectors(mirror(side) * np.asarray(out), rise, forward, len(self.translation))
        reach = self.joints[ankle] + offset - world_position[:, hip]  # (T, 3) hip to ankle target, world
        thigh, shin = self.joints[knee] - self.joints[hip], self.joints[ankle] - self.joints[knee]
        l1, l2 = np.linalg.norm(thigh), np.linalg.norm(shin)
        u1, u2 = thigh / l1, shin / l2
        # u1 . R_x(k) u2 = A + B cos k + C sin k; solve for the knee angle k that gives the needed reach.
        a_, b_, c_ = u1[0] * u2[0], u1[1] * u2[1] + u1[2] * u2[2], u1[2] * u2[1] - u1[1] * u2[2]
        needed = (np.sum(reach ** 2, axis=-1) - l1 ** 2 - l2 ** 2) / (2 * l1 * l2)  # (T,)
        knee_angle = np.arctan2(c_, b_) + np.arccos(np.clip((needed - a_) / np.hypot(b_, c_), -1.0, 1.0))
        knee_rotation = rotation("x", np.degrees(knee_angle))  # (T, 3, 3)
        leg = l1 * u1 + np.einsum("tab,b->ta", knee_rotation, l2 * u2)  # (T, 3) in the hip's rest frame
        hip_world = _align(leg, reach)  # (T, 3, 3)
        pelvis_world = world_rotation[:, JOINT_INDEX["pelvis"]]
        self.rotations[:, hip] = np.swapaxes(pelvis_world, -1, -2) @ hip_world
        self.rotations[:, knee] = knee_rotation
        foot = rotation("x", np.broadcast_to(tiptoe, len(self.translation)))
        self.rotations[:, ankle] = np.swapaxes(hip_world @ knee_rotation, -1, -2) @ foot


def _vectors(x, y, z, n: int) -> np.ndarray:
    """(n, 3) from three scalars or (n,) arrays."""
    return np.stack([np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)) for v in (x, y, z)], axis=-1)


def _leg_length(joints: np.ndarray) -> float:
    hip, ankle = JOINT_INDEX["left_hip"], JOINT_INDEX["left_ankle"]
    return float(np.linalg.norm(joints[hip] - joints[ankle]))


def toe_rise(tiptoe) -> np.ndarray:
    """How far (template metres) the ankle must rise so that a foot pitched toes-down by `tiptoe` degrees
    keeps its toes at the floor."""
    pitch = np.radians(tiptoe)
    return TOE_REACH * np.sin(pitch) - TOE_DROP * (1 - np.cos(pitch))


def pulse(theta: np.ndarray) -> np.ndarray:
    """Smooth 0 -> 1 -> 0 over one cycle: (1 - cos theta) / 2."""
    return 0.5 - 0.5 * np.cos(theta)


def hop(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(airborne, landed): the positive half-waves of sin(theta) and of -sin(theta); one hop per cycle."""
    return np.maximum(np.sin(theta), 0.0), np.maximum(-np.sin(theta), 0.0)


def early(a: np.ndarray) -> np.ndarray:
    """Strength for elbow bends, full from a = 1/3: while a motion eases in, its elbows fold before its arms
    swing, so the forearms never sweep out half-bent (the widest, box-leaving part of an arm's path)."""
    return np.minimum(1.0, 3.0 * a)


def other(side: str) -> str:
    return "right" if side == "left" else "left"


def mirror(side: str) -> float:
    """+1 for the left side (+x), -1 for the right."""
    return 1.0 if side == "left" else -1.0


def knee_lift(degrees: np.ndarray) -> dict:
    """Foot offsets (template metres) that lift the thigh by `degrees` with the shin hanging vertically."""
    thigh = np.linalg.norm(np.subtract(*template_joints()[[JOINT_INDEX["left_knee"], JOINT_INDEX["left_hip"]]]))
    return {"lift": thigh * (1 - np.cos(np.radians(degrees))), "forward": thigh * np.sin(np.radians(degrees))}


# Each motion: (pose, theta (T,) radians, a (T,) strength in [0, 1], lead side) -> None, writing into pose.

def chicken_wings(pose: Pose, theta, a, lead) -> None:
    """Bent arms, hands by the chest, flapping the elbows up and out."""
    flap = pulse(theta)
    pose.root(y=-0.01 * a * flap)
    for side in SIDES:
        pose.place_foot(side)
        pose.arm(side, flex=a * 20, twist=-a * 25, abduct=a * (-10 + 40 * flap), elbow=130 * early(a), wrist=a * 20)


def hips(pose: Pose, theta, a, lead) -> None:
    """Circles the pelvis, feet planted, the chest staying above them."""
    pose.root(x=0.04 * a * np.cos(theta), z=0.04 * a * np.sin(theta), y=-0.02 * a)
    pose.torso("pelvis", lean=a * 5 * np.cos(theta), bend=-a * 5 * np.sin(theta))
    pose.torso("spine", lean=a * 10 * np.cos(theta), bend=-a * 9 * np.sin(theta))
    for side in SIDES:
        pose.place_foot(side)
        pose.arm(side, abduct=a * 4, flex=a * 10, elbow=a * 35)


def jiggle_on_toes(pose: Pose, theta, a, lead) -> None:
    """Bobs up onto the toes and down, arms hanging loosely."""
    tiptoe = 20 * a * pulse(theta)
    pose.root(y=toe_rise(tiptoe) - 0.012 * a * (1 - pulse(theta)))
    for side in SIDES:
        pose.place_foot(side, tiptoe=tiptoe)
        pose.arm(side, abduct=a * (-4 + 3 * np.sin(theta - 1.0)), elbow=a * (12 + 8 * np.sin(theta - 1.4)))


def jumping_jacks(pose: Pose, theta, a, lead) -> None:
    """Jumps the feet apart while raising the arms, and back."""
    spread = pulse(theta)  # 0: feet together, arms down; 1: feet apart, arms up
    air = np.sin(theta) ** 2  # airborne between the two landings
    fold = early(a * spread)  # bend the elbows first, so the hands never swing out wide
    pose.root(y=a * (0.05 * air - 0.03))
    for side in SIDES:
        pose.place_foot(side, out=0.15 * a * spread, lift=0.04 * a * air)
        pose.arm(side, flex=15 * fold, twist=a * 40 * spread, abduct=a * 40 * spread, elbow=125 * fold)


def knees(pose: Pose, theta, a, lead) -> None:
    """Lifts the knees high in turn, arms swinging against the legs."""
    lifts = {lead: np.maximum(np.sin(theta), 0.0), other(lead): np.maximum(-np.sin(theta), 0.0)}
    back = -0.11 * a  # the whole body steps back, leaving room for the knees in the volume box
    pose.root(x=-0.03 * mirror(lead) * a * np.sin(theta), y=-0.015 * a, z=back)
    for side, lift in lifts.items():
        foot = knee_lift(a * 60 * lift)
        pose.place_foot(side, tiptoe=a * 25 * lift, lift=foot["lift"], forward=foot["forward"] + back)
        pose.arm(side, flex=a * (10 + 25 * lifts[other(side)]), abduct=a * 5, elbow=70 * early(a))


def light_hopping_loose(pose: Pose, theta, a, lead) -> None:
    """Small hops with soft knees; arms swing loosely behind the bounce."""
    air, landed = hop(theta)
    pose.root(y=a * (0.05 * air - 0.035 * landed))
    for side in SIDES:
        pose.place_foot(side, lift=0.045 * a * air, tiptoe=a * 15 * air)
        pose.arm(side, abduct=a * 5 * np.sin(theta - 1.0), flex=a * 8 * np.sin(theta - 0.8),
                 elbow=a * (15 + 10 * np.sin(theta - 1.2)))
    pose.turn("head", "x", a * 5 * np.sin(theta - 1.0))


def light_hopping_stiff(pose: Pose, theta, a, lead) -> None:
    """Small hops from the ankles with straight knees, arms held at the sides."""
    air, landed = hop(theta)
    pose.root(y=a * (0.035 * air - 0.008 * landed))
    for side in SIDES:
        pose.place_foot(side, lift=0.035 * a * air, tiptoe=a * 20 * air)
        pose.arm(side, abduct=-a * 8, elbow=a * 5)


def one_leg_jump(pose: Pose, theta, a, lead) -> None:
    """Hops on the lead leg, the other knee bent with its foot held up behind."""
    air, landed = hop(theta)
    pose.root(x=0.05 * mirror(lead) * a, y=a * (0.045 * air - 0.03 * landed))
    pose.place_foot(lead, lift=0.04 * a * air, tiptoe=a * 15 * air)
    pose.place_foot(other(lead), lift=a * (0.22 + 0.04 * air), forward=-0.1 * a, tiptoe=a * 20)
    for side in SIDES:
        pose.arm(side, abduct=a * (2 + 4 * air), elbow=a * 40)


def one_leg_loose(pose: Pose, theta, a, lead) -> None:
    """Stands on the lead leg and shakes the other one loosely."""
    pose.root(x=0.05 * mirror(lead) * a, y=-0.01 * a)
    pose.place_foot(lead)
    pose.place_foot(other(lead), lift=a * (0.06 + 0.04 * pulse(2 * theta)), forward=0.12 * a * np.sin(theta),
                    out=0.02 * a * np.sin(2 * theta), tiptoe=a * (15 + 15 * np.sin(theta - 1.0)))
    for side in SIDES:
        pose.arm(side, abduct=a * 5, elbow=a * 25)


def punching(pose: Pose, theta, a, lead) -> None:
    """Guard up, punching forward with each arm in turn, the chest turning into each punch."""
    punches = {lead: np.maximum(np.sin(theta), 0.0) ** 2, other(lead): np.maximum(-np.sin(theta), 0.0) ** 2}
    back = -0.14 * a  # the whole body steps back, leaving room for the punches in the volume box
    pose.root(y=-0.02 * a, z=back)
    pose.torso("chest", twist=a * 15 * (punches["right"] - punches["left"]))
    for side, punch in punches.items():
        pose.place_foot(side, forward=back)
        pose.arm(side, flex=a * (25 + 30 * punch), twist=-a * 20 * (1 - punch), abduct=-a * 5,
                 elbow=125 * early(a) - a * 50 * punch)


def running_on_spot(pose: Pose, theta, a, lead) -> None:
    """Runs in place: knees up and heels kicked back in turn, bent arms swinging, a small bounce."""
    strides = {lead: np.maximum(np.sin(theta), 0.0), other(lead): np.maximum(-np.sin(theta), 0.0)}
    back = -0.06 * a  # the whole body steps back, leaving room for the arms in the volume box
    pose.root(y=a * (0.025 * np.abs(np.sin(theta)) - 0.02), z=back)
    pose.torso("spine", bend=a * 6)
    for side, stride in strides.items():
        pose.place_foot(side, lift=0.15 * a * stride, forward=back + 0.03 * a * stride, tiptoe=a * 35 * stride)
        pose.arm(side, flex=a * (5 + 25 * (strides[other(side)] - stride)), abduct=a * 5, elbow=90 * early(a))


def shake_arms(pose: Pose, theta, a, lead) -> None:
    """Shakes both arms quickly and loosely."""
    for side, phase in ((lead, 0.0), (other(lead), 0.6)):
        pose.place_foot(side)
        pose.arm(side, abduct=a * (3 + 6 * np.sin(theta + phase)), flex=a * 10 * np.sin(theta + phase + 1.0),
                 elbow=a * (25 + 18 * np.sin(theta + phase - 0.8)), wrist=a * 25 * np.sin(theta + phase - 1.6))


def shake_hips(pose: Pose, theta, a, lead) -> None:
    """Shakes the hips quickly from side to side, feet planted, shoulders nearly still."""
    pose.root(x=0.035 * a * np.sin(theta), y=-0.015 * a)
    pose.torso("pelvis", lean=a * 6 * np.sin(theta), twist=a * 8 * np.sin(theta + 0.5))
    pose.torso("spine", lean=-a * 4 * np.sin(theta), twist=-a * 6 * np.sin(theta + 0.5))
    for side in SIDES:
        pose.place_foot(side)
        pose.arm(side, abduct=a * 2, elbow=a * 30)


def shake_shoulders(pose: Pose, theta, a, lead) -> None:
    """Twists the chest quickly to and fro with a little shoulder roll; hips and feet still."""
    pose.torso("chest", twist=a * 14 * np.sin(theta), lean=a * 4 * np.sin(2 * theta))
    for side in SIDES:
        pose.place_foot(side)
        pose.arm(side, flex=a * 10 * mirror(side) * np.sin(theta), elbow=a * 25)


# name -> (motion, seconds per cycle). Keys are DFAUST's sequence names.
MOTIONS: dict[str, tuple[Callable, float]] = {
    "chicken_wings": (chicken_wings, 0.7),
    "hips": (hips, 1.6),
    "jiggle_on_toes": (jiggle_on_toes, 0.45),
    "jumping_jacks": (jumping_jacks, 1.0),
    "knees": (knees, 1.3),
    "light_hopping_loose": (light_hopping_loose, 0.45),
    "light_hopping_stiff": (light_hopping_stiff, 0.4),
    "one_leg_jump": (one_leg_jump, 0.55),
    "one_leg_loose": (one_leg_loose, 0.5),
    "punching": (punching, 0.9),
    "running_on_spot": (running_on_spot, 0.7),
    "shake_arms": (shake_arms, 0.28),
    "shake_hips": (shake_hips, 0.35),
    "shake_shoulders": (shake_shoulders, 0.3),
}
