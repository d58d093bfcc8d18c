"""BigGAN-deep: our network against the pytorch-pretrained-biggan reference, and the adapter."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch.nn import functional as F

from energyql.errors import UsageError, WeightsMissingError
from energyql.generators import resolve
from energyql.generators.biggan import (
    BigGAN,
    BigGANConfig,
    BigGANGenerator,
    class_index,
    truncated_normal,
)
from tests.generators.biggan_helpers import (
    GOLDEN_CONFIGS,
    TRUNCATIONS,
    inputs,
    seeded_network,
)

FIXTURE = Path(__file__).parent / "data" / "biggan_golden.safetensors"
TOLERANCE = 1e-5


def _fixture():
    with safe_open(str(FIXTURE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, json.loads(f.metadata()["configs"])  # noqa: SIM118


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_matches_golden_reference_images(name):
    tensors, configs = _fixture()
    net = BigGAN(BigGANConfig.from_dict(configs[name]))
    prefix = f"{name}.state."
    net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                        strict=True)
    net.eval()
    z, classes = tensors[f"{name}.z"], tensors[f"{name}.classes"]
    for t in TRUNCATIONS:
        with torch.no_grad():
            ours = net(z * t, classes, t)
        expected = tensors[f"{name}.image.{t}"]
        assert ours.shape == expected.shape
        assert (ours - expected).abs().max().item() <= TOLERANCE, (name, t)
        assert expected.std() > 0.05  # the fixture is not a flat image


def test_fixture_matches_the_helpers():
    tensors, configs = _fixture()
    for name in GOLDEN_CONFIGS:
        assert configs[name] == json.loads(json.dumps(seeded_network(name).config.to_dict()))
        z, classes = inputs(name)
        assert torch.equal(tensors[f"{name}.z"], z)
        # The soft class rows pass through a softmax, whose last bit differs between CPU kinds.
        torch.testing.assert_close(tensors[f"{name}.classes"], classes, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_matches_reference_package(name):
    ref = pytest.importorskip("pytorch_pretrained_biggan")
    net = seeded_network(name)
    other = ref.BigGAN(ref.BigGANConfig.from_dict(net.config.to_dict()))
    other.load_state_dict(net.state_dict(), strict=True)
    other.eval()
    ours_again = BigGAN(net.config)
    ours_again.load_state_dict(other.state_dict(), strict=True)  # and the other way round
    z, classes = inputs(name)
    for t in (0.25, 0.5, 0.91):
        with torch.no_grad():
            expected = other(z * t, classes, t)
            assert (net(z * t, classes, t) - expected).abs().max() <= TOLERANCE
            assert (ours_again.eval()(z * t, classes, t) - expected).abs().max() <= TOLERANCE


def _save_folder(net: BigGAN, folder: Path, *, drop_v: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v for k, v in net.state_dict().items() if not (drop_v and k.endswith("weight_v"))}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(net.config.to_dict()))
    return folder


def test_published_files_without_weight_v_match_the_reference_first_call(tmp_path):
    ref = pytest.importorskip("pytorch_pretrained_biggan")
    net = seeded_network("deep32")
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("weight_v")}
    # Stored u vectors that are not yet converged, as in a real checkpoint.
    gen = torch.Generator().manual_seed(5)
    for key in [k for k in state if k.endswith("weight_u")]:
        state[key] = F.normalize(state[key] + 0.3 * torch.randn(state[key].shape, generator=gen),
                                 dim=0)
    folder = tmp_path / "bg"
    folder.mkdir()
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(net.config.to_dict()))
    gen_ours = resolve(f"biggan:{folder}").load(truncation=0.5, class_name=1)
    other = ref.BigGAN.from_pretrained(str(folder))  # strict=False, train mode: one iteration
    z, _classes = inputs("deep32")
    z = z[:1] * 0.5
    with torch.no_grad():
        expected = other(z, F.one_hot(torch.tensor([1]), 10).float(), 0.5)
        ours = gen_ours.net(z, F.one_hot(torch.tensor([1]), 10).float(), 0.5)
    assert (ours - expected).abs().max() <= TOLERANCE


def test_generator_fixed_class_equals_network(tmp_path):
    net = seeded_network("deep64")
    gen = resolve(f"biggan:{_save_folder(net, tmp_path / 'bg')}").load(truncation=0.6,
                                                                       class_name=3)
    assert gen.latent_dim == 8 and gen.image_size == 64 and len(gen.weights_digest) == 64
    assert gen.load_options == {"truncation": 0.6, "class_name": 3}
    u = torch.randn(2, 8)
    with torch.no_grad():
        expected = net(truncated_normal(u, 0.6), F.one_hot(torch.tensor([3, 3]), 7).float(), 0.6)
        assert torch.allclose(gen.decode(u), ((expected + 1) / 2).clamp(0, 1), atol=1e-6)


def test_free_class_latent_and_nearest_class():
    net = seeded_network("deep32")
    gen = BigGANGenerator(net, truncation=0.4)
    assert gen.latent_dim == 32
    # A latent whose class part is exactly class 7's embedding reads back as class 7.
    target = net.class_embeddings[7]
    u_y = torch.linalg.solve_triangular(gen.y_chol, (target - gen.y_mean)[:, None], upper=False)
    latent = torch.cat([torch.zeros(16), u_y[:, 0]])[None]
    assert gen.nearest_class(latent).item() == 7
    images = gen.decode(torch.randn(3, 32, requires_grad=True))
    assert images.shape == (3, 3, 32, 32) and images.requires_grad


def test_truncated_normal_is_bounded_monotone_and_has_the_right_spread():
    u = torch.linspace(-8, 8, 2001, dtype=torch.float64)
    z = truncated_normal(u, 0.5)
    assert z.min() >= -1.0 and z.max() <= 1.0 and (z.diff() >= 0).all()
    assert (z.diff()[(u.abs() < 7)[1:]] > 0).all()  # strictly, away from the saturated tails
    assert torch.allclose(truncated_normal(-u, 0.5), -z)
    draws = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    samples = truncated_normal(draws, 1.0)
    # The variance of N(0, 1) truncated to [-2, 2] is 0.7737.
    assert abs(samples.var().item() - 0.7737) < 0.01


def test_class_names_and_errors():
    assert class_index("golden retriever") == 207 and class_index("Golden_Retriever") == 207
    assert class_index(3) == 3 and class_index("12") == 12
    with pytest.raises(UsageError, match="golden retreiver") as info:
        class_index("golden retreiver")
    assert "golden retriever" in info.value.hint
    with pytest.raises(UsageError, match="outside"):
        BigGANGenerator(seeded_network("deep32"), truncation=1.5)


def test_missing_hub_weights_name_file_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as info:
        resolve("biggan-deep-256").load()
    assert "biggan-deep-256-pytorch_model.bin" in info.value.message
    assert "curl -L -o" in info.value.hint
    with pytest.raises(WeightsMissingError, match="config.json"):
        resolve(f"biggan:{tmp_path}").load()
