"""Table-driven tests of the language: valid programs with their canonical text, invalid ones
with their error class, the text under the caret and a message substring."""

from __future__ import annotations

import pytest

import energyql as eq
from energyql.errors import (
    ArgumentError,
    CompositionError,
    NameResolutionError,
    ParseError,
    UnknownGeneratorError,
)

FACES = "stylegan2-ffhq"

# (source, generator, canonical text)
VALID = [
    ('clip("a smiling man") & uniform(race x age) | then debias(clip_bias)', FACES,
     'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'),
    ('clip("a smiling man") & uniform(race x age) then debias(clip_bias)', FACES,
     'clip("a smiling man") & uniform(race x age) | then debias(clip_bias)'),
    ("smiling", FACES, "smiling == yes"),
    ("gender == female", FACES, "gender == female"),
    ("gender == woman", FACES, "gender == female"),
    ("man", FACES, "gender == male"),
    ("asian", FACES, "race == east_asian"),
    ("gender != male", FACES, "not gender == male"),
    ("not smiling", FACES, "not smiling == yes"),
    ("not not smiling", FACES, "not not smiling == yes"),
    ("not (smiling & glasses)", FACES, "not (smiling == yes & glasses == yes)"),
    ("not (smiling or glasses)", FACES, "not (smiling == yes or glasses == yes)"),
    ("smiling or glasses or beard", FACES, "smiling == yes or glasses == yes or beard == yes"),
    ("(smiling or glasses) or beard", FACES, "smiling == yes or glasses == yes or beard == yes"),
    ("smiling & glasses or beard", FACES, "smiling == yes & glasses == yes or beard == yes"),
    ("(smiling or glasses) & beard", FACES, "(smiling == yes or glasses == yes) & beard == yes"),
    ("((smiling & glasses)) & beard", FACES, "smiling == yes & glasses == yes & beard == yes"),
    ("2 * smiling", FACES, "2 * smiling == yes"),
    ("smiling * 0.5", FACES, "0.5 * smiling == yes"),
    ("2 * smiling * 3", FACES, "6 * smiling == yes"),
    ("2 * (3 * smiling)", FACES, "6 * smiling == yes"),
    ("1 * smiling", FACES, "smiling == yes"),
    ("2 * not smiling", FACES, "2 * not smiling == yes"),
    ("2 * (smiling & glasses)", FACES, "2 * (smiling == yes & glasses == yes)"),
    ("1e-3 * smiling", FACES, "0.001 * smiling == yes"),
    ('clip("a face", weight=2)', FACES, '2 * clip("a face")'),
    ('clip("a face", weight=2) * 1.5', FACES, '3 * clip("a face")'),
    ('clip("a face", model="ViT-L-14:openai", augment=8)', FACES,
     'clip("a face", model="ViT-L-14:openai", augment=8)'),
    ('clip("say \\"hi\\" \\\\ \\n\\t")', FACES, 'clip("say \\"hi\\" \\\\ \\n\\t")'),
    ('clip("a face") or smiling', FACES, 'clip("a face") or smiling == yes'),
    ("uniform(race)", FACES, "uniform(race)"),
    ("debias(gender x age)", FACES, "debias(gender x age)"),
    ("dist(gender, male=0.25, female=0.75)", FACES, "dist(gender, male=0.25, female=0.75)"),
    ("dist(gender, woman=0.75)", FACES, "dist(gender, male=0.25, female=0.75)"),
    ("dist(smiling, yes=1)", FACES, "dist(smiling, yes=1)"),
    ("dist(gender x smiling, female x yes=0.4, male x yes=0.4)", FACES,
     "dist(gender x smiling, male x no=0.1, male x yes=0.4, female x no=0.1, female x yes=0.4)"),
    ("smiling & dist(age, age_20_29=0.5)", FACES,
     "smiling == yes & dist(age, age_0_2=0.0625, age_3_9=0.0625, age_10_19=0.0625, "
     "age_20_29=0.5, age_30_39=0.0625, age_40_49=0.0625, age_50_59=0.0625, age_60_69=0.0625, "
     "age_70_plus=0.0625)"),
    ("pose(yaw in -30..30) & keep(identity)", FACES,
     "pose(yaw in -30..30) & keep(identity)"),
    ("pose(yaw in -30.5..30, pitch in 0..10)", FACES, "pose(yaw in -30.5..30, pitch in 0..10)"),
    ("let b = gender x age\nclip(\"x\") & uniform(b) | then debias(b)", FACES,
     'clip("x") & uniform(gender x age) | then debias(gender x age)'),
    ("let b = gender; let w = 3; w * smiling & uniform(b)", FACES,
     "3 * smiling == yes & uniform(gender)"),
    ("let happy = (smiling & not glasses)   # a comment\nhappy or beard", FACES,
     "smiling == yes & not glasses == yes or beard == yes"),
    ("let face = clip(\"a face\")\nlet both = (face & smiling); both", FACES,
     'clip("a face") & smiling == yes'),
    ("let smiling = glasses\nsmiling", FACES, "glasses == yes"),
    ("# leading comment\nsmiling # trailing\n&\n\nglasses", FACES,
     "smiling == yes & glasses == yes"),
    ("a | then b | then c", None, "a | then b | then c"),
    ("color == red & uniform(shape x size)", "shapes", "color == red & uniform(shape x size)"),
    ("colour == red", "shapes", "color == red"),
    ("big & blue", "shapes", "size == large & color == blue"),
    ("pose(x in 0.3..0.7, rotation in -10..10)", "shapes",
     "pose(x in 0.3..0.7, rotation in -10..10)"),
    ('clip("a cat")', "stylegan2-afhqcat", 'clip("a cat")'),
    ("smiling & uniform(clip_bias)", None, "smiling & uniform(clip_bias)"),
    ("dist(size, big=0.7)", None, "dist(size, big=0.7)"),
]


@pytest.mark.parametrize("source, gen, canonical", VALID)
def test_valid_programs_have_canonical_text(source, gen, canonical):
    program = eq.compile(source, gen=gen)
    assert str(program) == canonical
    assert eq.compile(canonical, gen=gen) == program
    assert str(eq.compile(canonical, gen=gen)) == canonical


# (source, generator, error class, text under the caret or None, message substring)
INVALID = [
    ("", FACES, ParseError, None, "empty"),
    ("   # only a comment", FACES, ParseError, None, "empty"),
    ("smiling &", FACES, ParseError, "&", "expected a term after '&'"),
    ("smiling & & glasses", FACES, ParseError, "&", "expected a term after '&'"),
    ("& smiling", FACES, ParseError, "&", "at the start"),
    ("(smiling & glasses", FACES, ParseError, "(", "unclosed '('"),
    ("uniform(race", FACES, ParseError, "(", "unclosed '('"),
    ("smiling)", FACES, ParseError, ")", "unmatched ')'"),
    ("clip(a smiling man)", FACES, ParseError, "a smiling man", "must be quoted"),
    ("clip(smiling)", FACES, ArgumentError, "smiling", "must be a quoted string"),
    ("clip('a man')", FACES, ParseError, "'", "double quotes"),
    ('clip("a man', FACES, ParseError, '"a man', "unterminated string"),
    ('clip("a \\q")', FACES, ParseError, "\\q", "unknown escape"),
    ("smiling | glasses", FACES, ParseError, "|", "expected 'then'"),
    ("smiling glasses", FACES, ParseError, "glasses", "missing operator"),
    ("gender = male", FACES, ParseError, "=", "'='"),
    ("smiling $", FACES, ParseError, "$", "unexpected character"),
    ("let b = gender", FACES, ParseError, None, "after its let bindings"),
    ("let b = smiling\n  & glasses", FACES, ParseError, "&", "ends at the end of its line"),
    ("let = 3; smiling", FACES, ParseError, "=", "expected a name after 'let'"),
    ("smiling & then glasses", FACES, ParseError, "then", "found 'then'"),
    ("1e999 * smiling", FACES, ParseError, "1e999", "too large"),
    ("(" * 150 + "smiling" + ")" * 150, FACES, None, None, ""),  # fine: parens do not nest trees
    ("not " * 150 + "smiling", FACES, ParseError, None, "nested too deeply"),
    ('clip("a smiling man") & uniform(rac x age)', FACES, NameResolutionError, "rac",
     "did you mean 'race'"),
    ("smilng", FACES, NameResolutionError, "smilng", "did you mean 'smiling'"),
    ("gender == femal", FACES, NameResolutionError, "femal", "did you mean 'female'"),
    ("gendr == female", FACES, NameResolutionError, "gendr", "unknown attribute 'gendr'"),
    ("race", FACES, ArgumentError, "race", "not a yes/no attribute"),
    ("clip_bias", FACES, ArgumentError, "clip_bias", "'clip_bias' is not a term"),
    ("uniform(clip_bias x race)", FACES, ArgumentError, "uniform(clip_bias x race)",
     "stands alone in debias(clip_bias)"),
    ("yes", FACES, NameResolutionError, "yes", "several attributes"),
    ("race x age", FACES, CompositionError, "race x age", "not a term"),
    ("clp(\"x\")", FACES, NameResolutionError, "clp", "did you mean 'clip'"),
    ("pose(yaw in -30..30) & pos(yaw in 0..1)", FACES, NameResolutionError, "pos(yaw in 0..1)",
     "unknown control 'pos'"),
    ("pose(yw in -30..30)", FACES, NameResolutionError, "yw", "did you mean 'yaw'"),
    ("pose(yaw in -60..30)", FACES, ArgumentError, "yaw", "leaves the control's range"),
    ("pose(yaw in 30..-30)", FACES, ArgumentError, "yaw in 30..-30", "empty range"),
    ("pose(yaw in 0..1) & keep(identty)", FACES, NameResolutionError, "identty",
     "did you mean 'identity'"),
    ("keep(identity)", FACES, CompositionError, "identity", "needs a conditional control"),
    ("pose(yaw in 0..1) & pose(pitch in 0..1)", FACES, CompositionError, "pose(pitch in 0..1)",
     "appears twice"),
    ('not clip("a face")', FACES, CompositionError, 'not clip("a face")', "'not' applies to"),
    ("not uniform(race)", FACES, CompositionError, "uniform(race)", "under 'not'"),
    ("uniform(race) or smiling", FACES, CompositionError, "uniform(race)", "under 'or'"),
    ("2 * uniform(race)", FACES, CompositionError, "uniform(race)", "under a weight"),
    ("not (2 * smiling)", FACES, CompositionError, None, "'not' applies to"),
    ("smiling or pose(yaw in 0..1)", FACES, CompositionError, None, "under 'or'"),
    ("uniform(race) & uniform(race x age)", FACES, CompositionError, None, "constrained twice"),
    ("uniform(race x race)", FACES, ArgumentError, "race", "appears twice"),
    ("uniform(race, age)", FACES, ArgumentError, "age", "uniform(race x age)"),
    ("uniform()", FACES, ArgumentError, "uniform()", "needs attributes"),
    ("dist(gender)", FACES, ArgumentError, None, "needs value=probability"),
    ("dist(gender, male=0.3, female=0.3)", FACES, ArgumentError, None, "not 1"),
    ("dist(gender, male=0.7, female=0.7)", FACES, ArgumentError, None, "more than 1"),
    ("dist(gender, male=1.5)", FACES, ArgumentError, "1.5", "from 0 to 1"),
    ("dist(gender, male=0.5, man=0.5)", FACES, ArgumentError, None, "given twice"),
    ("dist(gender, mal=0.5)", FACES, NameResolutionError, "mal", "did you mean 'male'"),
    ("dist(gender x age, male=0.5)", FACES, ArgumentError, "male", "names 1 value"),
    ('clip("x", weight=-1)', FACES, ArgumentError, None, "positive"),
    ("0 * smiling", FACES, ArgumentError, None, "positive"),
    ('clip("x", wieght=2)', FACES, ArgumentError, "wieght=2", "did you mean 'weight'"),
    ('clip("x", augment=1.5)', FACES, ArgumentError, "1.5", "whole number"),
    ('clip("")', FACES, ArgumentError, '""', "empty"),
    ('clip("a", "b")', FACES, ArgumentError, '"b"', "one prompt"),
    ("2 * 3", FACES, ArgumentError, None, "needs a term"),
    ("smiling * glasses", FACES, CompositionError, "glasses", "term too"),
    ('"a face"', FACES, ArgumentError, None, "clip("),
    ("3", FACES, ArgumentError, None, "number is not a term"),
    ("let w = 2; w", FACES, ArgumentError, "w", "is a number"),
    ("let b = gender x age; b", FACES, CompositionError, "b", "attribute product"),
    ("let b = clip(\"x\"); uniform(b)", FACES, ArgumentError, "b", "bound to a term"),
    ("let b = smiling\nlet b = glasses\nb", FACES, NameResolutionError, "b", "already bound"),
    ("smiling", "stylegan2-ffhqq", UnknownGeneratorError, None, "unknown generator"),
    ("smiling", "stylegan2-church", NameResolutionError, "smiling", "unknown name"),
    ("pose(yaw in 0..1)", "stylegan2-church", NameResolutionError, None, "unknown control"),
]


@pytest.mark.parametrize("source, gen, kind, caret, message", INVALID)
def test_invalid_programs_raise_with_span(source, gen, kind, caret, message):
    if kind is None:
        eq.compile(source, gen=gen)
        return
    with pytest.raises(kind) as caught:
        eq.compile(source, gen=gen)
    error = caught.value
    assert message in str(error)
    if caret is not None:
        assert error.source is not None and error.span is not None
        assert error.source[error.span.start:error.span.end] == caret
        assert "^" in str(error)
    if isinstance(error, (ParseError, NameResolutionError)) and error.span is not None:
        assert "hint:" in str(error) or error.hint is None


def test_card_error_message_reads_like_the_style_guide():
    with pytest.raises(NameResolutionError) as caught:
        eq.compile('clip("a smiling man") & uniform(rac x age)', gen=FACES)
    lines = str(caught.value).splitlines()
    assert lines[0] == "unknown attribute 'rac'"
    assert lines[1] == '  clip("a smiling man") & uniform(rac x age)'
    assert lines[2] == "  " + " " * 32 + "^^^"
    assert lines[3].startswith("hint: did you mean 'race'? attributes of stylegan2-ffhq: race,")


def test_errors_are_value_errors_with_hints():
    with pytest.raises(ValueError):
        eq.compile("smiling &")
    with pytest.raises(ParseError) as caught:
        eq.compile("smiling &")
    assert caught.value.hint


def test_non_text_source_is_an_energyql_error():
    with pytest.raises(eq.EnergyQLError):
        eq.compile(42)  # type: ignore[arg-type]


def test_multiline_span_points_at_the_right_line():
    with pytest.raises(NameResolutionError) as caught:
        eq.compile("smiling &\n  glases", gen=FACES)
    assert "  glases\n    ^^^^^^" in str(caught.value)


def test_the_error_scanner_reads_its_tokens_from_the_grammar():
    from energyql.lang.bind import KEYWORDS
    from energyql.lang.parser import _lark, _scan, _scanner

    regex, keywords = _scanner()
    assert keywords == KEYWORDS
    for terminal in _lark().terminals:
        if terminal.pattern.type == "str" and not terminal.pattern.value.isalpha():
            assert [kind for kind, *_ in _scan(terminal.pattern.value)] == ["op"], terminal.name
    kinds = [kind for kind, *_ in _scan('let w = -1.5e3; clip("open x')]
    assert kinds == ["op", "name", "op", "number", "op", "name", "op", "string"]


def test_json_terms_carry_their_canonical_text():
    import energyql

    data = energyql.compile("2 * color == red & uniform(size)", gen="shapes").to_dict()
    first = data["stages"][0]["terms"][0]
    assert first["canonical"] == "2 * color == red" and "source" not in first
