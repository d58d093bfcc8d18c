"""The embedded portraits world: drawn head-and-shoulders portraits, 64x64.

This module is the world's one registered record (catalog, generator, control models,
Fréchet features, weight files); it imports no torch. The renderer, generator, judge and
small CLIP live in the modules beside it.
"""

from __future__ import annotations

from energyql.catalog import Attribute, Catalog, ClipSettings, Control, Parameter, binary
from energyql.controls.registry import model
from energyql.generators.registry import GeneratorSpec
from energyql.worlds import World, register_world
from energyql.worlds.portraits.prompts import OPTION as PROMPT_OPTION

# The world's small CLIP: its logit scale as the weight, 4 gentle geometric copies and no
# colour jitter (skin and hair colours are what several attributes are about).
CLIP_SETTINGS = ClipSettings(
    weight=None, copies=4, augment_at="clip",
    augment=(("translate", 0.06), ("scale", (0.95, 1.05)), ("rotate_degrees", 5.0),
             ("cutout", 0.0)))

_JUDGE = "portraits-classifier"

CATALOG = Catalog(
    name="portraits",
    description="The embedded 64x64 world of drawn head-and-shoulders portraits.",
    attributes=(
        Attribute("gender", ("male", "female"), _JUDGE,
                  value_aliases=(("man", "male"), ("woman", "female"))),
        Attribute("age", ("young", "adult", "old"), _JUDGE,
                  value_aliases=(("elderly", "old"), ("senior", "old"))),
        Attribute("race", ("alpha", "beta", "gamma", "delta"), _JUDGE,
                  description="four synthetic appearance groups (skin tone, hair colour and "
                              "texture)"),
        binary("smiling", _JUDGE, "the person smiles"),
        binary("glasses", _JUDGE, "wears glasses"),
        binary("beard", _JUDGE, "has a beard"),
        Attribute("hair", ("black", "brown", "blond", "grey"), _JUDGE,
                  value_aliases=(("gray", "grey"), ("blonde", "blond"))),
    ),
    controls=(
        Control(
            "pose",
            (Parameter("yaw", -30.0, 30.0, "degrees"), Parameter("pitch", -20.0, 20.0, "degrees")),
            model="portraits-pose",
            description="head yaw and pitch, read by the portraits judge",
        ),
    ),
    keepables=(("identity", "portraits-identity"),),
    clip_model="portraits-clip",
    clip=CLIP_SETTINGS,
)

GENERATOR = GeneratorSpec(
    "portraits", "portraits", f"{__name__}.generator:load",
    "the embedded 64x64 portraits world (its models ship inside the package)", resolution=64,
    # The shapes recipe for the exact target (docs/training.md), with a 4,096-sample start
    # pool (its images are four times the size). Its flow stays 8 x 256 for now: the figures
    # of the README and docs/worlds were measured with it, and 8 x 128 (shapes' size) has not
    # been measured on its goals. Spline couplings, as on shapes (docs/training.md).
    training=(("steps", 600), ("batch", 64), ("lr", 3e-3), ("grad_clip", 10.0),
              ("warm_start_samples", 4096), ("chain_weight", 3.0), ("forward_weight", 0.0),
              ("blocks", 8), ("width", 256), ("coupling", "spline")),
    inherit_training=False,
    # "a photo of a doctor", ...: who is drawn, for the text-to-image de-biasing workflow.
    options=(PROMPT_OPTION,),
)

WORLD = register_world(World(
    catalog=CATALOG,
    package=__name__,
    generators=(GENERATOR,),
    controls=(
        model(_JUDGE, f"{__name__}.judge:load_attributes", kind="attributes",
              description="the portraits world's attribute heads"),
        model("portraits-pose", f"{__name__}.judge:load_pose", kind="pose",
              description="the portraits world's yaw and pitch reading"),
        model("portraits-identity", f"{__name__}.judge:load_identity", kind="identity",
              description="the portraits world's identity factors (the same at every pose)"),
        model("portraits-clip", f"{__name__}.clip:load_control", kind="clip",
              description="the portraits world's small CLIP, shipped in the package"),
    ),
    features=f"{__name__}.judge:features",
    weights=("judge.safetensors", "clip.safetensors"),
    description="drawn portraits with their ground truth",
))
