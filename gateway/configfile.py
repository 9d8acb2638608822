"""Reading ``config.yaml``: YAML with a line number for every key, and ``${VAR}`` expansion.

Validation itself is pydantic's job (``gateway.config``); this module keeps enough of the source
to point an administrator at the line that is wrong.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .yamlhints import hint

Path_ = tuple[str | int, ...]

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


class ConfigError(Exception):
    """A config that cannot be used. ``problems`` lists one line per mistake."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}:{p}" if not p.startswith(source) else p for p in problems))


@dataclass
class YamlDocument:
    """Plain Python data plus the 1-based line of every mapping key and sequence item."""

    source: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    # Unset ${VAR}s: reported together with the validation errors, not one at a time.
    problems: list[str] = field(default_factory=list)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def read_yaml(text: str, source: str, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse ``text``; expand ``${VAR}`` / ``${VAR:-default}`` in every string scalar.

    A reference to an unset variable without a default is recorded in ``problems`` (key and
    line): a missing secret must stop the gateway rather than run with an empty token.
    """
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc)
        probably = hint(text, exc)
        if probably:
            problem += f" (probably {probably})"
        raise ConfigError(source, [f"{where}: invalid YAML: {problem}"]) from None
    doc = YamlDocument(source=source, data=None)
    doc.data = _build(root, (), doc, env, doc.problems) if root is not None else {}
    return doc


def read_yaml_file(path: str | Path, env: Mapping[str, str] | None = None) -> YamlDocument:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"0: cannot read the file: {exc.strerror or exc}"]) from None
    return read_yaml(text, str(path), env)


def mapping_value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a YAML mapping node (None: not a mapping, or no such key):
    where a value is written, for its line or to edit the text around it."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _build(node: yaml.Node, path: Path_, doc: YamlDocument, env: Mapping[str, str], problems: list[str]) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(" ").construct_object(key_node) if not isinstance(key_node, yaml.ScalarNode) else _scalar(key_node)
            child = (*path, key)
            doc.lines[child] = key_node.start_mark.line + 1
            if key in out:
                problems.append(f"{key_node.start_mark.line + 1}: {dotted(child)}: duplicate key")
            out[key] = _build(value_node, child, doc, env, problems)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            doc.lines[child] = item.start_mark.line + 1
            items.append(_build(item, child, doc, env, problems))
        return items
    value = _scalar(node)
    if isinstance(value, str) and "${" in value:
        value = _expand(value, path, node.start_mark.line + 1, env, problems)
    return value


def _scalar(node: yaml.ScalarNode) -> Any:
    # SafeLoader's resolver turns "3" into 3, "true" into True, as PyYAML would.
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def _expand(value: str, path: Path_, line: int, env: Mapping[str, str], problems: list[str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        problems.append(f"{line}: {dotted(path)}: environment variable {name} is {'empty' if name in env else 'not set'} (write ${{{name}:-default}} to allow a default)")
        return ""

    return _ENV_REF.sub(substitute, value)
