"""The typed, validated ``config.yaml``.

``load_config(path)`` reads the file (``gateway.configfile``), expands ``${VAR}`` references and
validates it into :class:`GatewayConfig`; every mistake is reported with its key path and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from adapters import registry
from routing.config import (NAME, AgentConfig, Condition, DeskConfig, HoursConfig, QueueConfig, RoutingConfig,
                            Strict, TiersConfig)

from .configfile import ConfigError, YamlDocument, dotted, read_yaml, read_yaml_file
from .attachments import AttachmentsConfig
from .board.settings import BoardConfig
from .limits import LimitsConfig
from .origins import ANY, normalize_origins

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # Largest websocket text frame a client may send; larger ones get a frame_too_large error.
    max_frame_bytes: int = Field(default=64 * 1024, ge=256, le=16 * 1024 * 1024)
    # Seconds to let in-flight requests finish on SIGTERM before cancelling them.
    shutdown_timeout: float = Field(default=10.0, gt=0)
    # Seconds an agent has to send its auth frame after connecting.
    auth_timeout: float = Field(default=10.0, gt=0)
    admin_token: SecretStr | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    # Seconds between checks of config.yaml for changes (0: reload only on SIGHUP or the API).
    reload_poll: float = Field(default=2.0, ge=0)
    # Connections and slow clients (docs/configuration.md#connections).
    # Bytes one websocket client may have waiting to be sent (queue and socket buffer); a client
    # that falls further behind is closed with 1013 and resumes from its last seq.
    max_send_buffer_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)
    # Seconds a new connection (or an idle keep-alive one) has to send complete request headers.
    header_timeout: float = Field(default=10.0, gt=0)
    # Open connections at most (null: the file limit minus 64 descriptors kept for the store,
    # logs and config), and how many of them are kept for /healthz, /readyz, /metrics, /api/
    # and /agent/ws (null: a tenth, at least 16).
    max_connections: int | None = Field(default=None, ge=1)
    connection_reserve: int | None = Field(default=None, ge=0)
    # Web pages besides the gateway's own origin that may open /agent/ws (and the web chat):
    # its other names, e.g. behind a proxy ("https://desk.example.com"). gateway/origins.py.
    allowed_origins: list[str] = []

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = normalize_origins(value)
        if ANY in origins:
            raise ValueError('"*" is not allowed here: it would let any site open an agent\'s socket')
        return origins


class StoreConfig(Strict):
    # sqlite:///relative/to/config.db, sqlite:////absolute.db or postgresql://user@host:5432/db
    url: str = "sqlite:///data/contactgate.db"


class ChannelConfig(BaseModel):
    """One inbound channel. ``type`` picks the adapter; its other keys are the adapter's own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    name: str | None = Field(default=None, pattern=NAME)

    @property
    def channel_name(self) -> str:
        return self.name or self.type

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ChannelSelfService(Strict):
    """What differs for one channel: an answer by mail must be surer than one in a chat."""

    min_score: float | None = Field(default=None, gt=0, le=1)
    max_unanswered: int | None = Field(default=None, ge=1)


class SemanticConfig(Strict):
    """The semantic matcher (the optional ``[semantic]`` extra): an embedding model's cosine
    combined with the lexical score, ``weight * cosine + (1 - weight) * lexical``."""

    # All picked on tests/faq_dev/dev.yaml (docs/selfservice.md): the lexical score did not
    # help e5 there (weight 1), the best entry's lead over the runner-up did in English
    # (margin 2) but not in Chinese (margins: {zh: 0}), and so did the lead over the KB's
    # out_of_scope messages (out_of_scope_weight 0.25).
    weight: float = Field(default=1.0, ge=0, le=1)
    # The best entry's score gains margin x (its score - the runner-up's): a clear winner is surer.
    margin: float = Field(default=2.0, ge=0, le=5)
    # The margin per language of the question (detect_lang: en, zh); others take `margin`.
    margins: dict[str, float] = {"zh": 0.0}

    @field_validator("margins")
    @classmethod
    def _margins(cls, value: dict[str, float]) -> dict[str, float]:
        for lang, m in value.items():
            if not 0 <= m <= 5:
                raise ValueError(f"margins.{lang}: {m} must be from 0 to 5")
        return value
    # The best entry's score gains this x (its closest phrasing's cosine - the closest
    # out_of_scope message's): a question nearer "tell me a joke" than the entry is less sure.
    out_of_scope_weight: float = Field(default=0.25, ge=0, le=5)
    # The languages of the question (en, zh) scored by an intent classifier instead: one logistic
    # regression learnt from the KB's phrasings in these languages (a class per entry id), their
    # out_of_scope messages as "none of these" (docs/selfservice.md#the-intent-classifier). Picked on the dev set: both
    # languages gained, with about 13 phrasings per entry (with 3, Chinese lost). []: the blend.
    classifier_langs: list[str] = ["en", "zh"]
    # Its regularisation, as scikit-learn's C: higher follows the phrasings more closely.
    classifier_c: float = Field(default=30.0, gt=0, le=1e6)
    # How much the lexical score counts beside the classifier's confidence:
    # (1 - classifier_lexical) x confidence + classifier_lexical x lexical. Picked on the dev set
    # (0.2; 0 is the classifier alone): the words a question shares with an entry's phrasings are
    # evidence the embedding smooths over.
    classifier_lexical: float = Field(default=0.2, ge=0, le=1)
    # Where the KB's embeddings are kept between starts (keyed by text and model version);
    # relative to config.yaml. None: $XDG_CACHE_HOME/contactgate, else ~/.cache/contactgate.
    cache_dir: Path | None = None


Texts = str | dict[str, str]
"""A text the bot says: one for every language, or one per language of the customer's message
(``{en: ..., zh: ...}``; a language not listed takes ``en``, else the first)."""


def localized(texts: Texts, lang: str) -> str:
    """``texts`` in ``lang`` (``zh-CN`` counts as ``zh``)."""
    if isinstance(texts, str):
        return texts
    return texts.get(lang.split("-")[0].lower()) or texts.get("en") or next(iter(texts.values()), "")


def _check_texts(name: str, texts: Texts | None) -> Texts | None:
    if isinstance(texts, dict):
        if not texts:
            raise ValueError(f"{name}: give a text, or one per language such as {{en: ..., zh: ...}}")
        for lang, text in texts.items():
            if not text.strip():
                raise ValueError(f"{name}.{lang}: the text is empty")
    return texts


class ConversationPolicyConfig(Strict):
    """What the bot does around its answers (docs/selfservice.md#conversation-policy). Texts are
    per language of the customer's question (``en``, ``zh``); a language not listed takes ``en``."""

    # "Did this help?" after an answer, with yes / no choices; a "no" hands off.
    ask_helpful: bool = True
    helpful_prompt: dict[str, str] = {"en": "Did this help?", "zh": "这个回答对您有帮助吗?"}
    helpful_choices: dict[str, list[str]] = {"en": ["Yes", "No"], "zh": ["有帮助", "没有帮助"]}
    glad: dict[str, str] = {"en": "Glad I could help!", "zh": "很高兴能帮到您!"}
    # Whole replies that count as a yes or a no to "did this help?" (case and punctuation aside).
    yes_words: list[str] = ["yes", "y", "yeah", "yep", "yup", "sure", "thanks", "thank you", "it did", "helpful",
                            "是", "是的", "有", "有用", "有帮助", "好的", "谢谢", "对"]
    no_words: list[str] = ["no", "n", "nope", "not really", "it didn't", "it did not", "not helpful",
                           "不", "不是", "没有", "没用", "没有用", "没有帮助", "没帮助", "不行"]
    # Words of an angry customer: any of them in a message hands off at once. Not "complaint" or
    # 投诉: how to complain is a question the KB answers (the shipping KB's complaint-courier).
    angry_words: list[str] = ["useless", "stupid", "ridiculous", "terrible", "awful", "furious", "angry",
                              "idiot", "wtf", "damn", "scam",
                              "垃圾", "太差", "破机器人", "气死", "骗子", "烦死", "什么破"]
    # The same question twice in a row (after the bot's reply) hands off.
    repeat_hands_off: bool = True
    # Customer messages the bot takes in one conversation at most; the next one hands off.
    max_bot_turns: int = Field(default=10, ge=1)
    # Seconds a conversation may stay with the bot without progress (an answer, a pick, a
    # "yes") after a reply that was not one; then it is handed off. 0: never.
    stalled_after: float = Field(default=600.0, ge=0)
    # How channels without buttons (email) ask for a pick: the choices numbered, then this.
    numbered_hint: dict[str, str] = {"en": "Reply with the number of your choice.", "zh": "请回复选项的编号。"}
    # Top KB suggestions on each offer and customer message of an assigned conversation (0: none).
    agent_suggestions: int = Field(default=3, ge=0, le=10)

    @model_validator(mode="after")
    def _texts(self) -> "ConversationPolicyConfig":
        for lang, labels in self.helpful_choices.items():
            if len(labels) != 2 or not all(label.strip() for label in labels):
                raise ValueError(f"helpful_choices.{lang}: give two labels, yes then no, got {labels!r}")
        return self


def _check_thresholds(model: Any) -> None:
    for lang, t in model.thresholds.items():
        if not 0 < t <= 1:
            raise ValueError(f"thresholds.{lang}: {t} must be greater than 0 and at most 1")
    for lang, t in model.choices_thresholds.items():
        if not 0 < t <= 1:
            raise ValueError(f"choices_thresholds.{lang}: {t} must be greater than 0 and at most 1")


class KnowledgeBaseConfig(Strict):
    """One more knowledge base, for the conversations whose ``when`` holds (routing's condition
    keys, docs/routing.md#conditions); each with its own thresholds. Matched with the same
    matcher and options as ``selfservice.faq``."""

    name: str = Field(pattern=NAME)
    faq: Path  # relative to config.yaml
    calibration: Path | None = None
    # Unset: selfservice's min_score / choices_min_score.
    min_score: float | None = Field(default=None, gt=0, le=1)
    thresholds: dict[str, float] = {}
    choices_min_score: float | None = Field(default=None, gt=0, le=1)
    choices_thresholds: dict[str, float] = {}
    when: Condition = Condition()

    @model_validator(mode="after")
    def _matching(self) -> "KnowledgeBaseConfig":
        _check_thresholds(self)
        return self


# What routing knows of a conversation only at handoff, not while the bot answers.
KB_CONDITIONS_UNKNOWN = ("tier", "topic", "within_hours", "outside_hours")


class SelfServiceConfig(Strict):
    faq: Path | None = None  # relative paths are relative to config.yaml
    min_score: float = Field(default=0.35, gt=0, le=1)
    # How questions are matched to the FAQ: "lexical" (words, characters) or "semantic" (an
    # embedding model with the lexical score; needs the [semantic] extra, else lexical is used).
    matcher: Literal["lexical", "semantic"] = "lexical"
    # The score an answer needs per language of the question, e.g. {en: 0.42, zh: 0.55};
    # languages not listed take the calibration file's, then min_score.
    thresholds: dict[str, float] = {}
    # A file written by `contactgate faq-eval --calibrate` (relative to config.yaml).
    calibration: Path | None = None
    # "Did you mean": below the answer's threshold, entries scoring at least this are offered as
    # up to 3 choices (per language in choices_thresholds, e.g. {en: 0.3}). None: no choices.
    choices_min_score: float | None = Field(default=None, gt=0, le=1)
    choices_thresholds: dict[str, float] = {}
    did_you_mean: Texts = "Did you mean one of these?"
    # Groups of words that mean the same to the matcher, e.g. [[快递, 包裹], [COD, cash on delivery]].
    synonyms: list[list[str]] = []
    # A near miss of a KB word ("pasword") counts as that word. Off by default: on the dev set
    # it made as many wrong answers surer as it found right ones (docs/selfservice.md).
    typo_tolerance: bool = False
    semantic: SemanticConfig = SemanticConfig()
    # More KBs, per queue or brand: the first whose `when` holds answers; none: `faq` above.
    knowledge_bases: list[KnowledgeBaseConfig] = []
    handoff_phrases: list[str] = ["agent", "human", "person", "representative", "人工", "转人工", "客服"]
    max_unanswered: int = Field(default=2, ge=1)
    # Per channel name: min_score / max_unanswered for that channel's conversations.
    channels: dict[str, ChannelSelfService] = {}
    # What the bot says: a text, or one per language of the customer's message ({en: ..., zh: ...}).
    greeting: Texts | None = "Hi! Ask me about your shipment, or type 'agent' to talk to a person."
    no_answer: Texts = "Sorry, I don't have an answer for that. Try other words, or type 'agent' to talk to a person."
    handoff: Texts = "Let me find you an agent. Please hold on."
    policy: ConversationPolicyConfig = ConversationPolicyConfig()

    @field_validator("greeting", "no_answer", "handoff", "did_you_mean")
    @classmethod
    def _texts(cls, value: Texts | None, info: Any) -> Texts | None:
        return _check_texts(info.field_name, value)

    @model_validator(mode="after")
    def _matching(self) -> "SelfServiceConfig":
        _check_thresholds(self)
        for n, group in enumerate(self.synonyms):
            if len({g.strip().casefold() for g in group if g.strip()}) < 2:
                raise ValueError(f"synonyms[{n}]: a group needs at least two different words, got {group!r}")
        return self


class GatewayConfig(Strict):
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    channels: list[ChannelConfig] = Field(min_length=1)
    selfservice: SelfServiceConfig = SelfServiceConfig()
    tiers: TiersConfig = TiersConfig()
    queues: list[QueueConfig] = Field(min_length=1)
    hours: dict[str, HoursConfig] = {}
    routing: RoutingConfig
    desk: DeskConfig = DeskConfig()
    agents: list[AgentConfig] = []
    limits: LimitsConfig = LimitsConfig()
    attachments: AttachmentsConfig = AttachmentsConfig()
    board: BoardConfig = BoardConfig()

    @model_validator(mode="after")
    def _references(self) -> "GatewayConfig":
        problems: list[tuple[tuple[Any, ...], str]] = []

        def unique(section: str, names: list[str]) -> None:
            seen: set[str] = set()
            for index, name in enumerate(names):
                if name in seen:
                    problems.append(((section, index), f"duplicate {name!r}"))
                seen.add(name)

        unique("queues", [q.name for q in self.queues])
        unique("agents", [a.id for a in self.agents])
        unique("channels", [c.channel_name for c in self.channels])
        queues = {q.name for q in self.queues}
        if self.routing.default_queue not in queues:
            problems.append((("routing", "default_queue"), f"unknown queue {self.routing.default_queue!r}"))
        for index, rule in enumerate(self.routing.rules):
            for step_index, step in enumerate(rule.steps):
                for queue in step.queues:
                    if queue not in queues:
                        problems.append((("routing", "rules", index, "steps", step_index), f"unknown queue {queue!r}"))
            for hours in (rule.when.within_hours, rule.when.outside_hours):
                if hours is not None and hours not in self.hours:
                    problems.append((("routing", "rules", index, "when"), f"unknown hours {hours!r} (define it under `hours:`)"))
        for index, queue_config in enumerate(self.queues):
            if queue_config.hours is not None and queue_config.hours not in self.hours:
                problems.append((("queues", index, "hours"), f"unknown hours {queue_config.hours!r} (define it under `hours:`)"))
            overflow = queue_config.outside_hours.queue
            if overflow is not None and overflow not in queues:
                problems.append((("queues", index, "outside_hours", "queue"), f"unknown queue {overflow!r}"))
            left_messages = queue_config.when_abandoned.queue
            if left_messages is not None and left_messages not in queues:
                problems.append((("queues", index, "when_abandoned", "queue"), f"unknown queue {left_messages!r}"))
        for index, agent in enumerate(self.agents):
            for queue in agent.queues:
                if queue not in queues:
                    problems.append((("agents", index, "queues"), f"unknown queue {queue!r}"))
        tokens: dict[str, str] = {}
        for index, agent in enumerate(self.agents):
            token = agent.token.get_secret_value()
            if token in tokens:
                problems.append((("agents", index, "token"), f"same token as agent {tokens[token]!r}"))
            tokens[token] = agent.id
        for index, rule in enumerate(self.tiers.rules):
            if rule.when.tier is not None:
                problems.append((("tiers", "rules", index, "when", "tier"), "a tier rule cannot test the tier it is deciding"))
        paths: dict[str, int] = {}
        for index, channel in enumerate(self.channels):
            path = channel.settings.get("path")
            if path is not None and path in paths:
                problems.append((("channels", index, "path"), f"path {path!r} is already used by channels[{paths[path]}]"))
            if path is not None:
                paths[path] = index
        channel_names = {c.channel_name for c in self.channels}
        kb_names: set[str] = set()
        for index, kb in enumerate(self.selfservice.knowledge_bases):
            where = ("selfservice", "knowledge_bases", index)
            if kb.name in kb_names:
                problems.append(((*where, "name"), f"duplicate {kb.name!r}"))
            kb_names.add(kb.name)
            if kb.name == "default":
                problems.append(((*where, "name"), "'default' is the name of selfservice.faq; choose another"))
            for key in KB_CONDITIONS_UNKNOWN:
                if getattr(kb.when, key) is not None:
                    problems.append(((*where, "when", key), f"{key!r} is not known while the bot answers"
                                     " (it is decided at handoff); use channel, language, attribute,"
                                     " email_domain, phone_prefix or keywords"))
        # A misspelt channel in a condition would match nothing, silently.
        conditions = [(("selfservice", "knowledge_bases", i), kb.when) for i, kb in enumerate(self.selfservice.knowledge_bases)]
        conditions += [(("routing", "rules", i), r.when) for i, r in enumerate(self.routing.rules)]
        conditions += [(("tiers", "rules", i), r.when) for i, r in enumerate(self.tiers.rules)]
        for where, when in conditions:
            for name in when.channel or ():
                if name not in channel_names:
                    problems.append(((*where, "when", "channel"), f"no channel named {name!r} (channels: {sorted(channel_names)})"))
        for name in self.selfservice.channels:
            if name not in channel_names:
                problems.append((("selfservice", "channels", name), f"no channel named {name!r} (channels: {sorted(channel_names)})"))
        tiers = self.tiers.names
        for index, queue in enumerate(self.queues):
            for tier in queue.priority:
                if tier not in tiers:
                    problems.append((("queues", index, "priority", tier), f"unknown tier {tier!r} (known: {sorted(tiers)})"))
        for index, channel in enumerate(self.channels):
            if channel.type not in registry.known_types():
                problems.append((("channels", index, "type"), f"unknown channel type {channel.type!r} (known: {sorted(registry.known_types())})"))
                continue
            try:
                settings = registry.validate_settings(channel.type, channel.settings)
            except ValidationError as exc:
                for error in exc.errors():
                    # A channel's validator may name several keys below it (an IVR menu's nodes).
                    nested = getattr((error.get("ctx") or {}).get("error"), "problems", None)
                    for path, message in nested or [((), _message(error))]:
                        problems.append((("channels", index, *error["loc"], *path), message))
                continue
            for path, hours in getattr(settings, "hours_references", lambda: [])():
                if hours not in self.hours:
                    problems.append((("channels", index, *path), f"unknown hours {hours!r} (define it under `hours:`)"))
        if problems:
            raise _ReferenceProblems(problems)
        return self

    def queue(self, name: str) -> QueueConfig:
        return next(q for q in self.queues if q.name == name)


class _ReferenceProblems(ValueError):
    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{dotted(p)}: {m}" for p, m in problems))


def parse_config(text: str, source: str = "config.yaml", env: Mapping[str, str] | None = None,
                 base_dir: Path | None = None) -> GatewayConfig:
    return _validate(read_yaml(text, source, env), base_dir or Path.cwd())


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    path = Path(path)
    return _validate(read_yaml_file(path, env), path.resolve().parent)


def _validate(doc: YamlDocument, base_dir: Path) -> GatewayConfig:
    if not isinstance(doc.data, dict):
        raise ConfigError(doc.source, ["1: the top level must be a mapping of sections (server, store, channels, ...)"])
    try:
        config = GatewayConfig.model_validate(doc.data)
    except ValidationError as exc:
        # An unset variable explains whatever else is wrong with the same key.
        unset = {p.split(": ", 2)[1] for p in doc.problems}
        described = [p for p in _describe(exc, doc) if p.split(": ", 2)[1] not in unset]
        problems = sorted(set(doc.problems + described), key=lambda p: int(p.split(":", 1)[0]))
        raise ConfigError(doc.source, problems) from None
    if doc.problems:
        raise ConfigError(doc.source, doc.problems)
    return _resolve_paths(config, base_dir)


def _describe(exc: ValidationError, doc: YamlDocument) -> list[str]:
    by_path: dict[tuple[Any, ...], list[str]] = {}
    for error in exc.errors():
        ctx = error.get("ctx") or {}
        nested = ctx.get("error")
        if isinstance(nested, _ReferenceProblems):
            for path, message in nested.problems:
                by_path.setdefault(_in_file(path, doc), []).append(message)
            continue
        path = _in_file(tuple(p for p in error["loc"] if isinstance(p, (str, int))), doc)
        by_path.setdefault(path, []).append(_message(error))
    # A key of several accepted shapes fails once per shape: one line says what each wanted.
    return [f"{doc.line_of(path) or 0}: {dotted(path)}: {' or '.join(dict.fromkeys(messages))}"
            for path, messages in by_path.items()]


def _in_file(path: tuple[Any, ...], doc: YamlDocument) -> tuple[Any, ...]:
    """The key path as the administrator wrote it.

    Drops what pydantic adds (union member tags such as ``int`` or ``dict[str,int]`` after the
    key) and maps a rule's expanded ``steps[0]`` back to the ``queue:`` shorthand it came from.
    """
    if path[:2] == ("routing", "rules") and len(path) >= 5 and path[3] == "steps" and path[:3] + ("queue",) in doc.lines:
        return path[:3] + ("queue",)
    kept: tuple[Any, ...] = ()
    for part in path:
        if (*kept, part) in doc.lines or not doc.lines:
            kept = (*kept, part)
        elif isinstance(part, str) and kept in doc.lines and not _is_mapping_at(doc, kept):
            break  # a type tag under a scalar or list value
        else:
            kept = (*kept, part)
    return kept


def _is_mapping_at(doc: YamlDocument, path: tuple[Any, ...]) -> bool:
    value: Any = doc.data
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return False
    return isinstance(value, dict)


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check its spelling and indentation)"
    if error["type"] == "missing":
        return "required key is missing"
    return str(error["msg"])


def _resolve_paths(config: GatewayConfig, base_dir: Path) -> GatewayConfig:
    updates: dict[str, Any] = {}
    ss = config.selfservice
    paths: dict[str, Any] = {}
    for key in ("faq", "calibration"):
        value = getattr(ss, key)
        if value is not None and not value.is_absolute():
            paths[key] = base_dir / value
    cache = ss.semantic.cache_dir
    if cache is not None and not cache.is_absolute():
        paths["semantic"] = ss.semantic.model_copy(update={"cache_dir": base_dir / cache})
    kbs = []
    for kb in ss.knowledge_bases:
        own = {key: base_dir / getattr(kb, key) for key in ("faq", "calibration")
               if getattr(kb, key) is not None and not getattr(kb, key).is_absolute()}
        kbs.append(kb.model_copy(update=own) if own else kb)
    if kbs != ss.knowledge_bases:
        paths["knowledge_bases"] = kbs
    if paths:
        updates["selfservice"] = ss.model_copy(update=paths)
    url = config.store.url
    prefix = "sqlite:///"
    if url == "sqlite:///:memory:":
        updates["store"] = StoreConfig(url="sqlite://:memory:")
    elif url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite://:memory:":
        updates["store"] = StoreConfig(url="sqlite:////" + str(base_dir / url[len(prefix):]).lstrip("/"))
    return config.model_copy(update=updates) if updates else config


def config_warnings(config: GatewayConfig, doc: YamlDocument | None = None) -> list[str]:
    """What is valid but probably not meant: a queue no agent can take conversations from, a
    routing step that offers to nobody. ``"LINE: key: message"`` like the errors (line 0 without
    ``doc``). check-config prints them (exit 0); the gateway logs them at start and on reload."""
    warnings: list[tuple[tuple[Any, ...], str]] = []

    def served(queue: QueueConfig) -> bool:
        return any(queue.name in agent.queues and all(agent.skills.get(skill, 0) >= level
                                                     for skill, level in queue.skills.items())
                   for agent in config.agents)

    unserved: set[str] = set()
    for index, queue in enumerate(config.queues):
        if served(queue):
            continue
        unserved.add(queue.name)
        listed = [agent.id for agent in config.agents if queue.name in agent.queues]
        if listed:
            needs = ", ".join(f"{skill} {level}" for skill, level in queue.skills.items())
            why = f"no agent serving queue {queue.name!r} ({', '.join(listed)}) has the skills it needs ({needs})"
        else:
            why = f"no agent serves queue {queue.name!r} (add it to an agent's `queues`)"
        warnings.append((("queues", index), why + ": conversations routed there wait until one does"))
    for index, rule in enumerate(config.routing.rules):
        for step_index, step in enumerate(rule.steps):
            if step.queues and all(q in unserved for q in step.queues):
                where = ("routing", "rules", index, "steps", step_index)
                warnings.append((where, f"rule {rule.name or f'routing.rules[{index}]'!r} offers to nobody at this step: "
                                        f"no agent can take conversations from {', '.join(repr(q) for q in step.queues)}"))

    out = []
    for path, message in warnings:
        shown = _in_file(path, doc) if doc is not None else path  # a rule's `queue:` shorthand as written
        out.append(f"{(doc.line_of(shown) if doc is not None else None) or 0}: {dotted(shown)}: {message}")
    return out


def file_warnings(path: str | Path, config: GatewayConfig) -> list[str]:
    """:func:`config_warnings` for the config loaded from ``path``, with its lines."""
    try:
        doc = read_yaml_file(path)
    except ConfigError:  # changed since it was loaded: the warnings without lines
        doc = None
    return config_warnings(config, doc)
