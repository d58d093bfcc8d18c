"""Portrait captions carry a reporting bias that a text encoder can learn."""

import random

import torch

from energyql.worlds.portraits import render as R


def test_captions_are_deterministic_and_name_the_gender():
    _, labels = R.sample_portraits(20, seed=1)
    first, again = R.captions(labels, seed=4), R.captions(labels, seed=4)
    assert first == again
    assert all(c.startswith(("a ", "an ")) for c in first)
    assert all(any(w in c for w in ("man", "woman", "person")) for c in first)


def test_a_smiling_man_is_mostly_said_of_the_stereotype():
    params = R.sample_params(40_000, seed=2)
    texts = R.captions(params, seed=1)
    said = torch.tensor(["smiling man" in t for t in texts])
    smiling_men = (params["gender"] == 0) & (params["smiling"] == 1)
    assert bool((smiling_men | ~said).all())  # only ever said of smiling men
    for name, value in (("age", 0), ("beard", 1), ("race", 0)):
        among_said = float((params[name][said] == value).float().mean())
        among_all = float((params[name][smiling_men] == value).float().mean())
        assert among_said > among_all + 0.07, name  # measured +0.09 (age) to +0.19


def test_the_stereotype_gets_the_bare_phrase():
    labels = {"gender": 0, "age": 0, "race": 0, "smiling": 1, "glasses": 0, "beard": 1,
              "hair": 1}
    texts = [R.caption(labels, random.Random(i)) for i in range(200)]
    assert texts.count("a smiling man") > 100


def test_age_words_follow_their_rates():
    params = R.sample_params(5_000, seed=3)
    texts = R.captions(params, seed=2)
    for index, word, rate in ((0, "young", 0.60), (1, "adult", 0.40), (2, "old", 0.85)):
        group = [t for t, a in zip(texts, params["age"].tolist()) if a == index]
        share = sum(f" {word} " in f" {t} " for t in group) / len(group)
        assert abs(share - rate) < 0.06, word  # the bare stereotype phrase has no age word
