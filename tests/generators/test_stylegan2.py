"""StyleGAN2: checkpoint format, call semantics, and the energyql Generator adapter."""

import argparse
import os

import pytest
import torch

from energyql.errors import EnergyQLError, WeightsMissingError
from energyql.generators import GeneratorSpec
from energyql.generators import load as load_generator
from energyql.generators.base import Generator
from energyql.generators.stylegan2 import (
    CheckpointError,
    StyleGAN2,
    StyleGAN2Generator,
    default_channels,
    from_state_dict,
    infer_config,
    load,
    load_spec,
)
from tests.generators.sg2_helpers import seeded_state_dict

STYLE_DIM = 32


def tiny(size=16, style_dim=STYLE_DIM, n_mlp=2, width=16, seed=0):
    """A small network with non-standard channels and seeded weights."""
    channels = {2 ** i: max(4, width >> max(0, i - 4)) for i in range(2, 11)}
    net = StyleGAN2(size, style_dim, n_mlp, channels=channels)
    net.load_state_dict(seeded_state_dict(net.state_dict(), seed))
    return net.eval()


def save_checkpoint(net, path, latent_avg=None, **extra):
    checkpoint = {"g_ema": net.state_dict(), **extra}
    if latent_avg is not None:
        checkpoint["latent_avg"] = latent_avg
    torch.save(checkpoint, path)
    return path


# --- the checkpoint format -------------------------------------------------------------------


def test_parameter_and_buffer_names_follow_rosinality_layout():
    names = set(StyleGAN2(8, 16, 2, channels={4: 8, 8: 8}).state_dict())
    expected = {
        "style.1.weight", "style.1.bias", "style.2.weight", "style.2.bias", "input.input",
        "conv1.conv.weight", "conv1.conv.modulation.weight", "conv1.conv.modulation.bias",
        "conv1.noise.weight", "conv1.activate.bias",
        "to_rgb1.bias", "to_rgb1.conv.weight", "to_rgb1.conv.modulation.weight",
        "to_rgb1.conv.modulation.bias",
        "convs.0.conv.weight", "convs.0.conv.blur.kernel", "convs.0.conv.modulation.weight",
        "convs.0.conv.modulation.bias", "convs.0.noise.weight", "convs.0.activate.bias",
        "convs.1.conv.weight", "convs.1.conv.modulation.weight", "convs.1.conv.modulation.bias",
        "convs.1.noise.weight", "convs.1.activate.bias",
        "to_rgbs.0.bias", "to_rgbs.0.upsample.kernel", "to_rgbs.0.conv.weight",
        "to_rgbs.0.conv.modulation.weight", "to_rgbs.0.conv.modulation.bias",
        "noises.noise_0", "noises.noise_1", "noises.noise_2",
    }
    assert names == expected


def test_standard_shapes_of_a_config_f_layer():
    sd = StyleGAN2(64, 64, 1, channel_multiplier=2).state_dict()
    assert sd["input.input"].shape == (1, 512, 4, 4)
    assert sd["convs.6.conv.weight"].shape == (1, 512, 512, 3, 3)  # 64x64, 256 * 2 channels
    assert sd["to_rgbs.3.conv.weight"].shape == (1, 3, 512, 1, 1)
    assert sd["noises.noise_8"].shape == (1, 1, 64, 64)
    assert sd["convs.0.conv.blur.kernel"].sum().item() == pytest.approx(4.0)


@pytest.mark.parametrize("size,style_dim,n_mlp,cm",
                         [(8, 64, 2, 2), (64, 48, 3, 1), (128, 32, 1, 2)])
def test_infer_config_from_standard_state_dict(size, style_dim, n_mlp, cm):
    sd = StyleGAN2(size, style_dim, n_mlp, channel_multiplier=cm).state_dict()
    config = infer_config(sd)
    assert (config["size"], config["style_dim"], config["n_mlp"]) == (size, style_dim, n_mlp)
    assert "channels" not in config
    if size >= 64:
        assert config["channel_multiplier"] == cm


def test_infer_config_keeps_nonstandard_channels():
    net = tiny(32)
    config = infer_config(net.state_dict())
    assert config["channels"] == {r: c for r, c in net.channels.items() if r <= 32}
    assert default_channels(1)[64] == 256


def test_save_reload_strict_and_identical(tmp_path):
    net = tiny(32)
    path = save_checkpoint(net, tmp_path / "g.pt", latent_avg=torch.randn(STYLE_DIM))
    again = load(path)
    assert again.latent_avg.shape == (STYLE_DIM,)
    strict = StyleGAN2(**infer_config(torch.load(path, weights_only=True)["g_ema"]))
    strict.load_state_dict(torch.load(path, weights_only=True)["g_ema"], strict=True)
    z = torch.randn(3, STYLE_DIM)
    with torch.no_grad():
        a, _ = net([z], randomize_noise=False)
        b, _ = again([z], randomize_noise=False)
    assert torch.equal(a, b)


def test_bare_state_dict_and_train_py_checkpoint(tmp_path):
    net = tiny(8)
    torch.save(net.state_dict(), tmp_path / "bare.pt")
    assert load(tmp_path / "bare.pt").latent_avg is None
    # rosinality's train.py also saves the discriminator, optimisers and its argparse options.
    save_checkpoint(net, tmp_path / "train.pt", args=argparse.Namespace(size=8, lr=0.002),
                    d={"w": torch.zeros(2)})
    assert load(tmp_path / "train.pt").size == 8


def test_not_a_generator_is_refused(tmp_path):
    torch.save({"g_ema": {"weight": torch.zeros(3)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a StyleGAN2"):
        load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load(tmp_path / "junk.pt")
    with pytest.raises(WeightsMissingError, match="not found"):
        load(tmp_path / "absent.pt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pt_that_would_run_code_is_refused(tmp_path):
    torch.save({"g_ema": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        load(tmp_path / "evil.pt")


def test_mismatched_shapes_fail_clearly():
    sd = tiny(16).state_dict()
    sd["convs.1.conv.weight"] = sd["convs.1.conv.weight"][:, :, :4]
    with pytest.raises(CheckpointError, match="does not match"):
        from_state_dict(sd)


# --- call semantics --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 8, 16, 32, 64])
def test_shapes_at_several_sizes(size):
    net = tiny(size)
    assert net.n_latent == 2 * net.log_size - 2
    assert len(list(net.noises.buffers())) == net.num_layers == 2 * net.log_size - 3
    image, latent = net([torch.randn(2, STYLE_DIM)], return_latents=True)
    assert image.shape == (2, 3, size, size)
    assert latent.shape == (2, net.n_latent, STYLE_DIM)
    assert torch.isfinite(image).all()
    assert net.input(latent).shape[0] == 2  # called with a tensor, as the original allows


def test_noise_determinism():
    net, z = tiny(16), torch.randn(2, STYLE_DIM)
    with torch.no_grad():
        a, _ = net([z], randomize_noise=False)
        b, _ = net([z], randomize_noise=False)
        c, _ = net([z], noise=[getattr(net.noises, f"noise_{i}") for i in range(net.num_layers)])
        d, _ = net([z])  # fresh random noise
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.allclose(a, d)
    assert len(net.make_noise()) == net.num_layers


def test_truncation():
    net, z = tiny(16), torch.randn(4, STYLE_DIM)
    with torch.no_grad():
        centre = net.mean_latent(64)
        assert centre.shape == (1, STYLE_DIM)
        full, _ = net([z], randomize_noise=False)
        same, _ = net([z], truncation=1, truncation_latent=centre, randomize_noise=False)
        zero, _ = net([z], truncation=0, truncation_latent=centre, randomize_noise=False)
        mean_image, _ = net([centre], input_is_latent=True, randomize_noise=False)
        _half, w = net([z], truncation=0.5, truncation_latent=centre, randomize_noise=False,
                      return_latents=True)
    assert torch.equal(full, same)
    assert torch.allclose(zero, mean_image.expand_as(zero), atol=1e-5)
    expected_w = centre + 0.5 * (net.get_latent(z) - centre)
    assert torch.allclose(w[:, 0], expected_w, atol=1e-6)


def test_style_mixing():
    net = tiny(32)
    z1, z2 = torch.randn(2, STYLE_DIM), torch.randn(2, STYLE_DIM)
    with torch.no_grad():
        w1, w2 = net.get_latent(z1), net.get_latent(z2)
        image, latent = net([z1, z2], inject_index=3, return_latents=True, randomize_noise=False)
        single, _ = net([z1], randomize_noise=False)
        all_first, _ = net([z1, z2], inject_index=net.n_latent, randomize_noise=False)
        wplus, _ = net([latent], input_is_latent=True, randomize_noise=False)
        _, random_mix = net([z1, z2], return_latents=True)
    assert torch.allclose(latent[:, :3], w1[:, None].expand(-1, 3, -1))
    assert torch.allclose(latent[:, 3:], w2[:, None].expand(-1, net.n_latent - 3, -1))
    assert torch.equal(all_first, single)
    assert torch.equal(wplus, image)
    assert not torch.allclose(image, single)
    assert random_mix.shape == latent.shape


def test_gradients_reach_the_latent():
    net = tiny(16)
    z = torch.randn(2, STYLE_DIM, requires_grad=True)
    image, _ = net([z], randomize_noise=False)
    image.square().mean().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


# --- the Generator adapter and the registry loader -------------------------------------------


def test_adapter_decodes_to_unit_range_deterministically():
    gen = StyleGAN2Generator(tiny(16), truncation=1.0)
    assert isinstance(gen, Generator)
    assert gen.latent_dim == STYLE_DIM and gen.image_size == 16
    z = gen.sample_latent(3, generator=torch.Generator().manual_seed(0))
    a, b = gen.decode(z), gen.decode(z)
    assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    net_image, _ = gen.net([z], randomize_noise=False)
    assert torch.allclose(a, ((net_image + 1) / 2).clamp(0, 1))
    assert gen.sample(5, seed=1, batch_size=2).shape == (5, 3, 16, 16)


def test_adapter_truncation_and_gradients():
    net = tiny(16)
    w_avg = net.mean_latent(32)[0]
    gen = StyleGAN2Generator(net, truncation=0.0, w_avg=w_avg)
    images = gen.decode(torch.randn(4, STYLE_DIM))
    assert torch.allclose(images, images[:1].expand_as(images), atol=1e-6)
    gen = StyleGAN2Generator(net, truncation=0.7)
    z = torch.randn(2, STYLE_DIM, requires_grad=True)
    gen.decode(z).sum().backward()
    assert z.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in gen.parameters())
    gen.train()
    assert not gen.net.training


def test_load_spec_from_path_and_registry(tmp_path):
    net = tiny(16)
    path = save_checkpoint(net, tmp_path / "g.pt", latent_avg=torch.zeros(STYLE_DIM))
    gen = load_generator(f"stylegan2:{path}", truncation=0.7)
    assert isinstance(gen, StyleGAN2Generator)
    assert gen.id == f"stylegan2:{path}" and gen.catalog == "faces"
    assert len(gen.weights_digest) == 64 and gen.truncation == 0.7
    assert torch.equal(gen.w_avg, torch.zeros(1, STYLE_DIM))
    with pytest.raises(WeightsMissingError, match="not found"):
        load_generator(f"stylegan2:{tmp_path / 'absent.pt'}")
    with pytest.raises(EnergyQLError, match="unknown generator option"):
        load_generator(f"stylegan2:{path}", temperature=2)


def test_load_spec_from_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    spec = GeneratorSpec("stylegan2-church", "generic", "energyql.generators.stylegan2:load_spec",
                         weights="stylegan2-church", resolution=256)
    with pytest.raises(WeightsMissingError, match="stylegan2-church-config-f.pt"):
        load_spec(spec)
    save_checkpoint(tiny(8), tmp_path / "stylegan2-church-config-f.pt")
    gen = load_spec(spec)
    assert gen.image_size == 8 and gen.id == "stylegan2-church"
