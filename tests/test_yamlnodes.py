"""Tests for the strict, location-keeping YAML loader."""

from __future__ import annotations

import math
import random
import time

import pytest

from fngen.errors import Location, SpecError
from fngen.yamlnodes import Node, load_yaml


def load(text: str | bytes) -> Node:
    return load_yaml(text, "ops.yaml")


def error(text: str | bytes) -> str:
    with pytest.raises(SpecError) as excinfo:
        load(text)
    return str(excinfo.value)


def plain(node: Node) -> object:
    """The node tree as plain Python values, for easy comparison."""
    if isinstance(node.value, dict):
        return {key: plain(value) for key, value in node.value.items()}
    if isinstance(node.value, list):
        return [plain(item) for item in node.value]
    return node.value


def at(line: int, column: int) -> Location:
    return Location("ops.yaml", line, column)


# Structure and locations ------------------------------------------------------


def test_mapping_keeps_order_and_locations():
    root = load("ops:\n  - name: hypot\n    inputs: [x, y]\n")
    assert plain(root) == {"ops": [{"name": "hypot", "inputs": ["x", "y"]}]}
    assert root.location == at(1, 1)
    assert root.keys == {"ops": at(1, 1)}
    op = root.value["ops"].value[0]
    assert op.location == at(2, 5)
    assert op.keys == {"name": at(2, 5), "inputs": at(3, 5)}
    assert list(op.value) == ["name", "inputs"]
    inputs = op.value["inputs"]
    assert inputs.location == at(3, 13)
    assert [item.location for item in inputs.value] == [at(3, 14), at(3, 17)]


def test_scalar_styles():
    root = load("a: x\nb: 'x'\nc: \"x\"\nd: |\n  x\ne: >\n  x\n")
    styles = {key: node.style for key, node in root.value.items()}
    assert styles == {"a": None, "b": "'", "c": '"', "d": "|", "e": ">"}
    assert root.value["a"].keys is None


def test_bom_and_crlf():
    root = load(b"\xef\xbb\xbfa: 1\r\nb: 2\r\n")
    assert plain(root) == {"a": 1, "b": 2}
    assert root.value["a"].location == at(1, 4)
    assert root.value["b"].location == at(2, 4)
    assert load("\ufeffa: 1").value["a"].location == at(1, 4)


# Scalar typing ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("null", None),
        ("~", None),
        ("Null", None),
        ("NULL", None),
        ("", None),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("42", 42),
        ("-3", -3),
        ("+1", 1),
        ("0", 0),
        ("1.0", 1.0),
        ("-2.5", -2.5),
        ("1e-3", 1e-3),
        ("2E5", 2e5),
        (".5", 0.5),
        ("1.", 1.0),
        ("-.5e2", -50.0),
        (".inf", math.inf),
        ("-.inf", -math.inf),
        ("+.Inf", math.inf),
        # Spellings that other YAML versions read as bools or numbers stay str.
        ("yes", "yes"),
        ("no", "no"),
        ("on", "on"),
        ("off", "off"),
        ("y", "y"),
        ("1_000", "1_000"),
        ("007", "007"),
        ("0x1f", "0x1f"),
        ("0o17", "0o17"),
        ("1:30", "1:30"),
        ("inf", "inf"),
        ("nan", "nan"),
        ("1e", "1e"),
        (".", "."),
        ("x + 1", "x + 1"),
    ],
)
def test_plain_scalars(text, expected):
    value = load(f"v: {text}\n").value["v"].value
    assert value == expected and type(value) is type(expected)


def test_nan():
    assert math.isnan(load("v: .nan").value["v"].value)


@pytest.mark.parametrize(
    "text", ["'1'", '"true"', "'null'", "''", "|\n  1\n", ">\n  2.5\n"]
)
def test_quoted_and_block_scalars_are_strings(text):
    assert type(load(f"v: {text}").value["v"].value) is str


@pytest.mark.parametrize(
    "text, expected",
    [
        ("!!str 3", "3"),
        ("!!str", ""),
        ("!!int '3'", 3),
        ("!!float 3", 3.0),
        ("!!float '1e3'", 1000.0),
        ("!!bool true", True),
        ("!!null ''", None),
        ("!!map {a: 1}", {"a": 1}),
        ("!!seq [1]", [1]),
    ],
)
def test_core_tags(text, expected):
    assert plain(load(f"v: {text}")) == {"v": expected}


def test_core_tag_that_does_not_fit():
    assert error("v: !!int x") == "ops.yaml:1:4: error: 'x' is not a valid !!int"
    assert error("v: !!bool yes") == "ops.yaml:1:4: error: 'yes' is not a valid !!bool"
    assert error("v: !!map x") == (
        "ops.yaml:1:4: error: YAML tag '!!map' cannot be used on a scalar"
    )
    assert error("v: !!seq {}") == (
        "ops.yaml:1:4: error: YAML tag '!!seq' cannot be used on a mapping"
    )


def test_huge_integer():
    assert error("v: " + "9" * 5000) == (
        "ops.yaml:1:4: error: integer has too many digits"
    )


# Errors -------------------------------------------------------------------------


def test_not_utf8():
    assert error(b"a: \xff\n") == (
        "ops.yaml:1:1: error: spec file is not UTF-8 text (byte 0xff at offset 3)"
    )
    assert error(b"a: 1\0\n") == (
        "ops.yaml:1:1: error: spec file is not UTF-8 text (it has a NUL byte)"
    )


def test_control_character_in_text():
    assert error("a: 1\nb: x\x07\n") == (
        "ops.yaml:2:5: error: character U+0007 is not allowed in YAML"
    )


def test_too_large():
    big = b"a: 1\n" + b"#" * (10 * 1024 * 1024)
    assert error(big) == (
        "ops.yaml:1:1: error: spec file is too large "
        "(10485765 bytes, the limit is 10 MiB)"
    )


@pytest.mark.parametrize("text", ["", "  \n\n", "# just a comment\n", b"", "---\n"])
def test_empty(text):
    assert error(text) == "ops.yaml:1:1: error: spec file is empty"


@pytest.mark.parametrize("text", ["- a\n", "just text\n", "42\n", "~\n"])
def test_top_level_must_be_a_mapping(text):
    assert error(text) == (
        "ops.yaml:1:1: error: the top level of a spec file must be a mapping"
    )


def test_syntax_errors():
    assert error("ops:\n  a: 1\n  b: c: d\n") == (
        "ops.yaml:3:7: error: invalid YAML: mapping values are not allowed here"
    )
    assert error("a: 'x\n") == (
        "ops.yaml:2:1: error: invalid YAML: while scanning a quoted scalar at line 1, "
        "found unexpected end of stream"
    )
    assert error("a: 1\n---\nb: 2\n") == (
        "ops.yaml:2:1: error: invalid YAML: expected a single document in the stream "
        "at line 1, but found another document"
    )


def test_duplicate_key():
    text = "op:\n  formula: x\n  args: []\n  formula: y\n"
    assert error(text) == (
        "ops.yaml:4:3: error: duplicate key 'formula' (first defined at line 2)"
    )
    assert error("a: {b: 1, 'b': 2}") == (
        "ops.yaml:1:11: error: duplicate key 'b' (first defined at line 1)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("1: x\n", 'mapping keys must be strings (quote it to use the string "1")'),
        ("a:\n  null: x\n", "mapping keys must be strings"),
        ("true: x\n", "mapping keys must be strings"),
        ("1.5: x\n", "mapping keys must be strings"),
        ("? [a, b]\n: x\n", "mapping keys must be strings"),
        ("? {a: b}\n: x\n", "mapping keys must be strings"),
        ("?\n: x\n", "mapping keys must be strings"),
    ],
)
def test_keys_must_be_strings(text, message):
    assert message in error(text)


def test_key_error_locations():
    assert error("a:\n  null: x\n") == (
        "ops.yaml:2:3: error: mapping keys must be strings "
        '(quote it to use the string "null")'
    )
    assert error("? [a, b]\n: x\n") == (
        "ops.yaml:1:3: error: mapping keys must be strings"
    )


def test_quoted_keys_are_fine():
    assert plain(load("'1': a\n\"true\": b\n!!str 2: c\n")) == {
        "1": "a",
        "true": "b",
        "2": "c",
    }


def test_anchors_and_aliases():
    assert error("a: &x 1\n") == "ops.yaml:1:4: error: YAML anchors are not supported"
    assert error("a: 1\nb: *x\n") == (
        "ops.yaml:2:4: error: YAML aliases are not supported (write it out)"
    )


def test_merge_keys():
    assert error("base: {a: 1}\nop:\n  <<: {a: 1}\n") == (
        "ops.yaml:3:3: error: YAML merge keys ('<<') are not supported"
    )
    assert plain(load("'<<': 1")) == {"<<": 1}


@pytest.mark.parametrize(
    "tag",
    ["!!python/object", "!!python/name:os.system", "!custom", "!", "!!binary", "!!set"],
)
def test_unsupported_tags(tag):
    assert error(f"a:\n  b: {tag} x\n") == (
        f"ops.yaml:2:6: error: YAML tag '{tag}' is not supported"
    )


def test_verbatim_tag_outside_the_core_schema():
    assert error("a: !<tag:example.com,2000:x> 1\n") == (
        "ops.yaml:1:4: error: YAML tag 'tag:example.com,2000:x' is not supported"
    )


@pytest.mark.parametrize("text", ["[" * 100_000, "{" * 100_000, "- " * 100_000])
def test_deep_nesting(text):
    start = time.monotonic()
    message = error(text)
    assert message.endswith(
        "error: spec file is nested too deeply (the limit is 100 levels)"
    )
    assert time.monotonic() - start < 10


def test_nesting_at_the_limit_is_fine():
    text = "a: " + "[" * 99 + "]" * 99
    node = load(text).value["a"]
    for _ in range(98):
        node = node.value[0]
    assert node.value == []


# Node.locate ------------------------------------------------------------------


def test_locate_plain_formula():
    node = load("op:\n  formula: z = sqrt(x)\n").value["op"].value["formula"]
    assert node.value.index("s") == 4
    assert node.locate(0, 4) == at(2, 16)


def test_locate_double_quoted_formula():
    node = load('formula: "z = sqrt(x)"\n').value["formula"]
    assert node.locate(0, 0) == at(1, 11)
    assert node.locate(0, 4) == at(1, 15)


def test_locate_tagged_scalar():
    node = load("formula: !!str  z = sqrt(x)\n").value["formula"]
    assert node.location == at(1, 10)
    assert node.locate(0, 4) == at(1, 21)


def test_locate_literal_block():
    text = "op:\n  formula: |\n    y = exp(x)\n    z = sqrt(y)\n  next: 1\n"
    node = load(text).value["op"].value["formula"]
    assert node.value == "y = exp(x)\nz = sqrt(y)\n"
    assert node.location == at(2, 12)
    assert node.locate(0, 0) == at(3, 5)
    assert node.locate(1, 4) == at(4, 9)  # the 's' of sqrt


def test_locate_literal_block_with_indentation_indicator():
    text = "formula: |2\n    y = 1\n  z = 2\n"
    node = load(text).value["formula"]
    assert node.value == "  y = 1\nz = 2\n"
    assert node.locate(0, 2) == at(2, 5)
    assert node.locate(1, 0) == at(3, 3)


def test_locate_literal_block_with_leading_blank_line():
    node = load("formula: |\n\n   y = 1\n").value["formula"]
    assert node.value == "\ny = 1\n"
    assert node.locate(1, 0) == at(3, 4)


# Robustness ---------------------------------------------------------------------

_SPEC = """ops:
  - name: hypot
    inputs: [x, y]
    formula: |
      r = sqrt(x**2 + y**2)
    check: {atol: 1e-6, rtol: .5, on: true}
    doc: "a \\"quoted\\" \\u00e9 string"
    fold: >-
      a
      b
"""
_PIECES = list("-:?[]{},#&*!|>'\"%@`~ \n\t\r.0123456789eExyz<=\\_+\x85\u2028\ufeffé")
_PIECES += ["---", "...", "!!str ", "!!int ", "&a ", "*a", "<<: ", "? ", "%YAML 1.1\n"]


def _random_inputs(rng: random.Random):
    for _ in range(150):
        yield "".join(rng.choice(_PIECES) for _ in range(rng.randrange(40)))
    for _ in range(150):
        text = list(_SPEC)
        for _ in range(rng.randrange(1, 6)):
            where = rng.randrange(len(text))
            if rng.random() < 0.5:
                del text[where]
            else:
                text.insert(where, rng.choice(_PIECES))
        yield "".join(text)
    for _ in range(150):
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(30)))
        yield _SPEC.encode()[: rng.randrange(len(_SPEC))] + noise


def test_random_input_raises_only_spec_errors():
    outcomes = set()
    for text in _random_inputs(random.Random(1234)):
        try:
            load(text)
            outcomes.add("ok")
        except SpecError:
            outcomes.add("error")
    assert outcomes == {"ok", "error"}
