"""The shapes pose regressor: its quick training mode writes loadable weights."""

import torch

from energyql.worlds.shapes import pose


def test_quick_training_writes_weights_that_load_and_read_poses(tmp_path):
    metadata = pose.train(3, batch=16, out=tmp_path / "pose.safetensors", log=lambda *_: None)
    assert metadata["steps"] == 3 and set(metadata["held_out_mae"]) == {"x", "y", "rotation"}
    model = pose.load(path=tmp_path / "pose.safetensors")
    readings = model(torch.rand(4, 3, 32, 32))
    assert set(readings) == {"x", "y", "rotation"} and readings["x"].shape == (4,)
    assert not any(p.requires_grad for p in model.parameters())


def test_identity_embedding_is_a_probability_vector_per_head():
    embedding = pose.load_identity()(torch.rand(2, 3, 32, 32))
    assert embedding.shape == (2, 8)
    assert torch.allclose(embedding.sum(1), torch.full((2,), 3.0), atol=1e-5)
