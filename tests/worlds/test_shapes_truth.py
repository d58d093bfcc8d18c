"""The shapes generator says what it drew, and its pixels agree with what it says."""

import pytest
import torch

from energyql.generators.base import ModuleGenerator


@pytest.fixture(scope="module")
def drawn():
    import energyql.generators
    from energyql.worlds.shapes import classifier

    gen = energyql.generators.load("shapes")
    z = gen.sample_latent(1000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        judged = classifier.load()(gen.decode(z))
    return gen, z, gen.truth(z), judged


def test_truth_has_every_attribute_and_the_pose(drawn):
    gen, z, truth, _ = drawn
    assert gen.knows_truth
    assert {"shape", "color", "size", "x", "y", "rotation"} <= set(truth)
    assert truth["shape"].dtype == torch.long and truth["shape"].shape == (len(z),)
    # The renderer places centres in 0.2..0.8; the learned flow has thin tails beyond.
    inside = ((truth["x"] > 0.1) & (truth["x"] < 0.9)).float().mean()
    assert inside >= 0.97


@pytest.mark.parametrize("attribute", ["shape", "color", "size"])
def test_the_classifier_agrees_with_the_truth(drawn, attribute):
    _, _, truth, judged = drawn
    agreement = (judged[attribute].argmax(1) == truth[attribute]).float().mean()
    assert agreement >= 0.97  # measured 0.98-0.998 on 2,000 samples


@pytest.mark.parametrize("attribute", ["shape", "color", "size"])
def test_the_truth_follows_the_data_distribution(drawn, attribute):
    from energyql.worlds.shapes import render

    _, _, truth, _ = drawn
    values = render.ATTRIBUTES[attribute]
    shares = torch.bincount(truth[attribute], minlength=len(values)).float() / len(truth[attribute])
    data = torch.tensor([render.marginal(attribute)[v] for v in values])
    assert 0.5 * (shares - data).abs().sum() <= 0.06


def test_a_plain_generator_does_not_claim_to_know():
    gen = ModuleGenerator(torch.nn.Linear(4, 3 * 4 * 4), latent_dim=4)
    assert not gen.knows_truth
    with pytest.raises(NotImplementedError, match="cannot say what it drew"):
        gen.truth(torch.zeros(1, 4))
