"""CUDA: training, mixed precision, artifacts and models on a GPU match what the CPU does.

Every test here is skipped unless ``torch.cuda.is_available()``: CI and the development
machines have no GPU; run them on one with ``python -m pytest -q tests/test_cuda.py``.
Comparisons with the CPU turn TF32 off (it is on for cuDNN convolutions by default), so that
both sides compute in IEEE float32.
"""

import json

import pytest
import torch

import energyql as eq
from energyql.training import TrainConfig, train_stage
from tests.toys import PointGenerator, QuadraticEnergy, register_tiny, stage

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CONFIG = TrainConfig(steps=6, batch=16, blocks=2, width=16, moment_samples=256, refit_every=3,
                     device="cuda")


@pytest.fixture
def ieee_fp32():
    """TF32 off for matmuls and convolutions for the duration of a test."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _losses_are_finite(manifest) -> None:
    for record in manifest.stages:
        assert record.train.skipped_steps == 0, record.index
        assert record.final_loss is not None and record.final_loss == record.final_loss
        assert abs(record.final_loss) < 1e6


def test_training_on_cuda_gives_an_artifact_that_samples_on_cpu(tmp_path, ieee_fp32):
    register_tiny()
    # Two stages: predicates, then a constraint (moment fits and λ updates on the device).
    art = eq.train("color == red | then uniform(size)", gen="toy-shapes", config=CONFIG,
                   out=tmp_path, progress=False)
    assert art.sampler.device.type == "cuda"
    _losses_are_finite(art.manifest)
    on_gpu = art.sample(8, seed=3)
    assert on_gpu.device.type == "cpu" and torch.isfinite(on_gpu).all()
    assert torch.equal(on_gpu, art.sample(8, seed=3))  # sampling on the GPU is repeatable

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [s["index"] for s in manifest["stages"]] == [1, 2]
    loaded = eq.load(tmp_path, device="cpu")
    assert loaded.sampler.device.type == "cpu"
    on_cpu = loaded.sample(8, seed=3)
    assert on_cpu.shape == (8, 3, 32, 32) and torch.isfinite(on_cpu).all()
    assert on_cpu.min() >= 0 and on_cpu.max() <= 1
    assert torch.allclose(on_cpu, on_gpu, atol=1e-4), float((on_cpu - on_gpu).abs().max())


def test_a_few_cuda_steps_on_a_toy_target_give_finite_losses():
    config = TrainConfig(steps=5, batch=64, blocks=2, width=8, device="cuda")
    sampler, log = train_stage(PointGenerator(), stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0])),
                               config, progress=False)
    assert log.steps == 5 and log.skipped_steps == 0
    assert all(torch.isfinite(torch.tensor(log.loss)))
    assert next(sampler.flow.parameters()).device.type == "cuda"


def test_bf16_autocast_training_steps_are_finite(tmp_path):
    register_tiny()
    config = TrainConfig(**{**CONFIG.to_dict(), "amp": True})
    art = eq.train("color == red & shape == circle", gen="toy-shapes", config=config,
                   out=tmp_path, progress=False)
    _losses_are_finite(art.manifest)
    assert art.manifest.stages[0].train.amp is True
    images = eq.load(tmp_path, device="cpu").sample(4, seed=0)
    assert torch.isfinite(images).all()


def test_bf16_autocast_keeps_the_flow_in_float32():
    config = TrainConfig(steps=3, batch=32, blocks=2, width=8, device="cuda", amp=True)
    sampler, log = train_stage(PointGenerator(), stage(QuadraticEnergy([1.0, 0.0], [1.0, 1.0])),
                               config, progress=False)
    assert log.skipped_steps == 0 and all(torch.isfinite(torch.tensor(log.loss)))
    assert all(p.dtype == torch.float32 for p in sampler.flow.parameters())


def test_tiny_stylegan2_on_cuda_matches_cpu(ieee_fp32):
    from energyql.generators.stylegan2 import StyleGAN2
    from tests.generators.sg2_helpers import seeded_state_dict

    channels = {4: 32, 8: 32, 16: 16, 32: 8}
    net = StyleGAN2(32, 32, 2, channels=channels)
    net.load_state_dict(seeded_state_dict(net.state_dict(), 7))
    net.eval()
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    outputs, grads = [], []
    for device in ("cpu", "cuda"):
        model = net.to(device)
        zd = z.detach().clone().to(device).requires_grad_(True)  # a leaf on each device
        image, _ = model([zd], randomize_noise=False)
        image.square().mean().backward()
        outputs.append(image.detach().cpu())
        grads.append(zd.grad.cpu())
    cpu, gpu = outputs
    assert torch.isfinite(gpu).all()
    scale = cpu.abs().max()
    assert float((cpu - gpu).abs().max() / scale) < 3e-4
    assert float((grads[0] - grads[1]).abs().max() / grads[0].abs().max()) < 2e-3


def test_clip_energy_on_cuda_matches_cpu(tmp_path, ieee_fp32):
    from energyql.controls.clip import load_clip
    from energyql.energies.base import Features
    from energyql.energies.clip import ClipEnergy
    from tests.controls.helpers import register_tiny_clip, save_tiny_clip_checkpoint

    name = register_tiny_clip(tmp_path)
    spec = f"{name}:{save_tiny_clip_checkpoint(tmp_path / 'tiny.safetensors')}"
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    values, grads = [], []
    for device in ("cpu", "cuda"):
        energy = ClipEnergy(load_clip(spec, device), "a red circle", copies=4)
        x = images.detach().clone().to(device).requires_grad_(True)  # a leaf on each device
        # Augmentations are drawn on a CPU generator: both devices see the same copies.
        value = energy(Features(x, None, torch.Generator().manual_seed(1)))
        value.sum().backward()
        values.append(value.detach().cpu())
        grads.append(x.grad.cpu())
    assert torch.allclose(values[0], values[1], atol=1e-3), (values[0], values[1])
    assert float((grads[0] - grads[1]).abs().max() / grads[0].abs().max()) < 1e-3
