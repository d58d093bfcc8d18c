"""The imagenet catalog: BigGAN's class names as the attribute ``class``."""

import subprocess
import sys

import pytest

import energyql
from energyql.catalog import CATALOGS, class_values, identifier
from energyql.errors import NameResolutionError
from energyql.generators import resolve


def test_class_values_are_unique_identifiers_in_label_order():
    values = class_values()
    assert len(values) == len(set(values)) == 1000
    assert values[207] == "golden_retriever" and values[0] == "tench"
    assert all(v.isidentifier() for v in values)
    assert identifier("Geoffroy's spider monkey") == "geoffroy_s_spider_monkey"


def test_biggan_generators_check_class_predicates():
    catalog = CATALOGS[resolve("biggan-deep-256").catalog]
    assert catalog.name == "imagenet"
    checked = energyql.compile('clip("a dog on the beach") & class == golden_retriever')
    assert "class == golden_retriever" in str(checked.checked(catalog))
    alias = energyql.compile("label == imagenet_207").checked(catalog)
    assert str(alias) == "class == golden_retriever"


def test_a_misspelt_class_suggests_the_right_one():
    with pytest.raises(NameResolutionError) as info:
        energyql.compile("class == golden_retreiver").checked(CATALOGS["imagenet"])
    assert "did you mean 'golden_retriever'" in info.value.hint


def test_the_catalog_does_not_import_torch():
    code = ("import sys, energyql.catalog as c; c.CATALOGS['imagenet']; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
