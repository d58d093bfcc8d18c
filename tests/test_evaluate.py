"""Evaluation figures from judged samples: stable keys and the right numbers."""

import math

import torch

import energyql as eq
from energyql.evaluation import (
    Judged,
    collateral_drift,
    figures,
    joint_index,
    kl_divergence,
    total_variation,
)
from energyql.worlds.shapes import CATALOG as SHAPES


def _labels(shape, color, size):
    return {"shape": torch.tensor(shape), "color": torch.tensor(color), "size": torch.tensor(size)}


def test_kl_and_tv_basics():
    assert kl_divergence([0.5, 0.5], [0.5, 0.5]) == 0
    assert math.isclose(kl_divergence([1.0, 0.0], [0.5, 0.5]), math.log(2))
    assert total_variation([1, 0], [0, 1]) == 1


def test_joint_index_is_row_major_in_catalog_order():
    labels = _labels([0, 2], [1, 2], [0, 1])
    assert joint_index(labels, ("shape", "color"), SHAPES).tolist() == [1, 8]


def test_figures_have_the_documented_keys_and_values():
    labels = _labels([0, 0, 1, 2], [0, 1, 2, 0], [1, 1, 0, 1])
    judged = Judged(labels, {"color == red": torch.tensor([0.1, 2.0, 3.0, 0.2])},
                    {"color == red": torch.tensor([0.9, 0.1, 0.05, 0.8])}, None)
    program = eq.compile("color == red & uniform(shape x color)", gen="shapes")
    result = figures(judged, program, SHAPES)
    assert result["samples"] == 4
    assert result["attributes"]["shape"] == {"circle": 0.5, "square": 0.25, "triangle": 0.25}
    assert result["joint"]["shape x color"]["circle,red"] == 0.25
    assert set(result["joint"]) == {"shape x color", "shape x size", "color x size"}
    expected_kl = sum(0.25 * math.log(0.25 * 9) for _ in range(4))
    assert math.isclose(result["kl_to_target"]["shape x color"], expected_kl, rel_tol=1e-4)
    assert result["predicate_share"] == {"all": 0.5, "color == red": 0.5}
    assert math.isclose(result["energies"]["color == red"], 1.325)


def test_collateral_drift_compares_with_the_reweighted_base():
    program = eq.compile("color == red", gen="shapes")
    # Base: red samples are all large; the exact target (weights = p(red)) is large only.
    base = Judged(_labels([0] * 4, [0, 0, 1, 1], [1, 1, 0, 0]), {}, {},
                  torch.tensor([0.0, 0.0, -30.0, -30.0]))
    drifted = Judged(_labels([0] * 4, [0] * 4, [0, 0, 1, 1]), {}, {}, None)
    kept = Judged(_labels([0] * 4, [0] * 4, [1] * 4), {}, {}, None)
    assert collateral_drift(drifted, base, program, SHAPES)["size"] > 0.49
    assert collateral_drift(kept, base, program, SHAPES)["size"] < 1e-6
    assert "color" not in collateral_drift(kept, base, program, SHAPES)


def test_restore_targets_come_from_the_manifest_and_are_measured_by_tv_and_kl():
    from energyql.evaluation import Judged, figures
    from energyql.lang.api import compile as compile_program
    from energyql.worlds.shapes import CATALOG as SHAPES

    program = compile_program("color == blue & shape == triangle | then debias(clip_bias)")
    program = program.checked(SHAPES)
    labels = {"shape": torch.tensor([2, 2, 2, 2]), "color": torch.tensor([2, 2, 2, 2]),
              "size": torch.tensor([0, 0, 0, 1])}
    judged = Judged(labels, {}, {}, None)
    measured = figures(judged, program, SHAPES, {"restore(size)": [0.5, 0.5]})
    assert measured["tv_to_target"]["restore(size)"] == 0.25
    assert measured["kl_to_target"]["restore(size)"] > 0
    # without the estimate (a generator, not an artifact) there is nothing to compare with
    assert "restore(size)" not in figures(judged, program, SHAPES)["kl_to_target"]
