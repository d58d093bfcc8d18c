"""Text-to-image generators: DDIM with guidance against diffusers' StableDiffusionPipeline.

Every pipeline here is random and tiny, built in the test (no download): a CLIP tokenizer from a
handwritten vocabulary, a 2-layer CLIPTextModel, a UNet2DConditionModel and an AutoencoderKL.
"""

import json
import shutil
import string
import sys

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from energyql.errors import CheckpointError, UsageError, WeightsMissingError
from energyql.generators import resolve
from energyql.generators.diffusion import load_pipeline_folder as load_unconditional
from energyql.generators.options import check_options
from energyql.generators.text2image import TextToImageGenerator, load_pipeline_folder
from tests.generators.diffusion_helpers import tiny_unet

PROMPT, NEGATIVE = "a photo of a doctor", "the photo"
MAX_TOKENS = 16


def _tokenizer(folder):
    """Return a CLIP tokenizer over letters and a few merges, read from files written here."""
    letters = list(string.ascii_lowercase)
    merges = ["p h", "o t", "ph ot", "phot o</w>", "o f</w>", "d o", "do c", "doc t", "doct o",
              "docto r</w>", "t h", "th e</w>"]
    vocab = ["<|startoftext|>", "<|endoftext|>", *letters, *(c + "</w>" for c in letters),
             *("".join(m.split()) for m in merges)]
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return transformers.CLIPTokenizer.from_pretrained(str(folder), model_max_length=MAX_TOKENS)


def _perturbed(module, seed):
    # Random, not zero-initialised output layers, so that every part shapes the images.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return module.eval()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    """A random tiny StableDiffusionPipeline (latents 4×8×8, images 16×16) with SD's schedule."""
    torch.manual_seed(0)
    tokenizer = _tokenizer(tmp_path_factory.mktemp("tokenizer") / "files")
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=0,
        eos_token_id=1, pad_token_id=1))
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8, attention_head_dim=8)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=16)
    # Stable Diffusion's scheduler settings, over 100 training steps.
    scheduler = diffusers.DDIMScheduler(
        num_train_timesteps=100, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = diffusers.StableDiffusionPipeline(
        vae=_perturbed(vae, 1), text_encoder=_perturbed(text_encoder, 2), tokenizer=tokenizer,
        unet=_perturbed(unet, 3), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture(scope="module")
def folders(pipe, tmp_path_factory):
    """The pipeline saved once per timestep spacing: ``folders(spacing)`` -> its folder."""
    saved = {}

    def folder(spacing="leading"):
        if spacing not in saved:
            pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config,
                                                                 timestep_spacing=spacing)
            saved[spacing] = tmp_path_factory.mktemp(f"sd-{spacing}")
            pipe.save_pretrained(saved[spacing])
        return saved[spacing]

    return folder


def _reference(pipe, folder, x_t, steps, guidance, prompt=PROMPT, negative=NEGATIVE):
    """diffusers' own images, with the scheduler saved in ``folder``."""
    pipe.scheduler = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    return pipe(prompt, negative_prompt=negative, num_inference_steps=steps,
                guidance_scale=guidance, eta=0.0, latents=x_t, output_type="pt",
                num_images_per_prompt=len(x_t)).images


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("guidance", [1.0, 3.0])  # diffusers guides only above 1
def test_images_equal_the_stable_diffusion_pipeline(pipe, folders, spacing, steps, guidance):
    folder = folders(spacing)
    x_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(steps))
    expected = _reference(pipe, folder, x_t, steps, guidance)
    gen = load_pipeline_folder(folder, prompt=PROMPT, negative_prompt=NEGATIVE,
                               guidance=guidance, steps=steps)
    with torch.no_grad():
        ours = gen.decode(x_t.reshape(2, -1))
    assert ours.shape == (2, 3, 16, 16) and gen.latent_dim == 256
    assert gen.latent_shape == (4, 8, 8) and gen.image_size == 16
    assert (ours - expected).abs().max().item() <= 1e-4
    assert ours.std() > 0.05  # not a constant image


def test_prompt_negative_prompt_and_guidance_change_the_images(folders):
    z = torch.randn(1, 256, generator=torch.Generator().manual_seed(0))

    def images(**options):
        with torch.no_grad():
            return load_pipeline_folder(folders(), steps=3, **options).decode(z)

    base = images(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=3.0)
    for other in (dict(prompt="the", negative_prompt=NEGATIVE, guidance=3.0),
                  dict(prompt=PROMPT, negative_prompt="", guidance=3.0),
                  dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=1.0)):
        assert (images(**other) - base).abs().max() > 1e-3, other


def test_a_prompt_past_the_tokenizer_is_cut_as_the_pipeline_cuts_it(pipe, folders):
    long = " ".join(["a photo of a doctor"] * 4)  # 20 words: more than 16 tokens
    x_t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    with pytest.warns(UserWarning, match="cut to the text encoder's 16 tokens"):
        gen = load_pipeline_folder(folders(), prompt=long, guidance=2.0, steps=2)
    with torch.no_grad():
        ours = gen.decode(x_t.reshape(1, -1))
    expected = _reference(pipe, folders(), x_t, 2, 2.0, prompt=long, negative="")
    assert (ours - expected).abs().max().item() <= 1e-4


def test_gradients_reach_the_latent_through_checkpointed_steps(folders):
    grads = []
    for checkpointing in (True, False):
        gen = load_pipeline_folder(folders(), prompt=PROMPT, guidance=3.0, steps=2,
                                   checkpointing=checkpointing)
        z = torch.randn(2, 256, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        gen.decode(z).square().sum().backward()
        grads.append(z.grad)
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    assert all(not p.requires_grad for p in gen.parameters())  # the model stays frozen


def test_options_are_recorded_and_reload_the_same_generator(folders):
    spec = f"sd:{folders()}"
    gen = resolve(spec).load(prompt=PROMPT, guidance=2.5, steps=2)
    options = {"prompt": PROMPT, "negative_prompt": "", "guidance": 2.5, "steps": 2,
               "height": 16, "width": 16}
    assert gen.load_options == options
    assert gen.id == spec and len(gen.weights_digest) == 64
    # What a manifest records passes the command line's and the manifest's checks unchanged.
    assert check_options(None, gen.load_options, recorded_only=True) == options
    again = resolve(spec).load(**gen.load_options)
    z = torch.randn(1, 256)
    with torch.no_grad():
        assert torch.equal(gen.decode(z), again.decode(z))


def test_a_manifest_records_a_long_prompt():
    from pathlib import Path

    from energyql.manifest import Manifest

    # A real manifest (tests/data/format1) with text-to-image options in its generator record.
    data = json.loads((Path(__file__).parents[1] / "data" / "format1" / "manifest.json")
                      .read_text())
    prompt = "a photo of a doctor, " * 20  # 420 characters: longer than other text options
    data["generator"]["options"] = {"prompt": prompt, "negative_prompt": "", "guidance": 7.5}
    assert Manifest.from_dict(data).generator.options["prompt"] == prompt
    data["generator"]["options"]["prompt"] = "a" * 1001
    with pytest.raises(Exception, match="at most 1,000 characters"):
        Manifest.from_dict(data)


def test_height_and_width_set_the_latent(folders):
    gen = resolve(f"sd:{folders()}").load(height=32, width=16, steps=1, guidance=1.0)
    assert gen.latent_shape == (4, 16, 8) and gen.latent_dim == 512
    with torch.no_grad():
        assert gen.decode(gen.sample_latent(1)).shape == (1, 3, 32, 16)
    with pytest.raises(UsageError, match="height=20 is not a multiple of 8"):
        resolve(f"sd:{folders()}").load(height=20)


@pytest.mark.parametrize("options, match", [
    ({"promt": "a cat"}, "unknown generator option 'promt'"),
    ({"truncation": 0.7}, "unknown generator option 'truncation'"),
    ({"guidance": 0.5}, "guidance=0.5 must be from 1"),
    ({"prompt": 3}, "must be text"),
    ({"prompt": "a\ncat"}, "control characters"),
    ({"prompt": "a" * 1001}, "more than 1,000"),
])
def test_bad_options_are_usage_errors_before_loading(tmp_path, options, match):
    with pytest.raises(UsageError, match=match) as caught:
        resolve(f"sd:{tmp_path}").load(**options)  # an empty folder: never read
    if "promt" in options:
        assert "did you mean 'prompt'" in caught.value.hint


def test_a_missing_part_is_named(folders, tmp_path):
    folder = tmp_path / "pipe"
    shutil.copytree(folders(), folder)
    shutil.rmtree(folder / "unet")
    with pytest.raises(WeightsMissingError) as caught:
        load_pipeline_folder(folder)
    assert "lacks unet/" in caught.value.message and "text_encoder/" in caught.value.hint
    (folder / "unet").mkdir()  # the folder without its files
    with pytest.raises(CheckpointError, match="could not load the unet"):
        load_pipeline_folder(folder)
    with pytest.raises(WeightsMissingError, match="no model_index.json"):
        load_pipeline_folder(tmp_path)


def test_pipelines_of_the_other_family_point_to_it(folders, tmp_path):
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=diffusers.DDPMScheduler(
        num_train_timesteps=10)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as caught:
        load_pipeline_folder(tmp_path)
    assert "unconditional" in caught.value.message
    assert f"diffusers:{tmp_path}" in caught.value.hint
    with pytest.raises(CheckpointError) as caught:
        load_unconditional(folders())
    assert "text-conditioned" in caught.value.message and "sd:" in caught.value.hint


def test_missing_hub_weights_name_the_folder_and_the_files_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as caught:
        resolve("sd-1.5").load(prompt=PROMPT)
    folder = tmp_path / "hf" / "stable-diffusion-v1-5--stable-diffusion-v1-5"
    assert str(folder) in caught.value.message
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in caught.value.hint
    assert "--include unet/diffusion_pytorch_model.safetensors" in caught.value.hint


def test_unsupported_unets_are_refused(pipe):
    parts = dict(scheduler=pipe.scheduler, vae=pipe.vae, tokenizer=pipe.tokenizer,
                 text_encoder=pipe.text_encoder)
    wide = diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=48,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    with pytest.raises(CheckpointError, match="cross_attention_dim"):
        TextToImageGenerator(wide, **parts)


def test_missing_transformers_names_the_extra(folders, monkeypatch):
    from energyql.errors import EnergyQLError

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(EnergyQLError) as caught:
        load_pipeline_folder(folders())
    assert "'transformers' package" in caught.value.message
    assert "pip install 'energyql[diffusion]'" in caught.value.hint
