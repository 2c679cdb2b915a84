"""FrameDataset: item contract, deterministic draws, frame selection, image resizing, DataLoader workers."""
import dataclasses

import igl
import numpy as np
import pytest
import torch

from config import DataConfig
import data.dataset as dataset_module
from data.dataset import FrameDataset
from data.preprocessed import read_frame
from data.sampling import near_surface
from preprocess import pipeline
from tests.analytic_dfaust import body_mesh, small_dataset, write_split
from common.errors import UserError
from evaluation.loop import evaluation_dataset

CFG = DataConfig(n_stored_points=20_000, n_volume_points=3000, n_surface_points=1500)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory) -> dict:
    """Frames 20-22 of two sequences of a moving sphere (train: 50004_hips, test: 50004_running_on_spot)."""
    directory = tmp_path_factory.mktemp("dataset")
    data = small_dataset(directory, n_frames=23)
    pipeline.run(data["dataset_dir"], directory / "out", data["split_file"], CFG, workers=0, progress=False)
    return {"root": str(directory / "out"), "split_file": str(data["split_file"]), "mesh": data["mesh"]}


def test_item_contract(preprocessed):
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train", "test"), CFG)
    assert len(dataset) == 6
    assert dataset.frames == [("50004_hips", 20), ("50004_hips", 21), ("50004_hips", 22),
                              ("50004_running_on_spot", 20), ("50004_running_on_spot", 21),
                              ("50004_running_on_spot", 22)]
    item = dataset[4]
    shapes = {"image": (3, 224, 224), "volume_points": (3000, 3), "volume_labels": (3000,),
              "volume_weights": (3000,), "surface_points": (1500, 3), "surface_normals": (1500, 3), "index": ()}
    assert {key: tuple(value.shape) for key, value in item.items()} == shapes
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 4
    assert all(item[key].dtype == torch.float32 for key in shapes if key != "index")
    assert 0.0 <= item["image"].min() and item["image"].max() == 1.0  # white background, not normalised
    assert set(item["volume_labels"].unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(item["surface_normals"].norm(dim=1), torch.ones(1500))


def test_items_are_consistent_with_the_mesh(preprocessed):
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("test",), CFG)
    item = dataset[1]  # 50004_running_on_spot frame 21: the sphere moved 21 x 5 mm along x
    mesh = body_mesh()
    vertices = mesh.vertices + [21 * 0.005, 0.0, 0.0]
    winding = igl.winding_number(vertices, mesh.faces, item["volume_points"].double().numpy())
    np.testing.assert_array_equal(item["volume_labels"].numpy(), winding > 0.5)
    radius = np.linalg.norm(item["surface_points"].numpy() - [21 * 0.005, 0.25, 0.0], axis=1)
    assert np.abs(radius - 0.35).max() < 0.01  # on the icosphere (its faces cut inside the sphere by < 1 cm)
    frame = read_frame(preprocessed["root"], "50004_running_on_spot", 21)
    inside_fraction = frame.volume_labels.mean()
    weights = item["volume_weights"].numpy()
    labels = item["volume_labels"].numpy().astype(bool)
    np.testing.assert_allclose(weights[labels], 2 * inside_fraction, rtol=1e-6)
    np.testing.assert_allclose(weights[~labels], 2 * (1 - inside_fraction), rtol=1e-6)


def test_near_surface_draws_keep_the_weighted_means(preprocessed):
    """Half of the outside draws come from a 4 cm band around the sphere; the weights still undo every bias."""
    cfg = dataclasses.replace(CFG, n_volume_points=20_000, near_surface_share=0.5, near_surface_distance=0.04)
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("test",), cfg)
    item = dataset[1]
    frame = read_frame(preprocessed["root"], "50004_running_on_spot", 21)
    band = near_surface(frame.volume_points, frame.vertices, 0.04) & ~frame.volume_labels  # (N,) outside, near
    points, weights = item["volume_points"].numpy(), item["volume_weights"].numpy()
    labels = item["volume_labels"].numpy().astype(bool)
    centre = [21 * 0.005, 0.25, 0.0]  # the sphere of frame 21: radius 0.35
    radius = np.linalg.norm(points - centre, axis=1)
    in_band = ~labels & (radius < 0.35 + 0.04)
    assert 0.46 < in_band.sum() / (~labels).sum() < 0.54  # the near share of the outside draws
    assert band.mean() < 0.1  # ... from a band that is a small part of the outside
    np.testing.assert_allclose(weights[labels], 2 * frame.volume_labels.mean(), rtol=1e-6)
    close = ~labels & (radius < 0.35 + 0.01)  # in the band whatever the vertex spacing
    np.testing.assert_allclose(weights[close], 4 * band.mean(), rtol=1e-6)
    assert abs(np.mean(weights * labels) / frame.volume_labels.mean() - 1) < 0.03  # the inside fraction
    shell = (np.linalg.norm(frame.volume_points - centre, axis=1) < 0.35 + 0.04) & ~frame.volume_labels  # (N,)
    estimates = []  # the fraction of the box in the 4 cm shell, from 10 draws
    for key in range(10):
        draw = dataset[(1, key)]
        in_shell = (np.linalg.norm(draw["volume_points"].numpy() - centre, axis=1) < 0.35 + 0.04) & (
            draw["volume_labels"].numpy() == 0)
        estimates.append(np.mean(draw["volume_weights"].numpy() * in_shell))
    assert abs(np.mean(estimates) / shell.mean() - 1) < 0.03
    evaluated = evaluation_dataset(preprocessed["root"], preprocessed["split_file"], ("test",), cfg)[1]
    np.testing.assert_array_equal(evaluated["volume_points"].numpy(), frame.volume_points)  # evaluation: all stored
    np.testing.assert_array_equal(evaluated["volume_labels"].numpy(), frame.volume_labels)  # points, no draw
    np.testing.assert_array_equal(evaluated["surface_points"].numpy(), frame.surface_points)


def test_near_surface_cache_stays_bounded_and_changes_no_draw(preprocessed, monkeypatch):
    cfg = dataclasses.replace(CFG, near_surface_share=0.5, near_surface_distance=0.04)
    splits = (preprocessed["root"], preprocessed["split_file"], ("train", "test"))
    monkeypatch.setattr(dataset_module, "NEAR_CACHE_FRAMES", 2)
    bounded, fresh = FrameDataset(*splits, cfg), FrameDataset(*splits, cfg)
    for index in [0, 1, 2, 3, 1, 4, 5, 0, 3, 3]:
        sequence_id, frame = bounded.frames[index]
        stored = read_frame(preprocessed["root"], sequence_id, frame)
        reader = bounded._reader(sequence_id)
        mask = bounded._near_surface(sequence_id, reader, reader.row(frame))
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask, near_surface(stored.volume_points, stored.vertices, 0.04))
        assert len(bounded._near) <= 2 and list(bounded._near)[-1] == (sequence_id, reader.row(frame))
        fresh._near.clear()  # every draw from an empty cache
        drawn, expected = bounded[(index, 7)], fresh[(index, 7)]
        assert all(torch.equal(drawn[key], expected[key]) for key in drawn)
    assert all(packed.nbytes == -(-CFG.n_stored_points // 8) for packed in bounded._near.values())  # 1 bit a point


@pytest.mark.parametrize("share, distance", [(1.0, 0.04), (-0.1, 0.04), (0.5, 0.0)])
def test_near_surface_settings_are_checked(preprocessed, share, distance):
    cfg = dataclasses.replace(CFG, near_surface_share=share, near_surface_distance=distance)
    with pytest.raises(UserError, match="data.near_surface_share"):
        FrameDataset(preprocessed["root"], preprocessed["split_file"], ("test",), cfg)


def test_draws_are_deterministic_per_key(preprocessed):
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train",), CFG, seed=5)
    first, again = dataset[1], dataset[1]
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(dataset[1]["volume_points"], FrameDataset(
        preprocessed["root"], preprocessed["split_file"], ("train",), CFG, seed=6)[1]["volume_points"])
    drawn, redrawn, other = dataset[(1, 123)], dataset[(1, 123)], dataset[(1, 124)]
    assert all(torch.equal(drawn[key], redrawn[key]) for key in drawn)
    assert not torch.equal(drawn["surface_points"], other["surface_points"])
    assert torch.equal(drawn["image"], other["image"]) and int(drawn["index"]) == 1


def test_uniform_sampling_and_whole_surface(preprocessed):
    cfg = dataclasses.replace(CFG, balanced_sampling=False, n_surface_points=20_000)
    item = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train",), cfg)[0]
    assert (item["volume_weights"] == 1).all()
    assert 0.05 < item["volume_labels"].mean() < 0.15  # the sphere's share of the box
    frame = read_frame(preprocessed["root"], "50004_hips", 20)
    np.testing.assert_array_equal(item["surface_points"].numpy(), frame.surface_points)  # the only window


def test_image_is_resized_to_the_configured_size(preprocessed):
    cfg = dataclasses.replace(CFG, network_image_size=112)
    image = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train",), cfg)[0]["image"]
    assert image.shape == (3, 112, 112)
    full = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train",), CFG)[0]["image"]
    assert abs(float(image.mean()) - float(full.mean())) < 0.01


def test_frame_selection(preprocessed, tmp_path):
    split = write_split(tmp_path / "split.csv", [("50004_hips", 19, "train"), ("50004_hips", 21, "train"),
                                                 ("50004_hips", 30, "train"), ("50004_hips", 22, "val")])
    with pytest.warns(UserWarning, match="1 of 2 frames of splits train are not preprocessed"):
        dataset = FrameDataset(preprocessed["root"], str(split), ("train",), CFG)
    assert dataset.frames == [("50004_hips", 21)]  # 19 < drop_first_frames, 30 missing, 22 is val
    absent = write_split(tmp_path / "absent.csv", [("50004_hips", 30, "test"), ("50004_knees", 20, "test")])
    with pytest.raises(UserError, match="holds none of the 2 frames of splits test"):
        FrameDataset(preprocessed["root"], str(absent), ("test",), CFG)
    with pytest.raises(UserError, match="nowhere not found"):
        FrameDataset(str(tmp_path / "nowhere"), str(split), ("train",), CFG)
    too_many = dataclasses.replace(CFG, n_surface_points=20_001)
    with pytest.raises(UserError, match="stores 20000 surface samples"):
        FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train",), too_many)


def test_dataloader_workers_open_their_own_files(preprocessed):
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("train", "test"), CFG)
    dataset[0]  # the parent holds open handles before the workers fork
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2)
    batches = list(loader)
    assert torch.equal(torch.cat([batch["index"] for batch in batches]), torch.arange(6))
    assert torch.equal(batches[1]["volume_points"][2], dataset[5]["volume_points"])


def test_body_points_lie_inside_and_on_the_bodies(preprocessed):
    dataset = FrameDataset(preprocessed["root"], preprocessed["split_file"], ("test",), CFG)
    inside, surface = dataset.body_points(n_frames=10, n_per_frame=200, seed=0)
    assert inside.shape == surface.shape == (3 * 200, 3)  # only 3 test frames exist (20-22)
    mesh = body_mesh()
    # Every frame's sphere (radius 0.35 at x = frame x 5 mm) contains each point when shifted by its own frame.
    inside_some_frame = np.zeros(len(inside), dtype=bool)
    on_some_frame = np.zeros(len(surface), dtype=bool)
    for frame in (20, 21, 22):
        shifted = mesh.vertices + [frame * 0.005, 0.0, 0.0]
        inside_some_frame |= igl.winding_number(shifted, mesh.faces, inside.astype(np.float64)) > 0.5
        distance = igl.signed_distance(surface.astype(np.float64), shifted, mesh.faces)[0]
        on_some_frame |= np.abs(distance) < 1e-5
    assert inside_some_frame.all() and on_some_frame.all()
    again = dataset.body_points(n_frames=10, n_per_frame=200, seed=0)
    np.testing.assert_array_equal(inside, again[0])
    np.testing.assert_array_equal(surface, again[1])
