"""The routing part of ``config.yaml``: tiers, queues, routing rules and agents (pydantic models).

These models only describe and validate; the decisions live in the sibling modules.
"""

from __future__ import annotations

import operator
import re
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    """Unknown keys are mistakes (a typo must not silently disable a rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
_TEST = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")


class AttributeTest(Strict):
    """``"lifetime_value >= 10000"``: a customer attribute compared with a literal."""

    name: str
    op: Literal[">=", "<=", "==", "!=", ">", "<"]
    value: float | str | bool

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if not isinstance(raw, str):
            return raw
        match = _TEST.match(raw)
        if not match:
            raise ValueError(f"expected 'attribute OP value' with OP one of >= <= == != > <, got {raw!r}")
        name, op, literal = match.groups()
        value: float | str | bool
        if literal.lower() in ("true", "false"):
            value = literal.lower() == "true"
        elif len(literal) >= 2 and literal[0] == literal[-1] and literal[0] in "'\"":
            value = literal[1:-1]
        else:
            try:
                value = float(literal)
            except ValueError:
                value = literal
        return {"name": name, "op": op, "value": value}

    def holds(self, attributes: dict[str, Any]) -> bool:
        actual = attributes
        for part in self.name.split("."):
            if not isinstance(actual, dict) or part not in actual:
                return False
            actual = actual[part]
        expected: Any = self.value
        if isinstance(expected, float) and not isinstance(actual, bool):
            try:
                actual = float(actual)  # CRMs send numbers as strings often enough
            except (TypeError, ValueError):
                return False
        try:
            return _OPS[self.op](actual, expected)
        except TypeError:
            return False


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, (str, dict)) else value


class Condition(Strict):
    """Every key given must hold (AND); a list means any of its values (OR)."""

    channel: list[str] | None = None
    tier: list[str] | None = None
    email_domain: list[str] | None = None
    phone_prefix: list[str] | None = None
    attribute: list[AttributeTest] | None = None

    _normalize = field_validator("channel", "tier", "email_domain", "phone_prefix", "attribute", mode="before")(
        lambda cls, v: _as_list(v)
    )

    @field_validator("email_domain")
    @classmethod
    def _lower_domains(cls, domains: list[str] | None) -> list[str] | None:
        return [d.lower().lstrip("@") for d in domains] if domains else domains


class TierRule(Strict):
    tier: str = Field(pattern=NAME)
    when: Condition


class TiersConfig(Strict):
    """How a customer's tier is decided: the tier on the profile, else the first matching rule."""

    default: str = Field(default="standard", pattern=NAME)
    rules: list[TierRule] = []

    @property
    def names(self) -> set[str]:
        return {self.default, *(rule.tier for rule in self.rules)}


class QueueConfig(Strict):
    name: str = Field(pattern=NAME)
    description: str | None = None
    # A higher number is served first; a tier not listed gets 0.
    priority: dict[str, int] = {}


class RoutingRule(Strict):
    name: str | None = None
    when: Condition = Condition()
    queue: str


class RoutingConfig(Strict):
    """Ordered rules: the first whose condition holds picks the queue; else ``default_queue``."""

    rules: list[RoutingRule] = []
    default_queue: str


class AgentConfig(Strict):
    id: str = Field(pattern=NAME)
    name: str
    token: SecretStr = Field(min_length=8)
    capacity: int = Field(default=3, ge=1, le=100)
    queues: list[str] = Field(min_length=1)
