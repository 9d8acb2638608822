"""The IVR's menus: the ``menu:``, ``waiting:`` and ``phrases:`` keys of a ``type: ivr`` channel
in config.yaml (pydantic models), and the checks a tree of nodes needs beyond its shape.

A menu is a tree of nodes. A node says (``say``) or plays (``play``) something; then it either
gathers a key press or a spoken answer (``gather``: options, each leading somewhere), goes on
to the ``next`` node, or ends the call. The validator refuses what would strand a caller: a
reference to a node that does not exist, ``next`` links that loop without ever asking the
caller anything, an option that leads nowhere or that no key or word can choose. Each problem
names its key, so config errors carry the line (gateway/config.py reads ``MenuProblems``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
KEYS = "0123456789*#"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def short_language(language: str) -> str:
    """en-US -> en, zh-CN / cmn-Hans-CN -> zh: the language the FAQ and routing speak of."""
    head = language.split("-", 1)[0].lower()
    return {"cmn": "zh", "yue": "zh"}.get(head, head)


class MenuProblems(ValueError):
    """Problems found in a menu, each with its key path below the model that raised it."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(".".join(map(str, p)) + f": {m}" for p, m in problems))


TARGETS = ("goto", "faq", "agent", "callback", "hangup")


class Target(Strict):
    """Where a choice leads: exactly one of these."""

    goto: str | None = None        # another node
    faq: str | None = None         # a FAQ entry id: its answer is said (in the caller's language)
    agent: str | None = Field(default=None, pattern=NAME)  # to an agent; routing sees "ivr:<agent>"
    callback: bool = False         # leave a number to be called back
    hangup: bool = False           # say goodbye and end the call

    @model_validator(mode="after")
    def _one(self) -> "Target":
        given = [name for name in TARGETS if getattr(self, name) not in (None, False)]
        if len(given) != 1:
            what = "no target" if not given else f"several targets ({', '.join(given)})"
            raise ValueError(f"{what}: give exactly one of goto, faq, agent, callback: true or hangup: true")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in TARGETS if getattr(self, name) not in (None, False))


class Option(Target):
    """One choice of a gather: a key, words (per language), or both."""

    key: str | None = None
    # Words that choose this option when the caller speaks: a list, or per language
    # ({en: [billing, invoice], zh: [账单]}); a word of the speech result counts (a Chinese one anywhere in it).
    words: dict[str, list[str]] = {}
    then: str | None = None        # after a faq answer: this node (default: the menu's after_answer)

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # 1 in YAML is a number
        if value is not None and (not isinstance(value, str) or len(value) != 1 or value not in KEYS):
            raise ValueError(f"a key is one of 0-9, * or #, got {value!r}")
        return value

    @field_validator("words", mode="before")
    @classmethod
    def _words(cls, value: Any) -> Any:
        if isinstance(value, (list, str)):
            return {"any": [value] if isinstance(value, str) else value}
        return value

    @model_validator(mode="after")
    def _reachable(self) -> "Option":
        if self.key is None and not any(self.words.values()):
            raise ValueError("this option has neither a key nor words: nothing can choose it")
        if self.then is not None and self.faq is None:
            raise ValueError("`then` is for faq options (where to go after the answer)")
        return self

    def heard_in(self, speech: str, language: str) -> bool:
        said = speech.casefold()
        for lang, words in self.words.items():
            if lang in ("any", language):
                if any(_spoken(w.casefold().strip(), said) for w in words if w.strip()):
                    return True
        return False


# Chinese is written without spaces: a word of it counts anywhere in the speech result; other
# words (and phrases) count whole, so "person" is not heard in "personally".
_IDEOGRAPH = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _spoken(word: str, said: str) -> bool:
    if _IDEOGRAPH.search(word):
        return word in said
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", said) is not None


class Gather(Strict):
    """Ask the caller: a key press (dtmf), speech, or either."""

    options: list[Option] = Field(min_length=1)
    input: Literal["dtmf", "speech", "dtmf speech"] = "dtmf speech"
    timeout: int = Field(default=5, ge=1, le=60)     # seconds of silence that count as no input
    retries: int = Field(default=3, ge=1, le=10)     # invalid or missing inputs before `on_fail`
    invalid: str | None = None                       # said after an invalid or missing input
    on_fail: Target = Target(hangup=True)            # after `retries` of them
    # Speech that chooses no option is asked of the FAQ: its answer is said when it scores
    # above the self-service threshold (selfservice.thresholds); else it counts as invalid.
    faq: bool = False
    after_answer: str | None = None                  # the node after a FAQ answer (default: this one)

    @model_validator(mode="after")
    def _options(self) -> "Gather":
        problems: list[tuple[tuple[Any, ...], str]] = []
        seen: dict[str, int] = {}
        for index, option in enumerate(self.options):
            if option.key is not None:
                if option.key in seen:
                    problems.append((("options", index, "key"), f"key {option.key!r} is already options[{seen[option.key]}]'s"))
                seen[option.key] = index
            if self.input == "dtmf" and option.key is None:
                problems.append((("options", index), "input is dtmf: this option needs a key"))
        if self.on_fail.faq is not None:
            problems.append((("on_fail",), "on_fail cannot be a faq answer"))
        if problems:
            raise MenuProblems(problems)
        return self


class Node(Strict):
    say: str | None = None
    play: str | None = Field(default=None, pattern=r"^https?://\S+$")  # an audio file's URL
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]+)*$")  # en-US, zh-CN
    voice: str | None = None                         # e.g. Polly.Joanna; none: the provider's default
    gather: Gather | None = None
    next: str | None = None                          # without a gather: the node after this one

    @model_validator(mode="after")
    def _shape(self) -> "Node":
        if self.say is None and self.play is None and self.gather is None:
            raise ValueError("a node needs say, play or gather")
        if self.gather is not None and self.next is not None:
            raise ValueError("give gather or next, not both (a gather's options say where to go)")
        return self


class Menu(Strict):
    start: str = "main"                              # the node a call begins with
    language: str = Field(default="en-US", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]+)*$")
    voice: str | None = None
    # Outside these business hours (a name from `hours:`) a call begins at `closed` instead.
    hours: str | None = None
    closed: str | None = None
    repeat_key: str | None = "*"                     # says the current node again
    back_key: str | None = "#"                       # back to the node before
    greet_known: str | None = "Hello {name}."        # said first to a caller whose name we know
    nodes: dict[str, Node] = Field(min_length=1)

    @field_validator("repeat_key", "back_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and (not isinstance(value, str) or len(value) != 1 or value not in KEYS):
            raise ValueError(f"a key is one of 0-9, * or #, got {value!r}")
        return value

    @model_validator(mode="after")
    def _references(self) -> "Menu":
        problems: list[tuple[tuple[Any, ...], str]] = []
        names = set(self.nodes)

        def known(path: tuple[Any, ...], name: str | None) -> None:
            if name is not None and name not in names:
                problems.append((path, f"unknown node {name!r} (nodes: {', '.join(sorted(names))})"))

        known(("start",), self.start)
        known(("closed",), self.closed)
        if (self.hours is None) != (self.closed is None):
            problems.append((("hours",) if self.hours else ("closed",),
                             "hours and closed go together: the node for calls outside the hours"))
        if self.repeat_key is not None and self.repeat_key == self.back_key:
            problems.append((("back_key",), "the same key as repeat_key"))
        for name, node in self.nodes.items():
            known(("nodes", name, "next"), node.next)
            if node.gather is None:
                continue
            gather = node.gather
            known(("nodes", name, "gather", "after_answer"), gather.after_answer)
            known(("nodes", name, "gather", "on_fail", "goto"), gather.on_fail.goto)
            for index, option in enumerate(gather.options):
                known(("nodes", name, "gather", "options", index, "goto"), option.goto)
                known(("nodes", name, "gather", "options", index, "then"), option.then)
                if option.key is not None and option.key in (self.repeat_key, self.back_key):
                    problems.append((("nodes", name, "gather", "options", index, "key"),
                                     f"key {option.key!r} repeats or goes back everywhere (repeat_key, back_key)"))
        problems.extend(_silent_loops(self.nodes))
        if problems:
            raise MenuProblems(problems)
        return self

    def node_language(self, name: str) -> str:
        return self.nodes[name].language or self.language

    def faq_options(self) -> list[tuple[tuple[str | int, ...], str, tuple[str, ...]]]:
        """Every option's ``faq: <id>``: its key, the id, and the languages (en, zh) a caller may
        speak at its node: the node's own, else any of the menu's (a call keeps the language of
        the node it came from). gateway/selfservice checks the ids against the KB of each."""
        spoken = {short_language(self.language)} | {short_language(n.language) for n in self.nodes.values() if n.language}
        found: list[tuple[tuple[str | int, ...], str, tuple[str, ...]]] = []
        for name, node in self.nodes.items():
            languages = (short_language(node.language),) if node.language else tuple(sorted(spoken))
            for index, option in enumerate(node.gather.options if node.gather is not None else ()):
                if option.faq is not None:
                    found.append((("nodes", name, "gather", "options", index, "faq"), option.faq, languages))
        return found


def _silent_loops(nodes: dict[str, Node]) -> list[tuple[tuple[Any, ...], str]]:
    """``next`` links that come back to where they started without a gather: the caller
    would hear the same words for ever."""
    problems = []
    reported: set[str] = set()
    for first in nodes:
        seen = [first]
        name = nodes[first].next
        while name is not None and name in nodes and name not in reported:
            if name in seen:
                loop = seen[seen.index(name):]
                if first == name:
                    problems.append((("nodes", first, "next"),
                                     f"a loop without input: {' -> '.join(loop + [name])} (add a gather to one of them)"))
                    reported.update(loop)
                break
            seen.append(name)
            name = nodes[name].next
    return problems


class Waiting(Strict):
    """How a caller waits for an agent (Twilio's <Enqueue> with our wait URL)."""

    announce_every: float = Field(default=30.0, ge=0)   # seconds between position announcements, at least
    hold_music: str | None = Field(default=None, pattern=r"^https?://\S+$")  # played between them
    # Without music: seconds of silence per wait request. Either way, a shorter round connects
    # an accepted call sooner (the next wait request answers it).
    pause: int = Field(default=5, ge=1, le=60)
    callback_key: str | None = "9"                   # pressed while waiting: leave a callback instead
    max_wait: float | None = Field(default=None, gt=0)  # seconds, then `on_max_wait`
    on_max_wait: Target = Target(callback=True)
    queue_name: str | None = None                    # the provider's queue (default: contactgate-<channel>)

    @field_validator("callback_key", mode="before")
    @classmethod
    def _key(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if value is not None and (not isinstance(value, str) or len(value) != 1 or value not in KEYS):
            raise ValueError(f"a key is one of 0-9, * or #, got {value!r}")
        return value

    @model_validator(mode="after")
    def _overflow(self) -> "Waiting":
        if not (self.on_max_wait.callback or self.on_max_wait.hangup):
            raise ValueError("on_max_wait is {callback: true} or {hangup: true}; to widen the search for an "
                             "agent while the caller waits, use the routing rule's steps (docs/routing.md)")
        return self


class Phrases(Strict):
    """What the IVR itself says, in one language. ``{position}``, ``{minutes}``, ``{key}``,
    ``{number}`` and ``{agent}`` are filled in."""

    invalid: str = "Sorry, I did not get that."
    no_answer: str = "Sorry, I have no answer to that."
    goodbye: str = "Thank you for calling. Goodbye."
    handoff: str = "Please hold while we connect you to an agent."
    position: str = "You are number {position} in line."
    wait: str = "Your estimated wait is about {minutes} minutes."
    # For a wait of one minute (or less); None: `wait`. A channel that sets its own `wait` and
    # not this one gets `wait` for every wait.
    wait_one: str | None = "Your estimated wait is about one minute."
    callback_offer: str = "Press {key} to leave your number, and we will call you back."
    callback_confirm: str = ("We will call you back at {number}. Press 1 to confirm, or enter another number "
                             "followed by the pound key.")
    callback_enter: str = "Please enter the number we should call, followed by the pound key."
    callback_done: str = "Thank you. We will call you back at {number}. Goodbye."
    connecting: str = "Connecting you to {agent}."
    unavailable: str = "Sorry, we cannot take your call right now. Please try again later."


CHINESE = Phrases(
    invalid="抱歉，我没有听清。",
    no_answer="抱歉，这个问题我无法回答。",
    goodbye="感谢您的来电，再见。",
    handoff="请稍候，我们正在为您转接人工客服。",
    position="您目前排在第 {position} 位。",
    wait="预计等待约 {minutes} 分钟。",
    wait_one=None,
    callback_offer="按 {key} 键留下电话号码，我们会给您回电。",
    callback_confirm="我们将回电至 {number}。确认请按 1，或输入其他号码并以井号键结束。",
    callback_enter="请输入回电号码，并以井号键结束。",
    callback_done="谢谢。我们会回电至 {number}。再见。",
    connecting="正在为您接通 {agent}。",
    unavailable="抱歉，我们现在无法接听您的电话，请稍后再拨。",
)

DEFAULT_PHRASES = {"en": Phrases(), "zh": CHINESE}


def phrases_for(phrases: dict[str, Phrases], language: str) -> Phrases:
    """The phrases of a language (en-US -> en), else English, else the first given."""
    short = short_language(language)
    return phrases.get(short) or phrases.get("en") or next(iter(phrases.values()), Phrases())


def spoken_number(number: str) -> str:
    """+15551234567 -> "+1 5 5 5 1 2 3 4 5 6 7": digits one by one, as a caller writes them down."""
    digits = re.sub(r"[^0-9+]", "", number)
    return " ".join(digits)


def merge_phrases(given: dict[str, Phrases]) -> dict[str, Phrases]:
    """The defaults (English, Chinese) with a channel's ``phrases`` over them, key by key: a
    language given in part keeps its own defaults for the rest."""
    merged = dict(DEFAULT_PHRASES)
    for language, phrases in given.items():
        base = merged.get(language, Phrases())
        update = {k: getattr(phrases, k) for k in phrases.model_fields_set}
        if "wait" in update and "wait_one" not in update:
            update["wait_one"] = None  # not the default's one-minute wording beside their own
        merged[language] = base.model_copy(update=update)
    return merged
