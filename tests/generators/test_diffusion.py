"""Diffusion generators: our DDIM decode against diffusers' DDIMPipeline, and its gradient."""

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from energyql.errors import UsageError, WeightsMissingError
from energyql.generators import resolve
from energyql.generators.diffusion import (
    DiffusionGenerator,
    ddim_timesteps,
    load_pipeline_folder,
)
from tests.generators.diffusion_helpers import tiny_unet


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 10])
def test_timesteps_match_diffusers(spacing, steps):
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, timestep_spacing=spacing,
                                        steps_offset=1 if spacing == "leading" else 0)
    scheduler.set_timesteps(steps)
    ours = ddim_timesteps(dict(scheduler.config), steps)
    assert [t for t, _ in ours] == scheduler.timesteps.tolist()


@pytest.mark.parametrize("prediction,clip", [("epsilon", True), ("epsilon", False),
                                             ("v_prediction", False), ("sample", True)])
def test_decode_equals_ddim_pipeline(prediction, clip):
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, prediction_type=prediction,
                                        clip_sample=clip)
    steps = 5
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=0.0,
                    num_inference_steps=steps, output_type="pt").images
    x_t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    gen = DiffusionGenerator(unet, scheduler, steps=steps)
    with torch.no_grad():
        ours = gen.decode(x_t.reshape(2, -1))
    assert ours.shape == (2, 3, 8, 8) and gen.latent_dim == 192
    assert (ours - expected).abs().max().item() <= 1e-5
    assert ours.std() > 0.01  # not a constant image


def test_learned_variance_channels_are_dropped():
    unet = tiny_unet(out_channels=6)
    gen = DiffusionGenerator(unet, diffusers.DDIMScheduler(num_train_timesteps=50), steps=2)
    assert gen.decode(torch.randn(1, 192)).shape == (1, 3, 8, 8)


def test_gradient_through_sampler_matches_finite_differences():
    unet = tiny_unet().double()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    gen = DiffusionGenerator(unet, scheduler, steps=3).double()
    seeded = torch.Generator().manual_seed(1)
    z = torch.randn(1, gen.latent_dim, dtype=torch.float64, generator=seeded)
    weights = torch.randn(1, 3, 8, 8, dtype=torch.float64, generator=seeded)

    def objective(latent):
        # Before the final clamp to [0, 1], which would zero some gradients.
        return (gen.denoise(latent.reshape(1, 3, 8, 8)) * weights).sum()

    z.requires_grad_(True)
    grad, = torch.autograd.grad(objective(z), z)
    assert grad.abs().max() > 1e-3
    direction = torch.randn_like(z)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(z + h * direction) - objective(z - h * direction)) / (2 * h)
    assert torch.allclose((grad * direction).sum(), numeric, rtol=1e-6, atol=1e-9)


def test_checkpointing_gives_the_same_gradient():
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100, clip_sample=False)
    z = torch.randn(2, 192)
    grads = []
    for flag in (True, False):
        gen = DiffusionGenerator(unet, scheduler, steps=4, checkpointing=flag)
        latent = z.clone().requires_grad_(True)
        gen.denoise(latent.reshape(2, 3, 8, 8)).square().sum().backward()
        grads.append(latent.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_steps_outside_the_schedule_are_refused():
    with pytest.raises(UsageError, match="steps=0"):
        DiffusionGenerator(tiny_unet(), diffusers.DDIMScheduler(num_train_timesteps=10), steps=0)


def test_saved_pipeline_folder_loads_through_the_registry(tmp_path):
    unet = tiny_unet()
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=100)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    gen = resolve(f"diffusers:{tmp_path / 'pipe'}").load(steps=4)
    direct = DiffusionGenerator(unet, scheduler, steps=4)
    z = torch.randn(2, 192)
    with torch.no_grad():
        assert torch.allclose(gen.decode(z), direct.decode(z), atol=1e-6)
    assert gen.load_options == {"steps": 4} and len(gen.weights_digest) == 64
    assert gen.id == f"diffusers:{tmp_path / 'pipe'}"


def test_latent_diffusion_decodes_through_the_vae(tmp_path):
    torch.manual_seed(0)
    vae = diffusers.VQModel(in_channels=3, out_channels=3, latent_channels=3,
                            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
                            block_out_channels=(8, 8), norm_num_groups=4, num_vq_embeddings=16,
                            vq_embed_dim=3, sample_size=16)
    unet = tiny_unet()
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=100)
    diffusers.LDMPipeline(vqvae=vae, unet=unet, scheduler=scheduler).save_pretrained(tmp_path)
    gen = load_pipeline_folder(tmp_path, steps=3)
    assert gen.vae is not None and gen.latent_dim == 192 and gen.image_size == 16
    z = torch.randn(2, 192, requires_grad=True)
    images = gen.decode(z)
    assert images.shape == (2, 3, 16, 16)
    images.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_missing_pipeline_names_folder_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as info:
        resolve("ddpm-celebahq-256").load()
    assert str(tmp_path / "hf" / "google--ddpm-celebahq-256") in info.value.message
    assert "hf download google/ddpm-celebahq-256" in info.value.hint
    with pytest.raises(WeightsMissingError, match="model_index.json"):
        resolve(f"diffusers:{tmp_path}").load()
