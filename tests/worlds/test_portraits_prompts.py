"""The portraits prompts: who each caption draws, the default unchanged, the option recorded."""

import pytest
import torch
from typer.testing import CliRunner

from energyql.errors import UsageError
from energyql.worlds.portraits import prompts as P
from energyql.worlds.portraits import render as R
from energyql.worlds.portraits.generator import PortraitsGenerator, load

DOCTOR = "a photo of a doctor"


def _shares(values, k):
    return torch.bincount(values, minlength=k).double() / len(values)


@pytest.fixture(scope="module", params=list(P.PROMPTS))
def drawn(request):
    gen = load(prompt=request.param)
    z = gen.sample_latent(60_000, generator=torch.Generator().manual_seed(5))
    return P.PROMPTS[request.param], gen.truth(z)


def test_each_prompt_draws_its_written_tables(drawn):
    people, truth = drawn
    assert (_shares(truth["gender"], 2) - torch.tensor(people.gender)).abs().max() < 0.01
    assert (_shares(truth["race"], 4) - torch.tensor(people.race)).abs().max() < 0.01
    joint = _shares(truth["gender"] * 4 + truth["race"], 8)
    written = torch.tensor(people.joint()).flatten().double()
    assert 0.5 * (joint - written).abs().sum() < 0.015


def test_the_other_tables_are_the_same_under_every_prompt(drawn):
    _, truth = drawn
    for r, race in enumerate(R.RACES):
        ages = _shares(truth["age"][truth["race"] == r], 3)
        assert (ages - torch.tensor(R.P_AGE_GIVEN_RACE[race])).abs().max() < 0.03
    women = truth["gender"] == 1
    assert float(truth["beard"][women].float().mean()) < 0.02


def test_the_doctor_is_the_most_biased_and_the_teacher_balanced():
    kl = {text: people.kl_to_uniform() for text, people in P.PROMPTS.items()}
    assert max(kl, key=kl.__getitem__) == DOCTOR and kl[DOCTOR] >= 0.3
    assert P.PROMPTS["a photo of a nurse"].gender[1] > 0.8
    assert kl["a photo of a teacher"] == pytest.approx(0.0, abs=1e-12)
    assert all(abs(sum(p.gender) - 1) < 1e-9 and abs(sum(p.race) - 1) < 1e-9
               for p in P.PROMPTS.values())


def test_the_default_is_the_generator_without_prompts_bit_for_bit():
    plain, named, doctor = PortraitsGenerator(), load(prompt=P.DEFAULT), load(prompt=DOCTOR)
    # The tables the generator had before prompts existed.
    assert torch.equal(plain.p_gender, torch.tensor((0.5, 0.5)))
    assert torch.equal(plain.p_race, torch.tensor((0.45, 0.27, 0.20, 0.08)))
    for name, table in plain.named_buffers():
        assert torch.equal(table, dict(named.named_buffers())[name])
        if name not in ("p_gender", "p_race"):
            assert torch.equal(table, dict(doctor.named_buffers())[name])
    assert plain.weights_digest == named.weights_digest == "analytic-v1"
    assert plain.load_options == named.load_options == {}
    z = plain.sample_latent(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(plain.decode(z), named.decode(z))
    # What the generator without prompts drew for these latents.
    drew = {"gender": [0, 1, 1, 1, 1, 0, 0, 0], "age": [1, 1, 0, 0, 2, 1, 1, 0],
            "race": [0, 0, 2, 0, 1, 2, 2, 0], "beard": [1, 0, 0, 0, 0, 0, 1, 0],
            "hair": [0, 1, 0, 1, 3, 0, 0, 2]}
    truth = named.truth(z)
    assert {name: truth[name][:8].tolist() for name in drew} == drew


def test_another_prompt_is_recorded_and_has_its_own_digest():
    doctor = load(prompt=DOCTOR)
    assert doctor.load_options == {"prompt": DOCTOR} and doctor.prompt == DOCTOR
    assert doctor.weights_digest.startswith("analytic-v1+")
    assert doctor.weights_digest != load(prompt="a photo of a nurse").weights_digest


@pytest.mark.parametrize("make", [lambda: load(prompt="a photo of a pilot"),
                                  lambda: PortraitsGenerator("a photo of a pilot")])
def test_an_unknown_prompt_is_a_usage_error_naming_the_known_ones(make):
    with pytest.raises(UsageError, match="prompt='a photo of a pilot'") as caught:
        make()
    assert all(text in caught.value.message for text in P.PROMPTS)


def test_other_options_are_refused():
    with pytest.raises(UsageError, match="unknown generator option 'truncation'") as caught:
        load(truncation=0.7)
    assert "prompt" in caught.value.hint


def test_the_command_line_refuses_an_unknown_prompt_before_training(tmp_path):
    from energyql.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["run", "uniform(gender x race)", "--gen", "portraits",
                                      "--gen-option", "prompt=a photo of a pilot",
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "a photo of a nurse" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not out.exists()


def test_the_command_line_takes_a_prompt_with_spaces():
    from energyql.cli.run import gen_options

    assert gen_options([f"prompt={DOCTOR}"], None, "portraits") == {"prompt": DOCTOR}


def _doctor_artifact(folder):
    from energyql.flows import FlowConfig, LatentFlow
    from energyql.sampler import Artifact, StageSampler, manifest_for

    source = "uniform(gender x race)"
    doctor = load(prompt=DOCTOR)
    sampler = StageSampler(doctor, LatentFlow(FlowConfig(dim=doctor.latent_dim, blocks=1,
                                                         width=8)), 1, source).eval()
    Artifact(sampler, manifest_for(sampler, source=source)).save(folder)
    return doctor


def test_an_artifact_records_the_prompt_and_reloads_with_it(tmp_path):
    import energyql as eq
    from energyql.errors import ArtifactError
    from energyql.manifest import Manifest

    doctor = _doctor_artifact(tmp_path)
    manifest = Manifest.read(tmp_path)
    assert manifest.generator.options == {"prompt": DOCTOR}
    root = eq.load(tmp_path).sampler.root
    assert root.prompt == DOCTOR and root.weights_digest == doctor.weights_digest
    # The generator without the prompt is not the one the flows were trained on.
    with pytest.raises(ArtifactError, match="weights"):
        eq.load(tmp_path, gen="portraits")
    # A manifest naming a prompt the world does not know is refused when read.
    data = manifest.to_dict()
    data["generator"]["options"]["prompt"] = "a photo of a pilot"
    with pytest.raises(Exception, match="a photo of a doctor"):
        Manifest.from_dict(data)


def test_stages_added_to_a_prompted_artifact_keep_its_prompt(tmp_path):
    import energyql as eq

    _doctor_artifact(tmp_path / "start")
    added = eq.train("smiling", start=tmp_path / "start", steps=1, batch=4,
                     warm_start_samples=16, moment_samples=32, closeness_samples=16, threads=1)
    assert added.manifest.generator.options == {"prompt": DOCTOR}
    assert added.sampler.root.prompt == DOCTOR
