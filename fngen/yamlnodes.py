"""A strict YAML loader for spec files that remembers where every node came from.

PyYAML's constructors turn ``yes`` into True and ``1_0`` into 10, build
arbitrary objects from ``!!python/...`` tags, and forget locations.  Spec files
are small and hand-written, so we only let PyYAML compose a node tree and build
`Node` objects ourselves, from a deliberately small subset of YAML:

* plain scalars are typed by `_plain_value` (null, true/false, decimal ints,
  floats); quoted and block scalars are always strings;
* mapping keys must be strings and appear at most once per mapping;
* anchors, aliases, merge keys and tags outside the YAML core schema are
  rejected, so a value always means what it says where it is written.

Every problem, including malformed YAML, is a `SpecError` at a file location.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.reader import Reader

from fngen.errors import Location, SpecError

MAX_BYTES = 10 * 1024 * 1024
MAX_DEPTH = 100  # far deeper than any spec; keeps hostile input off the stack

_CORE = "tag:yaml.org,2002:"
_STR, _FLOAT, _MAP, _SEQ = (_CORE + name for name in ("str", "float", "map", "seq"))
_SCALAR_TAGS = {_CORE + name for name in ("str", "int", "float", "bool", "null")}
_CORE_TAGS = _SCALAR_TAGS | {_MAP, _SEQ}
_TAG_NAMES = {type(None): "null", bool: "bool", int: "int", float: "float", str: "str"}

# Plain scalars with a fixed meaning (yes/no/on/off are deliberately not here).
_INFS = (".inf", ".Inf", ".INF")
_WORDS: dict[str, object] = {
    **dict.fromkeys(["", "~", "null", "Null", "NULL"]),
    **dict.fromkeys(["true", "True", "TRUE"], True),
    **dict.fromkeys(["false", "False", "FALSE"], False),
    **{sign + inf: float(sign + "inf") for sign in ("", "+", "-") for inf in _INFS},
    **dict.fromkeys([".nan", ".NaN", ".NAN"], float("nan")),
}
# No leading zeros: `007` is octal in YAML 1.1 and decimal in 1.2, so it stays a str.
_INT_TEXT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_EXPONENT = r"([eE][-+]?[0-9]+)"
_FLOAT_TEXT = re.compile(
    rf"[-+]?([0-9]+\.[0-9]*{_EXPONENT}?|\.[0-9]+{_EXPONENT}?|[0-9]+{_EXPONENT})"
)
# The line breaks YAML counts (str.splitlines agrees on every printable char).
_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


@dataclass(frozen=True)
class Node:
    """One YAML node with its location, so later stages can point at it."""

    value: object  # dict[str, Node], list[Node], or str | int | float | bool | None
    location: Location  # where the node starts (tag included)
    keys: dict[str, Location] | None = None  # mappings only: where each key starts
    style: str | None = None  # scalars only: None (plain), "'", '"', '|', '>'
    # Scalars only: where character 0 of the text's line 0 is.  For block
    # scalars its column is the block's indentation, shared by all lines.
    text_start: Location | None = field(default=None, repr=False, compare=False)

    def locate(self, line_index: int, column_index: int) -> Location:
        """Location in the file of character `column_index` (0-based) of line
        `line_index` (0-based) of this scalar's text (its value as a str split
        on newlines).  Exact for plain and quoted one-line scalars (escapes may
        make quoted ones approximate) and for literal blocks '|'; best effort
        otherwise, since folding and multi-line flow scalars lose the layout."""
        start = self.text_start or self.location
        return start.shifted(line_index, start.column + column_index)


def load_yaml(text: str | bytes, filename: str) -> Node:
    """Parse a whole spec file.

    Raises SpecError (never anything else) for every bad input."""
    start = Location(filename, 1, 1)
    loader = _Loader(_decode(text, start), filename)
    try:
        root = loader.get_single_node()
        # Nothing but comments composes to None, a bare `---` to an empty scalar.
        if root is None or (root.value == "" and not root.style and not root.tag):
            raise SpecError(start, "spec file is empty")
        node = loader.build(root)
    except yaml.YAMLError as error:
        raise _syntax_error(error, start) from None
    except RecursionError:  # MAX_DEPTH comes first unless the caller is deep already
        raise SpecError(start, "spec file is nested too deeply") from None
    finally:
        loader.dispose()
    if not isinstance(node.value, dict):
        raise SpecError(node.location, "the top level of a spec file must be a mapping")
    return node


def _decode(text: str | bytes, start: Location) -> str:
    """Check size and encoding up front, so PyYAML only ever sees printable text."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if len(data) > MAX_BYTES:
        message = f"spec file is too large ({len(data)} bytes, the limit is 10 MiB)"
        raise SpecError(start, message)
    if isinstance(text, bytes):
        if b"\0" in text:
            raise SpecError(start, "spec file is not UTF-8 text", "it has a NUL byte")
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            bad = f"byte 0x{text[error.start]:02x} at offset {error.start}"
            raise SpecError(start, "spec file is not UTF-8 text", bad) from None
    text = text.removeprefix("\ufeff")  # a BOM would shift every column of line 1
    bad = Reader.NON_PRINTABLE.search(text)  # exactly what PyYAML would refuse
    if bad:
        breaks = list(_BREAK.finditer(text, 0, bad.start()))
        column = bad.start() - (breaks[-1].end() if breaks else 0) + 1
        where = start.shifted(len(breaks), column)
        message = f"character U+{ord(bad.group()):04X} is not allowed in YAML"
        raise SpecError(where, message)
    return text


def _syntax_error(error: yaml.YAMLError, start: Location) -> SpecError:
    """PyYAML's problem, at its mark, after its context ("while scanning ...")."""
    if not isinstance(error, yaml.MarkedYAMLError):  # not expected; never mind
        return SpecError(start, f"invalid YAML: {error}")
    mark, message = error.problem_mark, error.problem or str(error)
    where = start.shifted(mark.line, mark.column + 1) if mark else start
    context, at = error.context, error.context_mark
    if context:
        if at and (not mark or at.line != mark.line):
            context += f" at line {at.line + 1}"
        message = f"{context}, {message}"
    return SpecError(where, f"invalid YAML: {message}")


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects anchors, aliases, unknown tags and deep nesting
    while composing, leaves implicit nodes untagged (so `_plain_value` alone
    types them) and turns the composed tree into `Node` objects."""

    def __init__(self, text: str, filename: str):
        super().__init__(text)
        self.spec_file = filename
        self.spec_lines = text.splitlines()
        self.scalar_starts: dict[int, yaml.Mark] = {}  # token end index -> token start
        self.depth = 0

    def where(self, mark: yaml.Mark) -> Location:
        return Location(self.spec_file, mark.line + 1, mark.column + 1)

    # Composing ---------------------------------------------------------------

    def get_token(self):
        # A tagged scalar's node starts at its tag; `locate` wants the text.
        token = super().get_token()
        if isinstance(token, yaml.ScalarToken):
            self.scalar_starts[token.end_mark.index] = token.start_mark
        return token

    def resolve(self, kind, value, implicit):
        return None  # tag None means "implicit"; `scalar` decides the type

    def compose_node(self, parent, index):
        event = self.peek_event()
        where = self.where(event.start_mark)
        if isinstance(event, yaml.AliasEvent):
            raise SpecError(where, "YAML aliases are not supported", "write it out")
        if event.anchor is not None:
            raise SpecError(where, "YAML anchors are not supported")
        if event.tag is not None and event.tag not in _CORE_TAGS:
            raise SpecError(where, f"YAML tag {_short(event.tag)!r} is not supported")
        if self.depth >= MAX_DEPTH:
            limit = f"the limit is {MAX_DEPTH} levels"
            raise SpecError(where, "spec file is nested too deeply", limit)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    # Building ----------------------------------------------------------------

    def build(self, node: yaml.Node) -> Node:
        where = self.where(node.start_mark)
        if isinstance(node, yaml.MappingNode):
            self.check_tag(node, {_MAP}, "mapping")
            values: dict[str, Node] = {}
            keys: dict[str, Location] = {}
            for key_node, value_node in node.value:
                key, key_where = self.key(key_node), self.where(key_node.start_mark)
                if key in keys:
                    first = f"first defined at line {keys[key].line}"
                    raise SpecError(key_where, f"duplicate key {key!r}", first)
                keys[key] = key_where
                values[key] = self.build(value_node)
            return Node(values, where, keys=keys)
        if isinstance(node, yaml.SequenceNode):
            self.check_tag(node, {_SEQ}, "sequence")
            return Node([self.build(item) for item in node.value], where)
        text_start = self.text_start(node)
        return Node(self.scalar(node), where, style=node.style, text_start=text_start)

    def check_tag(self, node: yaml.Node, allowed: set[str], kind: str) -> None:
        """Explicit core tags must fit the node (other tags never get here)."""
        if node.tag is not None and node.tag not in allowed:
            message = f"YAML tag {_short(node.tag)!r} cannot be used on a {kind}"
            raise SpecError(self.where(node.start_mark), message)

    def key(self, node: yaml.Node) -> str:
        where = self.where(node.start_mark)
        hint = None
        if isinstance(node, yaml.ScalarNode):
            if node.tag is None and node.style is None and node.value == "<<":
                raise SpecError(where, "YAML merge keys ('<<') are not supported")
            key = self.scalar(node)
            if isinstance(key, str):
                return key
            hint = f'quote it to use the string "{node.value}"' if node.value else None
        raise SpecError(where, "mapping keys must be strings", hint)

    def scalar(self, node: yaml.ScalarNode) -> object:
        where = self.where(node.start_mark)
        _check_text(node.value, where)
        if node.tag is None:
            return node.value if node.style else _plain_value(node.value, where)
        self.check_tag(node, _SCALAR_TAGS, "scalar")
        if node.tag == _STR:
            return node.value
        value = _plain_value(node.value, where)
        if node.tag == _FLOAT and type(value) is int:
            value = float(value)
        if _CORE + _TAG_NAMES[type(value)] != node.tag:
            raise SpecError(where, f"{node.value!r} is not a valid {_short(node.tag)}")
        return value

    def text_start(self, node: yaml.ScalarNode) -> Location:
        mark = self.scalar_starts.get(node.end_mark.index, node.start_mark)
        if node.style in ("'", '"'):
            return Location(self.spec_file, mark.line + 1, mark.column + 2)
        if node.style not in ("|", ">"):
            return self.where(mark)
        # Block content starts on the line after the indicator; value lines map
        # one to one onto file lines up to the first non-empty one, which is the
        # file line minus the block's indentation (plus, for '>', folded text).
        for offset, text in enumerate(node.value.split("\n")):
            if text and mark.line + 1 + offset < len(self.spec_lines):
                line = self.spec_lines[mark.line + 1 + offset]
                indent = _leading_spaces(line) - _leading_spaces(text)
                return Location(self.spec_file, mark.line + 2, indent + 1)
        return Location(self.spec_file, mark.line + 2, 1)


def _check_text(text: str, where: Location) -> None:
    """Refuse what no Python source file can hold: a NUL, a lone surrogate."""
    for char in text:
        if char == "\0":
            raise SpecError(where, "a string cannot hold a NUL character")
        if "\ud800" <= char <= "\udfff":
            message = f"a string cannot hold the lone surrogate {ascii(char)}"
            raise SpecError(where, message, "surrogates are not text")


def _plain_value(text: str, where: Location) -> object:
    """The value of a plain scalar: YAML 1.2's core schema, minus its rarer
    spellings (`1_000`, `0x1f`, `0o17` and `007` stay strings), so a typo
    never silently becomes a number."""
    if text in _WORDS:
        return _WORDS[text]
    if _INT_TEXT.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # Python refuses to parse more than ~4300 digits
            raise SpecError(where, "integer has too many digits") from None
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    return text


def _leading_spaces(text: str) -> int:
    return len(text) - len(text.lstrip(" "))


def _short(tag: str) -> str:
    return "!!" + tag.removeprefix(_CORE) if tag.startswith(_CORE) else tag
