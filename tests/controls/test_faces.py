"""FaceNet identity: the face crop, loading from a path or the cache, the identity energy, MTCNN."""

import pytest
import torch

from energyql.controls.faces import FFHQ_CROP, FaceCrop, FaceEmbedder, load_facenet, measure_face_box
from energyql.energies.base import Features
from energyql.energies.identity import IdentityEnergy
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


def test_identity_energy_is_zero_for_the_same_face_and_differentiable(embedder):
    energy = IdentityEnergy(embedder)
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    # A random network maps every image to nearly the same embedding, so the distances are
    # small; a plain image against noise still differs by far more than rounding.
    others = torch.zeros(2, 3, 64, 64)
    same = energy.pair(images, images.detach().clone())
    assert same.abs().max() < 1e-6
    different = energy.pair(images, others)
    assert (different > 1e-5).all() and (different <= 2).all()
    different.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_identity_energy_with_a_fixed_reference(embedder):
    face = torch.rand(1, 3, 64, 64)
    energy = IdentityEnergy(embedder, reference=face, weight=2.0)
    batch = torch.cat([face, torch.zeros(1, 3, 64, 64)])
    values = energy(Features(batch))
    assert values.shape == (2,)
    assert abs(float(values[0])) < 1e-6 and float(values[1]) > 1e-5
    with pytest.raises(EnergyQLError, match="no reference"):
        IdentityEnergy(embedder)(Features(batch))


def test_mtcnn_weights_ship_with_facenet_pytorch_and_run_offline(offline_cache):
    assert measure_face_box(torch.zeros(1, 3, 64, 64)) is None  # nothing to find, no download
