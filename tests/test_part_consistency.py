"""Part consistency and the primitive x body part table on hand-built owner arrays."""
from __future__ import annotations

import numpy as np
import pytest

from evaluation.part_consistency import common_topology, consistency_report, part_consistency, part_table

FACES = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2]])  # a tetrahedron: 4 vertices


def fixed_sets(n_frames: int, n_vertices: int, M: int) -> np.ndarray:
    """Owners of a predictor whose primitive m always covers the vertices v with v % M == m: (F, V)."""
    return np.tile(np.arange(n_vertices) % M, (n_frames, 1))


def test_primitives_on_fixed_vertex_sets_score_exactly_one():
    assert part_consistency(fixed_sets(50, 200, 5)) == 1.0


def test_primitive_indices_shuffled_per_frame_score_about_one_over_m():
    rng = np.random.default_rng(0)
    n_frames, M = 4000, 4
    owners = fixed_sets(n_frames, 40, M)
    shuffled = np.stack([rng.permutation(M)[row] for row in owners])  # relabel the primitives in every frame
    # The most frequent of M multinomial counts exceeds F / M by about sqrt(F (1/M)(1 - 1/M)) ~ 0.007 F here.
    assert part_consistency(shuffled) == pytest.approx(1 / M, abs=0.02)
    assert part_consistency(shuffled) > 1 / M


def test_mixed_owners_match_a_hand_count():
    owners = np.array([[0, 1, 2],
                       [0, 2, 2],
                       [0, 1, 2],
                       [1, 2, 2]])  # 4 frames x 3 vertices
    # vertex 0: owner 0 in 3 of 4 frames; vertex 1: 1 and 2 twice each (a tie counts 2 of 4); vertex 2: always 2
    assert part_consistency(owners) == pytest.approx((3 / 4 + 2 / 4 + 4 / 4) / 3)


def test_part_table_shares_each_primitives_vertices_over_body_parts():
    owners = np.array([[0, 0, 1, 1],
                       [0, 1, 1, 1]])  # 2 frames x 4 vertices, M = 3 (primitive 2 owns nothing)
    vertex_parts = np.array([0, 1, 1, 0])  # P = 2
    table = part_table(owners, vertex_parts, ("torso", "leg"), 3)
    # primitive 0 owns (f0: v0 torso, v1 leg), (f1: v0 torso); primitive 1 owns v2 leg, v3 torso, then v1 leg too
    np.testing.assert_allclose(table, [[2 / 3, 1 / 3], [2 / 5, 3 / 5], [0.0, 0.0]])


def test_frames_of_another_topology_are_skipped_with_a_note():
    owners = [np.array([0, 1, 1, 0])] * 3 + [np.array([0, 1, 1, 0, 1])]  # the last frame has five vertices
    faces = [FACES] * 3 + [np.array([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1], [1, 4, 3], [1, 3, 2]])]
    report = consistency_report(owners, faces, ["a", "a", "b", "b"], M=2)
    assert report.overall == 1.0
    assert report.per_group == {"a": 1.0, "b": None}  # b keeps a single frame of the common topology
    assert len(report.notes) == 1 and "skipped 1 of 4 frames" in report.notes[0] and "4, 5" in report.notes[0]


def test_same_vertex_count_with_other_faces_is_another_topology():
    kept, note = common_topology([4, 4, 4], [FACES, FACES[:, ::-1], FACES])
    assert kept.tolist() == [0, 2] and "skipped 1 of 3" in note
    kept, note = common_topology([4, 4], [FACES, FACES.copy()])
    assert kept.tolist() == [0, 1] and note is None


def test_no_two_frames_of_one_topology_give_no_score_and_a_note():
    report = consistency_report([np.zeros(4, int), np.zeros(5, int)], [FACES, FACES[:2]], ["a", "a"], M=1)
    assert report.overall is None and report.per_group == {"a": None}
    assert any("at least two frames" in note for note in report.notes)


def test_report_builds_the_table_only_when_the_labels_fit_the_meshes():
    owners, faces = [np.array([0, 1, 1, 0])] * 2, [FACES] * 2
    names = ("upper", "lower")
    fitting = consistency_report(owners, faces, ["a", "a"], 2, (np.array([0, 0, 1, 1]), names))
    np.testing.assert_allclose(fitting.table, [[0.5, 0.5], [0.5, 0.5]])
    assert fitting.part_names == names and fitting.notes == []
    wrong = consistency_report(owners, faces, ["a", "a"], 2, (np.array([0, 1, 1]), names))
    assert wrong.table is None and "cover 3 vertices but the meshes have 4" in wrong.notes[0]
