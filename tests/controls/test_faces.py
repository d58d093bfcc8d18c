"""FaceNet identity: the face crop, loading from a path or the cache, keep(identity), MTCNN."""

import pytest
import torch

from energyql.controls.faces import (
    FFHQ_CROP,
    FaceCrop,
    FaceEmbedder,
    load_facenet,
    measure_face_box,
)
from energyql.energies.base import Features
from energyql.energies.conditional import KeepEnergy
from energyql.errors import EnergyQLError, WeightsMissingError
from tests.controls.helpers import save_random_facenet


@pytest.fixture(scope="module")
def facenet_file(tmp_path_factory):
    return save_random_facenet(tmp_path_factory.mktemp("facenet") / "facenet.pt")


@pytest.fixture(scope="module")
def embedder(facenet_file):
    return load_facenet(str(facenet_file))


def test_crop_is_the_stated_region_at_160_pixels():
    images = torch.zeros(1, 3, 100, 100)
    images[:, :, 26:86, 20:80] = 1.0  # exactly the FFHQ crop
    crop = FFHQ_CROP(images)
    assert crop.shape == (1, 3, 160, 160)
    assert torch.allclose(crop, torch.ones_like(crop))
    small = FaceCrop(top=0.0, left=0.5, side=0.5, size=4)(torch.arange(64.).view(1, 1, 8, 8))
    assert small.shape == (1, 1, 4, 4) and float(small[0, 0, 0, 0]) == 4.0


def test_facenet_from_a_path_with_or_without_logits(facenet_file, tmp_path):
    plain = save_random_facenet(tmp_path / "plain.pt", with_logits=False)
    for path in (facenet_file, plain):
        assert isinstance(load_facenet(str(path)), FaceEmbedder)


def test_facenet_from_the_cache_and_offline_error(offline_cache, facenet_file, monkeypatch):
    with pytest.raises(WeightsMissingError) as caught:
        load_facenet("vggface2")
    assert "20180402-114759-vggface2.pt" in str(caught.value) and "curl" in str(caught.value)
    assert not offline_cache.exists()
    offline_cache.mkdir()
    (offline_cache / "20180408-102900-casia-webface.pt").write_bytes(facenet_file.read_bytes())
    monkeypatch.setenv("ENERGYQL_FACENET", "casia")
    assert isinstance(load_facenet(), FaceEmbedder)


def test_facenet_refuses_other_files(tmp_path):
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    with pytest.raises(EnergyQLError, match="does not fit"):
        load_facenet(str(wrong))
    code = tmp_path / "code.pt"
    code.write_bytes(b"not a checkpoint")
    with pytest.raises(EnergyQLError, match="could not read"):
        load_facenet(str(code))
    with pytest.raises(WeightsMissingError, match="not found"):
        load_facenet(str(tmp_path / "absent.pt"))


def test_embeddings_are_unit_deterministic_and_batch_independent(embedder):
    embedder.train()  # stays in eval mode: batch norm keeps its statistics
    images = torch.rand(3, 3, 64, 64)
    together = embedder(images)
    assert together.shape == (3, 512)
    assert torch.allclose(together.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(embedder(images[:1]), together[:1], atol=1e-5)


def test_keep_identity_uses_the_registered_facenet_once_and_pairs_faces(facenet_file, monkeypatch):
    from energyql.catalog import FACES
    from energyql.energies import ControlModels

    monkeypatch.setenv("ENERGYQL_FACENET", str(facenet_file))
    models = ControlModels(FACES)
    embedder = models.identity("identity")
    assert models.identity("identity") is embedder
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    # The registry's loader is the embedder itself: the face is cropped and standardised once.
    assert torch.allclose(embedder(images), load_facenet(str(facenet_file))(images), atol=1e-5)
    energy = KeepEnergy(embedder, "keep(identity)")
    same = energy(Features(images, reference_images=images.detach().clone()))
    assert same.abs().max() < 1e-4
    # A random network maps every image to nearly the same embedding, so distances are small;
    # a plain image against black still differs by far more than rounding.
    different = energy(Features(images, reference_images=torch.zeros(2, 3, 64, 64)))
    assert (different > 1e-5).all()
    different.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_keep_of_a_property_the_world_cannot_keep(monkeypatch):
    from energyql.catalog import FACES
    from energyql.energies import ControlModels

    message = "unknown keepable property of the faces world 'identiy'"
    with pytest.raises(EnergyQLError, match=message) as info:
        ControlModels(FACES).identity("identiy")
    assert "did you mean 'identity'" in info.value.hint


def test_mtcnn_weights_ship_with_facenet_pytorch_and_run_offline(offline_cache):
    assert measure_face_box(torch.zeros(1, 3, 64, 64)) is None  # nothing to find, no download
