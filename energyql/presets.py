"""PromptGen's experiments (Wu et al., NeurIPS 2022) as named programs: plain data, no torch.

Each preset is an energyql expression with the generator it was run on (and that generator's
options, such as a text-to-image prompt), the experiment of the paper it reproduces and the
official config(s) it stands for; text-to-image de-biasing, which the paper did not run, is
stated the same way. ``energyql presets`` lists them;
``energyql run @name`` and ``energyql check @name`` expand one (see :func:`expand`).

Example:
    >>> expand("@race_debias_ffhq", None)
    ('debias(race)', 'stylegan2-ffhq')
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from energyql.errors import UsageError, check_choice

# Where each preset comes from: the official repository (github.com/ChenWu98/Generative-Visual-
# Prompt), whose README groups the experiments under these headings.
CLIP_TEXT = "CLIP-guided text-to-image synthesis"
CLASSIFIER = "Classifier-guided image synthesis"
DEBIAS = "De-biasing with the moment constraint"
ITERATIVE = "Iterative control (CLIP's reporting bias)"
POSE = "Inverse-graphics-guided synthesis (pose with identity)"
# Not PromptGen's: the fairness use of text-to-image models (ITI-GEN, Fair Diffusion, ...).
TEXT_TO_IMAGE = "De-biasing text-to-image diffusion (beyond the paper)"

PREFIX = "@"


@dataclass(frozen=True)
class Preset:
    """One paper experiment as an energyql program.

    Arguments:
        name: what follows ``@`` on the command line, e.g. ``race_debias_ffhq``.
        expression: the energyql program.
        gen: the registry name of the generator it runs on.
        experiment: the paper's experiment group (the official README's heading).
        configs: the official config file(s) under ``config/experiments/`` it stands for.
        description: one line saying what the samples should show.
        note: how the program differs from the official config, where it does.
        gen_options: the generator's options as ``(name, value)`` pairs (a text-to-image
            prompt), applied as ``--gen-option`` would apply them.
    """

    name: str
    expression: str
    gen: str
    experiment: str
    configs: tuple[str, ...]
    description: str
    note: str = ""
    gen_options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict:
        """Return the preset as JSON-ready data."""
        data = asdict(self)
        data["configs"] = list(self.configs)
        data["gen_options"] = dict(self.gen_options)
        return data


_DEBIAS_NOTE = ("PromptGen runs it with the de-bias energy scaled by 1 and by 2 (its β̂ is fitted "
                "once on base samples, so the flow undershoots); energyql refits λ on the stage's "
                "own samples until the target moments are met, so one program stands for both")
_CELEBA_NOTE = ("PromptGen judges with its CelebA classifier (energy weight {w}); energyql uses "
                "the faces catalog's attribute model")
_CLIP_NOTE = "PromptGen's CLIP energy weight: {w} (ViT-B/32)"


def _clip(name: str, prompt: str, gen: str, config: str, weight: int, what: str,
          extra: str = "") -> Preset:
    note = _CLIP_NOTE.format(w=weight) + (f"; {extra}" if extra else "")
    return Preset(name, f'clip("{prompt}")', gen, CLIP_TEXT, (config,), what, note)


def _classifier(name: str, expression: str, config: str, weight: int, what: str) -> Preset:
    return Preset(name, expression, "stylegan2-ffhq", CLASSIFIER, (config,), what,
                  _CELEBA_NOTE.format(w=weight))


def _debias(attribute: str, world: str) -> Preset:
    return Preset(f"{attribute}_debias_{world}", f"debias({attribute})", f"stylegan2-{world}",
                  DEBIAS,
                  (f"{attribute}_debias_1_{world}.cfg", f"{attribute}_debias_2_{world}.cfg"),
                  f"{world.replace('ffhq', 'FFHQ').replace('metfaces', 'MetFaces')} faces with a "
                  f"uniform {attribute} distribution (FairFace classes)", _DEBIAS_NOTE)


_NO_MAKEUP = 'clip("a photo of a person without makeup")'

PRESETS: tuple[Preset, ...] = (
    # CLIP prompts on FFHQ.
    _clip("clip_baby_ffhq", "a photo of a baby", "stylegan2-ffhq", "clip_a_baby_ffhq.cfg", 600,
          "FFHQ faces of babies"),
    _clip("clip_girl_ffhq", "a photo of a girl", "stylegan2-ffhq", "clip_a_girl_ffhq.cfg", 600,
          "FFHQ faces of girls"),
    _clip("clip_boy_ffhq", "a photo of a boy", "stylegan2-ffhq", "clip_a_boy_ffhq.cfg", 600,
          "FFHQ faces of boys"),
    _clip("clip_asian_man_ffhq", "a photo of an asian man", "stylegan2-ffhq",
          "clip_an_asian_man_ffhq.cfg", 800, "FFHQ faces of Asian men"),
    # CLIP prompts on landscapes.
    _clip("clip_autumn_landscape", "autumn scene", "stylegan2-landscape",
          "clip_autumn_scene_landscape.cfg", 500, "landscapes in autumn"),
    _clip("clip_winter_landscape", "winter scene", "stylegan2-landscape",
          "clip_winter_scene_landscape.cfg", 500, "landscapes in winter",
          "the official run samples at truncation 0.7 (energyql run --truncation 0.7)"),
    # CLIP prompt on AFHQ cats: shown on the project page; the repository has no config for it.
    Preset("clip_closed_eyes_afhqcat", 'clip("a photo of a cat with closed eyes")',
           "stylegan2-afhqcat", CLIP_TEXT, (), "AFHQ cats with their eyes closed",
           "from the project page's CLIP examples; the official repository ships no AFHQ config, "
           "so the CLIP weight is energyql's default"),
    # Classifier control on FFHQ (CelebA attributes in PromptGen).
    _classifier("male_ffhq", "male", "class_male.cfg", 100, "FFHQ faces of men"),
    _classifier("female_ffhq", "female", "class_female.cfg", 100, "FFHQ faces of women"),
    _classifier("glasses_ffhq", "glasses", "class_eyeglasses.cfg", 300,
                "FFHQ faces wearing glasses"),
    _classifier("no_glasses_ffhq", "not glasses", "class_noeyeglasses.cfg", 150,
                "FFHQ faces without glasses"),
    _classifier("blond_hair_ffhq", "blond_hair", "class_blond_hair.cfg", 300,
                "FFHQ faces with blond hair"),
    _classifier("no_blond_hair_ffhq", "not blond_hair", "class_noblond_hair.cfg", 100,
                "FFHQ faces without blond hair"),
    _classifier("female_glasses_ffhq", "female & glasses", "class_female_glasses.cfg", 100,
                "women wearing glasses (a rare combination in FFHQ)"),
    _classifier("female_no_glasses_ffhq", "female & not glasses", "class_female_noglasses.cfg",
                100, "women without glasses"),
    _classifier("male_glasses_ffhq", "male & glasses", "class_male_glasses.cfg", 100,
                "men wearing glasses"),
    _classifier("male_no_glasses_ffhq", "male & not glasses", "class_male_noglasses.cfg", 100,
                "men without glasses"),
    # De-biasing with the moment constraint.
    _debias("race", "ffhq"),
    _debias("age", "ffhq"),
    _debias("race", "metfaces"),
    _debias("age", "metfaces"),
    _debias("gender", "metfaces"),
    # Iterative control: CLIP's reporting bias, then de-biasing what it introduced.
    Preset("clip_no_makeup_ffhq", _NO_MAKEUP, "stylegan2-ffhq", ITERATIVE,
           ("clip_a_person_without_makeup.cfg",),
           "iteration 1: 'a person without makeup', which CLIP turns into mostly men",
           _CLIP_NOTE.format(w=1000) + "; kept a CLIP prompt (not the catalog's makeup "
           "attribute) because the experiment measures CLIP's own reporting bias"),
    Preset("no_makeup_then_gender_ffhq", f"{_NO_MAKEUP} | then debias(gender)", "stylegan2-ffhq",
           ITERATIVE,
           ("clip_a_person_without_makeup.cfg", "gender_debias_2_person_without_makeup.cfg"),
           "iteration 2: the same prompt with its gender bias removed on top of iteration 1",
           "the prompt stays a CLIP prompt (see clip_no_makeup_ffhq); PromptGen scales the second "
           "stage's de-bias energy by 2, energyql refits λ until gender is uniform"),
    # Pose with identity kept.
    Preset("pose_identity_ffhq", "pose(yaw in -20..20, pitch in -20..20) & keep(identity)",
           "stylegan2-ffhq", POSE, ("inverse_graphics_pose_ffhq.cfg",),
           "one identity shown across head poses",
           "PromptGen draws the relative rotation uniformly within ±π/9 (20°) about two axes, "
           "judged by DECA, identity by ArcFace (weight 10, pose 200); energyql uses the faces "
           "catalog's pose and identity models. Checks now; running it needs the conditional "
           "trainer"),
    # Text-to-image: the de-biasing the text-to-image fairness work does on Stable Diffusion.
    Preset("doctor_fair_sd15", "uniform(gender x race)", "sd-1.5", TEXT_TO_IMAGE, (),
           "Stable Diffusion 1.5's 'a photo of a doctor' with gender and race jointly uniform "
           "(FairFace classes)",
           "the joint target of ITI-GEN and 'Finetuning text-to-image diffusion models for "
           "fairness', reached here by a flow over x_T with the prompt and the UNet unchanged; "
           "checks offline, runs where the sd-1.5 weights are (energyql gens --commands)",
           gen_options=(("prompt", "a photo of a doctor"),)),
)

_BY_NAME = {preset.name: preset for preset in PRESETS}


def names() -> list[str]:
    """Return every preset name, in listing order."""
    return [preset.name for preset in PRESETS]


def get(name: str) -> Preset:
    """Return the preset ``name`` (with or without its ``@``); unknown names are usage errors."""
    return _BY_NAME[check_choice(name.removeprefix(PREFIX), names(), what="preset")]


def is_reference(expression: str) -> bool:
    """Return whether ``expression`` names a preset (``@name``) rather than being a program."""
    return expression.strip().startswith(PREFIX)


def generator_options(expression: str) -> dict[str, Any]:
    """Return the generator options of the preset ``expression`` names (``{}`` for a program)."""
    return dict(get(expression.strip()).gen_options) if is_reference(expression) else {}


def merge_options(expression: str, given: dict[str, Any]) -> dict[str, Any]:
    """Return a preset's generator options with ``given`` ones added.

    Changing an option the preset sets (its prompt) is a usage error, as another ``--gen`` is:
    it would be another experiment.
    """
    own = generator_options(expression)
    for key, value in given.items():
        if key in own and own[key] != value:
            preset = get(expression.strip())
            raise UsageError(
                f"preset '@{preset.name}' sets {key}={own[key]!r}, not {value!r}",
                hint=f"drop --gen-option {key}=..., or write the program out: "
                     f"'{preset.expression}' --gen {preset.gen} --gen-option {key}=...")
    return {**own, **given}


def expand(expression: str, gen: str | None) -> tuple[str, str | None]:
    """Return ``(expression, gen)`` with a ``@name`` replaced by its program and generator.

    Other expressions come back unchanged. An explicit ``gen`` that differs from the preset's
    is a usage error: a preset's names are checked against its own generator's catalog.
    """
    if not is_reference(expression):
        return expression, gen
    preset = get(expression.strip())
    if gen is not None and gen != preset.gen:
        raise UsageError(
            f"preset '@{preset.name}' runs on '{preset.gen}', not '{gen}'",
            hint=f"drop --gen, or write the program out: '{preset.expression}' --gen {gen}")
    return preset.expression, preset.gen
