"""docs/configuration.md's key tables match the config models: in each section a key has one row
(two merges had each added the "did you mean" keys to `selfservice`, worded differently), and in
the sections whose table is the whole model every field has a row and every row is a field."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from gateway.config import GatewayConfig
from tests.support import REPO

DOC = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
SECTIONS = ("server", "store", "selfservice", "desk", "limits", "attachments", "board")
WHOLE = ("server", "store", "selfservice", "attachments", "board")  # every field in the table


def documented(section: str) -> list[str]:
    """The keys of the section's table rows, in order (a row may name several)."""
    text = DOC[DOC.index(f"\n## `{section}`"):]
    text = text[:text.index("\n## ", 1)]
    keys: list[str] = []
    for row in text.splitlines():
        first = re.match(r"\| (`[^|]*`) \|", row)
        if first:
            keys += re.findall(r"`([A-Za-z_.]+)`", first.group(1))
    return keys


def fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out: list[str] = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += fields(field.annotation, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize("section", SECTIONS)
def test_each_key_has_one_row(section: str) -> None:
    keys = documented(section)
    assert sorted({k for k in keys if keys.count(k) > 1}) == []


@pytest.mark.parametrize("section", WHOLE)
def test_every_field_has_a_row_and_every_row_is_a_field(section: str) -> None:
    model = GatewayConfig.model_fields[section].annotation
    assert isinstance(model, type) and issubclass(model, BaseModel)
    keys, known = documented(section), fields(model)
    # A nested model is documented by its keys (``semantic.weight``) or as a whole (``limits``).
    assert [k for k in known if k not in keys and not any(d.startswith(k + ".") for d in keys)
            and not any(k.startswith(d + ".") for d in keys)] == []
    assert [k for k in keys if k not in known] == []
