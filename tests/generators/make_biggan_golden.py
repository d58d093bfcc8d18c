"""Write tests/generators/data/biggan_golden.safetensors from the reference package.

Run from the repository root with ``pytorch-pretrained-biggan`` installed:
``python -m tests.generators.make_biggan_golden``. The fixture holds, per config of
:mod:`tests.generators.biggan_helpers`, the seeded weights, the inputs and the reference's
images for each truncation, so the golden test needs no reference package.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.generators.biggan_helpers import (
    GOLDEN_CONFIGS,
    TRUNCATIONS,
    inputs,
    seeded_network,
)

FIXTURE = Path(__file__).parent / "data" / "biggan_golden.safetensors"


def reference_images(name: str) -> dict[str, torch.Tensor]:
    """Return the reference's images of config ``name`` for each truncation."""
    import pytorch_pretrained_biggan as ref

    net = seeded_network(name)
    other = ref.BigGAN(ref.BigGANConfig.from_dict(net.config.to_dict()))
    other.load_state_dict(net.state_dict(), strict=True)
    other.eval()
    z, classes = inputs(name)
    with torch.no_grad():
        return {f"{t}": other(z * t, classes, t) for t in TRUNCATIONS}


def main() -> None:
    tensors, configs = {}, {}
    for name in GOLDEN_CONFIGS:
        net = seeded_network(name)
        configs[name] = net.config.to_dict()
        for key, value in net.state_dict().items():
            tensors[f"{name}.state.{key}"] = value.contiguous()
        z, classes = inputs(name)
        tensors[f"{name}.z"], tensors[f"{name}.classes"] = z, classes
        for t, image in reference_images(name).items():
            tensors[f"{name}.image.{t}"] = image.contiguous()
    save_file(tensors, str(FIXTURE), metadata={"configs": json.dumps(configs),
                                               "truncations": json.dumps(TRUNCATIONS)})
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
