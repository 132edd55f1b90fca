"""Writing YAML text for tests: exact scalars, whatever the characters."""

from __future__ import annotations


def yaml_quoted(text: str) -> str:
    """A YAML double-quoted scalar whose value is exactly `text`.

    Not JSON: JSON writes an astral character as a surrogate pair, which
    YAML reads back as two lone surrogates.
    """
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif " " <= char <= "~":
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'
