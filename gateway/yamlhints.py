"""Plain-language hints for YAML syntax errors in config.yaml.

PyYAML says *what* its parser met ("mapping values are not allowed here", "expected <block end>,
but found '<block mapping start>'"); an administrator needs to know what they probably typed. The
hint is a guess from the error and the lines around it, so it says "probably"; the line and
column PyYAML gives stay in the message.
"""

from __future__ import annotations

import re

import yaml

# "key:value" without the space YAML needs after the colon (URLs and times have no word before).
_NO_SPACE = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):(\S.*)$")
_KEY_WITH_VALUE = re.compile(r"^\s*(?:-\s+)?([^\s#:][^:#]*):\s+\S")


def hint(text: str, exc: yaml.YAMLError) -> str | None:
    """What is probably wrong, or None when there is no good guess."""
    problem = getattr(exc, "problem", None) or ""
    mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    if mark is None:
        return None
    lines = text.splitlines()
    if "'\\t'" in problem:
        return "a tab character: YAML indents with spaces only; replace the tab with spaces"
    if problem.startswith("expected ',' or ']'") or problem.startswith("expected ',' or '}'"):
        opened = f" opened on line {context_mark.line + 1}" if context_mark is not None else ""
        return f"the [ ] or {{ }} list{opened} is not closed before the next key or the end of the file"
    if mark.line >= len(lines):  # end of the file
        if context_mark is not None and "quoted scalar" in (getattr(exc, "context", None) or ""):
            return f"the quote opened on line {context_mark.line + 1} is never closed"
        return None
    line = lines[mark.line]
    previous = _previous_line(lines, mark.line)
    if problem.startswith("mapping values are not allowed"):
        if ": " in line[:mark.column] or line[:mark.column].rstrip().endswith(":"):
            key = _key(line)
            if key is None:
                return "a value with ': ' in it: put the whole value in quotes"
            value = line[line.index(":") + 1:].strip()
            return f'a value with \': \' in it: put the whole value in quotes, e.g. {key}: "{value}"'
        if previous is not None:
            number, before = previous
            missing = _NO_SPACE.match(before)
            if missing and not missing.group(2).startswith(("/", "//")):
                return (f"a missing space after the colon on line {number + 1}: write "
                        f"`{missing.group(1)}: {missing.group(2).strip()}`")
            if _indent(line) > _indent(before) and _KEY_WITH_VALUE.match(before):
                return (f"this line is indented more than line {number + 1} above it, which already has a "
                        f"value: indent it by {_indent(before)} spaces, like its sibling keys")
        return "a key in the middle of a value: check the indentation and any ': ' in an unquoted value"
    if problem.startswith("expected <block end>") or problem.startswith("did not find expected"):
        indent = _indent(line)
        above = ", ".join(str(a) for a in sorted({_indent(lines[i]) for i in range(mark.line) if _meaningful(lines[i])}))
        if "'-'" in problem or "block sequence start" in problem:
            return (f"a list item (`- `) at the wrong depth: its `-` is indented {indent} space(s); line it up "
                    f"with the other items of the same list (blocks above start at {above} spaces)")
        if str(indent) not in above.split(", "):
            return (f"line {mark.line + 1} is indented {indent} space(s), which matches no block above it: "
                    f"indent it like the other keys of the block it belongs to (blocks above start at {above} spaces)")
        if "'?'" in problem or "block mapping start" in problem:
            return ("a key at the depth of the list's `- ` items: indent it under an item's keys, "
                    "or start a new item with `- `")
        return "the indentation of this line does not match the block it is in"
    return None


def _previous_line(lines: list[str], index: int) -> tuple[int, str] | None:
    for number in range(index - 1, -1, -1):
        if _meaningful(lines[number]):
            return number, lines[number]
    return None


def _meaningful(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _key(line: str) -> str | None:
    match = re.match(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):\s", line)
    return match.group(1) if match else None

