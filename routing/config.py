"""The routing part of ``config.yaml``: tiers, queues, routing rules and agents (pydantic models).

These models only describe and validate; the decisions live in the sibling modules.
"""

from __future__ import annotations

import operator
import re
import string
from datetime import date
from typing import Any, Callable, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Strict(BaseModel):
    """Unknown keys are mistakes (a typo must not silently disable a rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
    ">": operator.gt, "<": operator.lt,
}
# The value may not start with an operator character: "a >>= 3" is a typo, not a > ">= 3".
_TEST = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|==|!=|>|<)\s*([^<>=!\s].*?)\s*$")


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
    """Every key given must hold (AND). A list of values means any of them (OR), except
    ``attribute``: every test in its list must hold."""

    _checks: Any = PrivateAttr(default=None)  # routing.compiled caches the compiled form here

    channel: list[str] | None = None
    tier: list[str] | None = None
    email_domain: list[str] | None = None
    phone_prefix: list[str] | None = None
    attribute: list[AttributeTest] | None = None
    language: list[str] | None = None      # detected from the customer's text: en, zh, ...
    topic: list[str] | None = None         # FAQ entry ids the self-service layer recognised
    keywords: list[str] | None = None      # any of these texts inside the customer's messages (case-insensitive substring)
    within_hours: str | None = None        # a name from `hours:` that is open now
    outside_hours: str | None = None       # a name from `hours:` that is closed now

    _normalize = field_validator("channel", "tier", "email_domain", "phone_prefix", "attribute", "language",
                                 "topic", "keywords", mode="before")(
        lambda cls, v: _as_list(v)
    )

    @field_validator("email_domain")
    @classmethod
    def _lower_domains(cls, domains: list[str] | None) -> list[str] | None:
        return [d.lower().lstrip("@") for d in domains] if domains else domains


class TierRule(Strict):
    tier: str = Field(pattern=NAME)
    when: Condition


CRM_PLACEHOLDERS = ("email", "phone", "customer_id", "channel")


class CrmConfig(Strict):
    """Ask a CRM over HTTP for the tier when neither the profile nor a rule decides it.

    ``url`` is a template: ``https://crm.example.com/customers?email={email}``; each placeholder
    is filled with the customer's URL-quoted value, and a lookup whose value is missing is skipped.
    """

    url: str
    timeout: float = Field(default=0.5, gt=0)            # seconds for the whole request
    cache_ttl: float = Field(default=300.0, ge=0)        # seconds answers (and misses) are kept
    fallback_tier: str | None = Field(default=None, pattern=NAME)  # none = the tiers default
    tier_field: str = Field(default="tier", pattern=r"^[^.\s]+(\.[^.\s]+)*$")  # dotted path in the JSON
    # Secrets belong here as ${VAR} (e.g. Authorization: "Bearer ${CRM_TOKEN}"); kept out of repr.
    headers: dict[str, str] = Field(default={}, repr=False)

    @field_validator("url")
    @classmethod
    def _template(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
        allowed = ", ".join("{" + name + "}" for name in CRM_PLACEHOLDERS)
        try:
            fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(url) if name is not None]
        except ValueError as exc:  # a lone { or }
            raise ValueError(f"bad URL template {url!r}: {exc} (write {{{{ or }}}} for a literal brace)") from None
        for name, spec, conv in fields:
            if name not in CRM_PLACEHOLDERS or spec or conv:
                shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
                raise ValueError(f"unknown placeholder {shown} in URL template; use only {allowed}")
        return url

    @property
    def placeholders(self) -> set[str]:
        """The customer values the URL needs."""
        return {name for _, name, _, _ in string.Formatter().parse(self.url) if name}


class TiersConfig(Strict):
    """How a customer's tier is decided: the tier on the profile, else the first matching rule."""

    _index: Any = PrivateAttr(default=None)  # routing.compiled.RuleIndex, built on first use

    default: str = Field(default="standard", pattern=NAME)
    rules: list[TierRule] = []
    crm: CrmConfig | None = None

    @property
    def names(self) -> set[str]:
        names = {self.default, *(rule.tier for rule in self.rules)}
        if self.crm is not None and self.crm.fallback_tier:
            names.add(self.crm.fallback_tier)
        return names


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class HoursConfig(Strict):
    """Business hours: weekly opening spans in a time zone, minus holidays."""

    timezone: str = "UTC"
    # Day -> "09:00-18:00" or a list of spans; a day not listed is closed.
    weekly: dict[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], list[str]] = {}
    holidays: list[date] = []

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)") from None
        return name

    @field_validator("weekly", mode="before")
    @classmethod
    def _spans(cls, weekly: Any) -> Any:
        if not isinstance(weekly, dict):
            return weekly
        out = {}
        for day, spans in weekly.items():
            spans = [spans] if isinstance(spans, str) else spans
            for span in spans or []:
                match = _SPAN.match(str(span).replace(" ", ""))
                if not match or (match.group(1), match.group(2)) >= (match.group(3), match.group(4)):
                    raise ValueError(f"{day}: expected spans like '09:00-18:00' (start before end), got {span!r}")
            out[day] = spans or []
        return out


class OutsideHours(Strict):
    """What a contact gets when it arrives while its queue is closed."""

    # message: say `text` and wait in the queue anyway; leave_message: say `text` and move to
    # `queue` (worked later, like email); callback: say `text`, record a callback request, close.
    action: Literal["message", "leave_message", "callback"] = "message"
    text: str = "We are closed right now; an agent will answer when we open."
    queue: str | None = None

    @model_validator(mode="after")
    def _needs_queue(self) -> "OutsideHours":
        if self.action == "leave_message" and not self.queue:
            raise ValueError("action leave_message needs `queue`: where the messages wait")
        return self


class WhenAbandoned(Strict):
    """What becomes of a conversation waiting here whose customer left: on a channel with live
    sessions (web chat), no customer socket for the channel's ``abandon_after`` seconds."""

    # close: closed as abandoned; leave_message: it waits in `queue` as a left message, answered
    # later without the customer (who reads the answer if they come back), and says `text`.
    action: Literal["close", "leave_message"] = "close"
    queue: str | None = None
    text: str = "You left before an agent was free. We kept your messages; an agent will answer here."

    @model_validator(mode="after")
    def _needs_queue(self) -> "WhenAbandoned":
        if self.action == "leave_message" and not self.queue:
            raise ValueError("action leave_message needs `queue`: where the left messages wait")
        return self


class ServiceLevel(Strict):
    """``percent`` of the conversations answered within ``answer_within`` seconds."""

    answer_within: float = Field(default=20.0, gt=0)
    percent: float = Field(default=80.0, gt=0, le=100)
    window: float = Field(default=3600.0, gt=0)  # seconds of history the figure covers


class Aging(Strict):
    """Priority grows with wait, so no tier starves: +``boost`` per ``every`` seconds waited."""

    every: float = Field(default=60.0, gt=0)
    boost: int = Field(default=1, ge=0)
    max_boost: int = Field(default=20, ge=0)


Strategy = Literal["longest_idle", "least_occupied", "round_robin", "sticky"]


def _skill_levels(value: Any) -> Any:
    # [english, billing] is shorthand for level 1 in each.
    return {name: 1 for name in value} if isinstance(value, list) else value


class QueueConfig(Strict):
    name: str = Field(pattern=NAME)
    description: str | None = None
    # A higher number is served first; a tier not listed gets 0.
    priority: dict[str, int] = {}
    # Skills an agent needs to take this queue's conversations: name -> minimum level.
    skills: dict[str, int] = {}
    service_level: ServiceLevel = ServiceLevel()
    aging: Aging = Aging()
    # Seconds an agent has to accept an offer before it goes to the next agent.
    offer_timeout: float = Field(default=30.0, gt=0)
    # Assign without an accept (the agent still receives the offer, as already assigned).
    auto_accept: bool = False
    strategy: Strategy = "longest_idle"
    # sticky: prefer the agent who last served this customer within this many seconds.
    sticky_window: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Seconds of wrap-up after an agent closes one of this queue's conversations, before that
    # agent gets any next offer.
    wrap_up: float = Field(default=0.0, ge=0)
    # Seconds a conversation whose home is this queue waits in a step without its own timeout
    # before the rule's next step applies (no effect on a rule's last step).
    max_wait: float | None = Field(default=None, gt=0)
    hours: str | None = None  # a name from `hours:`; none = always open
    outside_hours: OutsideHours = OutsideHours()
    when_abandoned: WhenAbandoned = WhenAbandoned()

    _levels = field_validator("skills", mode="before")(lambda cls, v: _skill_levels(v))


class Step(Strict):
    """One stage of a rule: offer to agents of ``queues``; after ``timeout`` seconds the next
    stage applies. The last stage waits until answered."""

    queues: list[str] = Field(min_length=1)
    timeout: float | None = Field(default=None, gt=0)
    priority_boost: int = 0
    say: str | None = None  # told to the customer when this step begins

    @model_validator(mode="before")
    @classmethod
    def _queue_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "queue" in raw:
            raw = dict(raw)
            queue = raw.pop("queue")
            raw.setdefault("queues", [queue] if isinstance(queue, str) else queue)
        return raw


class RoutingRule(Strict):
    """``queue: X`` is shorthand for one step ``[{queues: [X]}]``."""

    name: str | None = None
    when: Condition = Condition()
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _queue_shorthand(cls, raw: Any) -> Any:
        if isinstance(raw, dict) and "queue" in raw:
            raw = dict(raw)
            if "steps" in raw:
                raise ValueError("give either `queue` or `steps`, not both")
            raw["steps"] = [{"queues": [raw.pop("queue")]}]
        return raw

    @property
    def queue(self) -> str:
        """The queue of the first step: where the conversation is counted as waiting."""
        return self.steps[0].queues[0]


class RoutingConfig(Strict):
    """Ordered rules: the first whose condition holds picks the steps; else ``default_queue``."""

    _index: Any = PrivateAttr(default=None)  # routing.compiled.RuleIndex, built on first use

    rules: list[RoutingRule] = []
    default_queue: str


class SatisfactionConfig(Strict):
    """The question a customer is asked when an agent closes the conversation (gateway/desk/
    satisfaction.py): a score from 1 to 5, and an optional comment. Off by default."""

    enabled: bool = False
    # The question and the thanks, per language ("en" needed; "zh" is used for Chinese chats).
    question: dict[str, str] = {"en": "How would you rate this conversation? (1 = poor, 5 = excellent)",
                                "zh": "您对本次服务满意吗?(1 = 很不满意,5 = 非常满意)"}
    thanks: dict[str, str] = {"en": "Thank you for your feedback!", "zh": "感谢您的反馈!"}
    # Channel names that ask; empty: every channel but email ones.
    channels: list[str] = []
    # Seconds after the close during which an answer is taken.
    answer_within: float = Field(default=24 * 3600, gt=0)

    @field_validator("question", "thanks")
    @classmethod
    def _english(cls, value: dict[str, str]) -> dict[str, str]:
        if not value.get("en", "").strip():
            raise ValueError('needs an "en" text (the one used for languages without their own)')
        return value


class CannedReply(Strict):
    """A reply an agent inserts from the console's list (then edits or sends as it is)."""

    title: str = Field(min_length=1, max_length=80)
    text: str = Field(min_length=1, max_length=4000)


class DeskConfig(Strict):
    """How the agent desk behaves for every agent."""

    # Offers missed in a row (timed out) before the agent is set away and told why.
    missed_offers_before_away: int = Field(default=3, ge=1)
    # Seconds an agent's websocket may stay dropped before the agent goes offline and its open
    # conversations return to the head of their queues.
    disconnect_grace: float = Field(default=30.0, ge=0)
    # Codes an agent picks from when closing; empty = any text or none.
    dispositions: list[str] = []
    require_disposition: bool = False
    satisfaction: SatisfactionConfig = SatisfactionConfig()
    # Replies the console offers to insert, in this order (sent to agents in `ready`).
    canned: list[CannedReply] = []


class AgentConfig(Strict):
    id: str = Field(pattern=NAME)
    name: str
    token: SecretStr  # at least 8 characters (_token)
    # Conversations at once: one number for all channels, or per channel ({webchat: 3, email: 5}).
    capacity: int | dict[str, int] = 3
    queues: list[str] = Field(min_length=1)
    # Skill -> level (1-10); a list is shorthand for level 1 each.
    skills: dict[str, int] = {}

    _levels = field_validator("skills", mode="before")(lambda cls, v: _skill_levels(v))

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 8:
            raise ValueError(f"a token must be at least 8 characters, not {len(value.get_secret_value())}")
        return value

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, value: int | dict[str, int]) -> int | dict[str, int]:
        values = value.values() if isinstance(value, dict) else [value]
        if not values or any(not 0 <= v <= 100 for v in values) or max(values) < 1:
            raise ValueError("capacity must be 1-100 (or per channel 0-100, at least one above 0)")
        return value

    def capacity_for(self, channel: str) -> int:
        if isinstance(self.capacity, int):
            return self.capacity
        return self.capacity.get(channel, self.capacity.get("default", 0))
