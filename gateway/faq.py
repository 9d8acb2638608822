"""The self-service knowledge base: load FAQ entries and match a customer's question to one.

No models and no network. Matching is lexical:

* **Tokens.** English: casefolded words, a small stopword list (function words and question
  words), a light stemmer (plural s/es/ies, -ed, -ing, final e). Chinese: jieba segmentation
  (search mode, so long words also yield their dictionary sub-words), plus every character
  bigram and every single character, so short or differently segmented phrasings still overlap
  ("锂电池" and "电池", "压坏" and "坏"). A character that jieba leaves standing alone is a word by
  itself and counts twice. Mixed text gets both kinds of tokens.
* **Vectors.** At load time every phrasing of every entry (canonical question and alternatives,
  all languages) becomes a TF-IDF vector, smoothed IDF over all phrasings of the KB. Each entry
  also gets one vector of all its phrasings together (in its language), so a question whose words
  are spread over two phrasings of the same entry still finds it.
* **Score.** For a question ``q`` and a phrasing ``d``: the mean of the cosine similarity and the
  share of ``q``'s weight that ``d`` contains (query coverage). Tokens of ``q`` that no phrasing
  contains weigh 1.25 times the highest IDF: words the KB has never seen are evidence that the
  question is about something else. Both parts lie in 0..1, a phrasing asked verbatim scores 1.
  An entry's score is the best over its phrasings and its combined vector.
* **Language.** Entries in the language of the question (:func:`detect_lang`) are preferred: the
  best of them wins if it reaches ``min_score``; only when none does is the best entry in another
  language considered. Ties go to the entry that comes first, so matching is deterministic.
* **Cost.** jieba is imported and its dictionary loaded on first use (about a second, once per
  process; ``import gateway.faq`` stays cheap). Everything else is computed when the index is
  built; a match then takes around 0.1 ms (one jieba call, then an inverted-index lookup).

File format (YAML, a list of entries). The multilingual form, as in ``faq/shipping_kb.yaml``::

    - id: track-parcel
      en: {q: "How do I track my parcel?", alt: ["Where is my package?"], a: "Enter ..."}
      zh: {q: "如何查询包裹物流?", alt: ["我的快递到哪了"], a: "在官网 ..."}

every key other than ``id`` is a language code. The flat form, one language per entry::

    - id: track-parcel
      question: How do I track my parcel?
      alternatives: [Where is my package?]
      answer: Enter ...
      lang: en            # optional, default "en"

Both forms may be mixed in one file; an ``(id, language)`` pair may appear only once.

An item with the single key ``out_of_scope`` instead of an entry lists, per language, messages
the KB does **not** answer (small talk, other businesses' questions)::

    - out_of_scope:
        en: ["tell me a joke", "what's the interest rate on a savings account"]
        zh: ["讲个笑话"]

They are not entries: the bot never answers with or offers one of them. The semantic matcher
makes an answer less sure the closer the question is to one of them
(``gateway/selfservice/semantic.py``); the lexical matcher ignores them, so such a question
may still be answered with an entry that reaches the threshold.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .configfile import mapping_value
from .yamlhints import hint

__all__ = [
    "DEFAULT_MIN_SCORE",
    "FaqEntry",
    "FaqError",
    "FaqIndex",
    "FaqMatch",
    "Synonyms",
    "detect_lang",
    "tokenize",
]

DEFAULT_MIN_SCORE = 0.35
"""Recommended ``min_score`` for :meth:`FaqIndex.match`.

For a KB of a few phrasings per entry: set on ``faq/shipping_kb.yaml``'s questions and first two
alternatives (see ``tests/test_faq.py``; the shipped KB has ten more English ones, with which
unrelated text such as "can you help me" reaches 0.69: calibrate such a KB, docs/selfservice.md).
Every phrasing of the KB scores 1.0 for its own entry, the paraphrases in the tests score 0.39 to 1.0, the unrelated
questions at most 0.33 and about half of them 0. Lower values answer more loose paraphrases but
start answering small talk ("what's the weather in Paris" touches the weather-delay entry);
higher values hand more questions over to an agent.
"""

# ---------------------------------------------------------------------------------------------
# Tokenization

_CJK = (
    "\u3400-\u4dbf"  # extension A
    "\u4e00-\u9fff"  # unified ideographs
    "\uf900-\ufaff"  # compatibility ideographs
    "\U00020000-\U0002ebef"  # extensions B-F
    "\U00030000-\U0003134f"  # extension G
)
_CJK_RE = re.compile(f"[{_CJK}]")
_NON_CJK_ALNUM = f"(?:(?![{_CJK}])[^\\W_])"
# A run of CJK ideographs, or a word of other letters/digits (with inner apostrophes: "can't").
_TOKEN_RE = re.compile(f"([{_CJK}]+)|({_NON_CJK_ALNUM}+(?:['\u2019]{_NON_CJK_ALNUM}+)*)")
_LETTER_RE = re.compile(f"(?:(?![{_CJK}])[^\\W\\d_])")

# Function words and question words. Negations stay ("not", "never"); IDF discounts the
# remaining frequent words ("can", "parcel").
_EN_STOPWORDS = frozenset(
    """
    a an the and or but if of to in on at by for from with about into as than then so
    i me my mine myself we us our ours you your yours he him his she her it its they them their
    this that these those there here
    is am are was were be been being do does did doing done have has had having
    will would shall should could might must may
    please hi hey thanks thank just also too very really some any now still much many
    what how where when who whom whose why which
    """.split()
)
_EN_CONTRACTIONS = {"won't": ("will", "not"), "can't": ("can", "not"), "cannot": ("can", "not")}

# Particles, pronouns, fillers and question words: they carry no topic. The single characters
# among them are also left out of the character and bigram tokens.
_ZH_STOPWORDS = frozenset(
    """
    的 了 吗 呢 吧 啊 呀 嘛 哦 么 着
    我 你 您 他 她 它 我们 你们 他们 咱们 自己 这 那 这个 那个 这些 那些
    是 在 和 与 及 或 也 都 就 又 请 一下 一个
    想 要 我想 我要 好 好的
    谁 什么 怎么 怎么样 怎样 如何 哪 哪里 哪儿 哪些 为什么 为何 怎 什
    """.split()
)
_ZH_STOPCHARS = frozenset(w for w in _ZH_STOPWORDS if len(w) == 1)

# A query token no phrasing contains weighs this many times the highest IDF of the KB.
_UNKNOWN_WEIGHT = 1.25

_jieba_lock = threading.Lock()
_jieba_cut = None


def _jieba():
    """jieba's search-mode ``lcut``, imported and initialized on first use (dictionary ~1 s)."""
    global _jieba_cut
    if _jieba_cut is None:
        with _jieba_lock:
            if _jieba_cut is None:
                import jieba  # deferred: importing gateway.faq stays cheap

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                # Without the HMM pass for unknown words: twice as fast, and unknown words
                # are still matched by their characters and bigrams.
                _jieba_cut = functools.partial(jieba.lcut_for_search, HMM=False)
    return _jieba_cut


def _has_vowel(s: str) -> bool:
    return any(c in "aeiouy" for c in s)


def _stem(word: str) -> str:
    """A light, conservative English stemmer: plural s/es/ies, -ed, -ing, a final silent e.

    Only the forms of one word have to meet ("damage", "damaged" and "damages" all become
    "damag"; "ship", "shipped" and "shipping" become "ship"); the stem need not be a word.
    """
    if len(word) <= 3 or not word.isalpha():
        return word
    w = word
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("es") and len(w) > 4 and w[-3] in "sxz":
        w = w[:-2]
    elif w.endswith(("ches", "shes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and _has_vowel(w[: -len(suffix)]):
            w = w[: -len(suffix)]
            if len(w) >= 4 and w[-1] == w[-2] and w[-1] not in "lsz":  # shipp -> ship
                w = w[:-1]
            break
    if len(w) > 4 and w.endswith("e") and not w.endswith("ee"):
        w = w[:-1]
    return w


def _english(word: str) -> list[str]:
    word = word.replace("\u2019", "'")
    if word in _EN_CONTRACTIONS:
        parts: Iterable[str] = _EN_CONTRACTIONS[word]
    elif word.endswith("n't"):
        parts = (word[:-3], "not")
    elif "'" in word:
        parts = (word.split("'", 1)[0],)  # what's -> what, courier's -> courier, i'm -> i
    else:
        parts = (word,)
    return [_stem(p) for p in parts if p and p not in _EN_STOPWORDS]


def _chinese(run: str, tf: dict[str, float]) -> None:
    """Add the tokens of a run of CJK ideographs to ``tf``.

    Words are plain, bigrams are prefixed ``2:`` and single characters ``1:``; a word of one
    character is its character token (which it then gets twice).
    """
    for word in _jieba()(run):
        if word not in _ZH_STOPWORDS:
            tok = "1:" + word if len(word) == 1 else word
            tf[tok] = tf.get(tok, 0.0) + 1.0
    for i in range(len(run) - 1):
        if run[i] not in _ZH_STOPCHARS and run[i + 1] not in _ZH_STOPCHARS:
            tok = "2:" + run[i : i + 2]
            tf[tok] = tf.get(tok, 0.0) + 1.0
    for ch in run:
        if ch not in _ZH_STOPCHARS:
            tok = "1:" + ch
            tf[tok] = tf.get(tok, 0.0) + 1.0


def _features(text: str, synonyms: Synonyms | None = None) -> dict[str, float]:
    """Token -> term frequency."""
    tf: dict[str, float] = {}
    text = unicodedata.normalize("NFKC", text).casefold()
    if synonyms is not None:
        text = synonyms.apply(text)
    for m in _TOKEN_RE.finditer(text):
        if m.group(1):
            _chinese(m.group(1), tf)
        else:
            for tok in _english(m.group(2)):
                tf[tok] = tf.get(tok, 0.0) + 1.0
    return tf


def tokenize(text: str) -> list[str]:
    """The tokens :class:`FaqIndex` matches ``text`` on, each once (for debugging and tests).

    Chinese character bigrams are prefixed ``2:`` and single characters ``1:``.
    """
    return list(_features(text))


_PUNCT_RE = re.compile(r"[\s\W_]+", re.UNICODE)


def normalize(text: str) -> str:
    """Case, width, spaces and punctuation aside: what makes two messages "the same"."""
    return _PUNCT_RE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def detect_lang(text: str) -> str:
    """``"zh"`` if CJK ideographs dominate the text, else ``"en"``.

    An ideograph carries about as much as a short word, so each one counts as much as three
    other letters: "VIP会员有什么权益" is Chinese, "can I pay with 支付宝" is English.
    """
    cjk = len(_CJK_RE.findall(text))
    if cjk == 0:
        return "en"
    letters = len(_LETTER_RE.findall(text))
    return "zh" if 3 * cjk >= letters else "en"


def _primary_lang(lang: str) -> str:
    """"zh-CN", "zh_Hant" and "ZH" all prefer Chinese questions, like "zh"."""
    return re.split(r"[-_]", lang.strip().lower(), maxsplit=1)[0]


class Synonyms:
    """Groups of words or phrases that mean the same, e.g. ``[快递, 包裹]``, ``[COD, cash on
    delivery]``: every member of a group is rewritten to the group's first member, in the KB's
    phrasings and in the question alike, before tokenizing.

    Latin-script members match whole words, case-insensitively; members with CJK ideographs match
    anywhere. Longer members are tried first, so "cash on delivery" wins over "delivery" when
    both are members of some group.
    """

    __slots__ = ("_canonical", "_pattern", "groups")

    def __init__(self, groups: Iterable[Iterable[str]]) -> None:
        self.groups = tuple(tuple(g) for g in groups)
        canonical: dict[str, str] = {}
        for group in self.groups:
            norm = [unicodedata.normalize("NFKC", m).casefold().strip() for m in group]
            norm = [m for m in norm if m]
            if len(norm) < 2:
                raise ValueError(f"a synonym group needs at least two members, got {list(group)!r}")
            # The first member maps to itself, so that it is found as a whole before a shorter
            # member of another group inside it: with [快递员, 派件员] and [包裹, 快递],
            # "快递员" stays a courier.
            for member in norm:
                canonical.setdefault(member, norm[0])
        self._canonical = canonical
        alternatives = []
        for member in sorted(canonical, key=len, reverse=True):
            escaped = r"\s+".join(re.escape(w) for w in member.split())
            alternatives.append(escaped if _CJK_RE.search(member) else rf"(?<!\w){escaped}(?!\w)")
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def apply(self, text: str) -> str:
        """``text`` (already NFKC-normalized and casefolded) with every member made canonical."""
        if self._pattern is None:
            return text
        canonical = self._canonical
        return self._pattern.sub(lambda m: canonical[" ".join(m.group(0).split())], text)

    def __bool__(self) -> bool:
        return bool(self._canonical)


# Typo tolerance: an unknown Latin token of at least this many letters is read as the KB's most
# similar token when their similarity (rapidfuzz's normalized Indel ratio, 0..100) reaches
# _TYPO_CUTOFF: "pasword" is "password", "trak" is "track"; "router" stays unknown ("rout", 80).
_TYPO_MIN_LEN = 4
_TYPO_CUTOFF = 85.0


# ---------------------------------------------------------------------------------------------
# Entries, matches and the index


class FaqError(ValueError):
    """A knowledge-base file that cannot be used; the message names the file and the place."""


@dataclass(frozen=True, slots=True)
class FaqEntry:
    id: str
    lang: str
    question: str
    alternatives: tuple[str, ...]
    answer: str

    def __post_init__(self) -> None:
        if not isinstance(self.alternatives, tuple):
            object.__setattr__(self, "alternatives", tuple(self.alternatives))

    @property
    def phrasings(self) -> tuple[str, ...]:
        """The canonical question followed by the alternatives."""
        return (self.question, *self.alternatives)


@dataclass(frozen=True, slots=True)
class FaqMatch:
    entry: FaqEntry
    score: float  # 0..1, see the module docstring


class FaqIndex:
    """An immutable index over FAQ entries; all vectors are computed in the constructor."""

    __slots__ = (
        "_entries", "_lang_of", "_langs", "_idf", "_unknown_idf", "_postings", "_doc_entry",
        "_synonyms", "_typo_vocab", "_typo_cache", "_out_of_scope",
    )

    def __init__(self, entries: Iterable[FaqEntry], *, synonyms: Iterable[Iterable[str]] = (),
                 typo_tolerance: bool = False,
                 out_of_scope: Mapping[str, Iterable[str]] | None = None) -> None:
        """``synonyms``: see :class:`Synonyms`. ``typo_tolerance``: an unknown word of the
        question that is a near miss of a word of the KB counts as that word (rapidfuzz).
        ``out_of_scope``: messages the KB does not answer, per language (kept, not indexed)."""
        entries = tuple(entries)
        self._out_of_scope = {lang: tuple(texts) for lang, texts in (out_of_scope or {}).items() if texts}
        syn = Synonyms(synonyms)
        self._synonyms = syn if syn else None
        seen: set[tuple[str, str]] = set()
        for e in entries:
            if not isinstance(e, FaqEntry):
                raise TypeError(f"FaqIndex takes FaqEntry objects, got {type(e).__name__}")
            if (e.id, e.lang) in seen:
                raise ValueError(f"duplicate FAQ entry id {e.id!r} for language {e.lang!r}")
            seen.add((e.id, e.lang))
        self._entries = entries
        self._lang_of = tuple(_primary_lang(e.lang) for e in entries)
        self._langs = frozenset(self._lang_of)

        phrasings: list[tuple[int, dict[str, float]]] = []  # (entry index, term frequencies)
        combined: list[tuple[int, dict[str, float]]] = []  # one per entry: all its phrasings
        for i, e in enumerate(entries):
            together: dict[str, float] = {}
            for text in e.phrasings:
                tf = _features(text, self._synonyms)
                if tf:
                    phrasings.append((i, tf))
                    for tok, n in tf.items():
                        together[tok] = together.get(tok, 0.0) + n
            if len(e.phrasings) > 1 and together:
                combined.append((i, together))

        n_docs = len(phrasings)
        df: dict[str, int] = {}
        for _, tf in phrasings:
            for tok in tf:
                df[tok] = df.get(tok, 0) + 1
        self._idf = {tok: math.log((n_docs + 1) / (d + 1)) + 1.0 for tok, d in df.items()}
        self._unknown_idf = (math.log(n_docs + 1) + 1.0) * _UNKNOWN_WEIGHT

        docs = phrasings + combined
        self._doc_entry = tuple(i for i, _ in docs)
        # token -> ((doc number, weight in the doc's unit vector), ...)
        postings: dict[str, list[tuple[int, float]]] = {}
        for doc_no, (_, tf) in enumerate(docs):
            vec = {tok: n * self._idf[tok] for tok, n in tf.items()}
            norm = math.sqrt(sum(v * v for v in vec.values()))
            for tok, v in vec.items():
                postings.setdefault(tok, []).append((doc_no, v / norm))
        self._postings = {tok: tuple(p) for tok, p in postings.items()}
        self._typo_vocab: tuple[str, ...] | None = None
        self._typo_cache: dict[str, str | None] = {}
        if typo_tolerance:
            importlib.import_module("rapidfuzz")  # fail at build time, not on the first question
            self._typo_vocab = tuple(
                tok for tok in self._idf if len(tok) >= _TYPO_MIN_LEN and tok.isalpha()
                and not _CJK_RE.search(tok)
            )

    def _near_miss(self, tok: str) -> str | None:
        """The KB's token ``tok`` is probably a typo of, or None."""
        if self._typo_vocab is None or len(tok) < _TYPO_MIN_LEN or not tok.isalpha() or _CJK_RE.search(tok):
            return None
        if tok in self._typo_cache:
            return self._typo_cache[tok]
        from rapidfuzz import fuzz, process

        hit = process.extractOne(tok, self._typo_vocab, scorer=fuzz.ratio, score_cutoff=_TYPO_CUTOFF)
        found = hit[0] if hit is not None else None
        if len(self._typo_cache) < 10_000:  # bounded: questions are customer input
            self._typo_cache[tok] = found
        return found

    @classmethod
    def load(cls, path: str | Path, *, synonyms: Iterable[Iterable[str]] = (),
             typo_tolerance: bool = False) -> FaqIndex:
        """Load a YAML knowledge base (either form, see the module docstring).

        Raises :class:`FaqError` for a missing or unreadable file, invalid YAML (with the line),
        or an entry that is not well formed (with its index, id and line).
        """
        entries, out_of_scope = _load_entries(Path(path))
        return cls(entries, synonyms=synonyms, typo_tolerance=typo_tolerance, out_of_scope=out_of_scope)

    @property
    def entries(self) -> tuple[FaqEntry, ...]:
        return self._entries

    @property
    def out_of_scope(self) -> Mapping[str, tuple[str, ...]]:
        """The KB's ``out_of_scope`` messages per language (see the module docstring)."""
        return self._out_of_scope

    detect_lang = staticmethod(detect_lang)

    def _scores(self, text: str) -> dict[int, float]:
        """Entry index -> score of ``text`` for that entry, for entries sharing a token with it."""
        q: dict[str, float] = {}
        total = 0.0  # squared norm of the query vector, unknown tokens included
        tf = _features(text, self._synonyms)
        if self._typo_vocab is not None:
            corrected: dict[str, float] = {}
            for tok, n in tf.items():
                if tok not in self._idf:
                    tok = self._near_miss(tok) or tok
                corrected[tok] = corrected.get(tok, 0.0) + n
            tf = corrected
        for tok, n in tf.items():
            idf = self._idf.get(tok)
            w = n * (idf if idf is not None else self._unknown_idf)
            total += w * w
            if idf is not None:
                q[tok] = w
        if not q:
            return {}
        qnorm = math.sqrt(total)
        n_docs = len(self._doc_entry)
        dots = [0.0] * n_docs  # query . doc (doc vectors are unit length)
        covered = [0.0] * n_docs  # squared weight of the query tokens the doc contains
        touched: list[int] = []
        for tok, w in q.items():
            ww = w * w
            for doc_no, v in self._postings[tok]:
                if not covered[doc_no]:
                    touched.append(doc_no)
                dots[doc_no] += w * v
                covered[doc_no] += ww
        doc_entry = self._doc_entry
        inv_qnorm, inv_total = 1.0 / qnorm, 1.0 / total
        twice: dict[int, float] = {}  # entry -> best cosine + coverage
        for doc_no in touched:
            s = dots[doc_no] * inv_qnorm + covered[doc_no] * inv_total
            i = doc_entry[doc_no]
            if s > twice.get(i, -1.0):
                twice[i] = s
        # Rounded so that a verbatim phrasing scores exactly 1.0 despite float error.
        return {i: round(min(1.0, s / 2), 9) for i, s in twice.items()}

    def rank(self, text: str, limit: int | None = None) -> list[FaqMatch]:
        """Entries sharing a token with ``text``, best first: those in the detected language of
        ``text`` (when the KB has that language) by score, then the others by score; ties in the
        order of the KB. At most ``limit`` of them.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text.strip():
            return []
        best = self._scores(text)
        if not best:
            return []
        lang = detect_lang(text)
        prefer = lang in self._langs
        order = sorted(best, key=lambda i: (prefer and self._lang_of[i] != lang, -best[i], i))
        if limit is not None:
            order = order[:limit]
        return [FaqMatch(self._entries[i], best[i]) for i in order]

    def match(self, text: str, *, min_score: float) -> FaqMatch | None:
        """The best entry for ``text`` and its score, or ``None`` if none reaches ``min_score``.

        Entries in the detected language of ``text`` are preferred (see the module docstring):
        the first of :meth:`rank` that reaches ``min_score``. Text with no token in common with
        any phrasing never matches, whatever ``min_score``. :data:`DEFAULT_MIN_SCORE` is the
        recommended threshold.
        """
        for m in self.rank(text):
            if m.score >= min_score:
                return m
        return None

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"FaqIndex({len(self._entries)} entries, languages {sorted(self._langs)})"


# ---------------------------------------------------------------------------------------------
# Loading

_FLAT_KEYS = frozenset({"id", "question", "alternatives", "answer", "lang"})
_LANG_KEYS = frozenset({"q", "alt", "a"})


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FaqError(f"{path}: FAQ file not found") from None
    except UnicodeDecodeError as exc:
        raise FaqError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise FaqError(f"{path}: cannot read FAQ file: {exc.strerror or exc}") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        what = ": ".join(p for p in (exc.context, exc.problem) if p)
        guess = hint(text, exc)  # as config.yaml's errors have (gateway/yamlhints.py)
        raise FaqError(f"{path}: invalid YAML at {where}: {what}" + (f" (probably {guess})" if guess else "")) from None
    except yaml.YAMLError as exc:
        raise FaqError(f"{path}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return data, node


def _text(value: Any, what: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        got = "missing" if value is None else f"got {type(value).__name__} {value!r}"
        raise FaqError(f"{where}: {what} must be a non-empty string ({got})")
    return value.strip()


def _texts(value: Any, what: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FaqError(f"{where}: {what} must be a list of strings, got {type(value).__name__}")
    return tuple(_text(v, f"{what}[{k}]", where) for k, v in enumerate(value))


def _load_entries(path: Path) -> tuple[list[FaqEntry], dict[str, list[str]]]:
    """The entries, and the ``out_of_scope`` messages per language."""
    data, node = _read_yaml(path)
    if not isinstance(data, list):
        got = "an empty document" if data is None else f"a {type(data).__name__}"
        raise FaqError(f"{path}: the top level must be a list of FAQ entries, got {got}")
    entries: list[FaqEntry] = []
    out_of_scope: dict[str, list[str]] = {}
    out_of_scope_at: dict[str, str] = {}  # language -> where its first out_of_scope list is
    seen: dict[tuple[str, str], int] = {}
    for n, raw in enumerate(data):
        line = None
        if isinstance(node, yaml.SequenceNode) and n < len(node.value):
            line = node.value[n].start_mark.line + 1
        at = f"line {line}" if line is not None else None
        eid = raw.get("id") if isinstance(raw, dict) else None
        has_id = isinstance(eid, str) and bool(eid.strip())
        details = [f"id {eid.strip()!r}" if has_id else None, at]
        where = f"{path}: entry[{n}]"
        if any(details):
            where += " (" + ", ".join(d for d in details if d) + ")"
        if not isinstance(raw, dict):
            raise FaqError(f"{where}: an entry must be a mapping, got {type(raw).__name__}")
        if "out_of_scope" in raw:
            item = node.value[n] if isinstance(node, yaml.SequenceNode) and n < len(node.value) else None
            for lang in _parse_out_of_scope(raw, item, where, out_of_scope):
                out_of_scope_at.setdefault(lang, where)
            continue
        if not has_id:
            _text(eid, "'id'", where)  # raises
        eid = eid.strip()
        for entry in _parse_entry(raw, eid, where):
            key = (entry.id, entry.lang)
            if key in seen:
                raise FaqError(
                    f"{where}: duplicate id {entry.id!r} for language {entry.lang!r}"
                    f" (first at entry[{seen[key]}])"
                )
            seen[key] = n
            entries.append(entry)
    langs = {_primary_lang(e.lang) for e in entries}
    for lang in out_of_scope:
        if entries and _primary_lang(lang) not in langs:
            raise FaqError(f"{out_of_scope_at[lang]}: out_of_scope language {lang!r} has no entries in this KB"
                           f" (its languages: {', '.join(sorted(langs))}); a question is compared with the"
                           " messages of its own language")
    return entries, out_of_scope


def _parse_out_of_scope(raw: dict[Any, Any], item: yaml.Node | None, where: str,
                        into: dict[str, list[str]]) -> list[str]:
    """Add the item's messages to ``into``; the languages it has. ``item``: its YAML node, for
    the line of a bad message."""
    if set(raw) != {"out_of_scope"}:
        others = ", ".join(sorted(str(k) for k in raw if k != "out_of_scope"))
        raise FaqError(f"{where}: out_of_scope is an item of its own, not an entry's key (also: {others})")
    block = raw["out_of_scope"]
    if not isinstance(block, Mapping) or not block:
        raise FaqError(f"{where}: out_of_scope must map languages to lists of messages, "
                       f"e.g. {{en: [\"tell me a joke\"]}}")
    langs = []
    for lang, texts in block.items():
        if not isinstance(lang, str) or not lang.strip():
            raise FaqError(f"{where}: out_of_scope: language key {lang!r} must be a string")
        if not isinstance(texts, list):  # null too: an empty list would be a silent no-op
            got = "null" if texts is None else type(texts).__name__
            raise FaqError(f"{where}: out_of_scope.{lang} must be a list of strings, got {got}")
        listed = mapping_value(mapping_value(item, "out_of_scope"), lang)
        for k, text in enumerate(texts):
            line = (f" (line {listed.value[k].start_mark.line + 1})"
                    if isinstance(listed, yaml.SequenceNode) and k < len(listed.value) else "")
            into.setdefault(lang.strip(), []).append(_text(text, f"out_of_scope.{lang}[{k}]{line}", where))
        langs.append(lang.strip())
    return langs


def _parse_entry(raw: dict[Any, Any], eid: str, where: str) -> list[FaqEntry]:
    if "question" in raw or "answer" in raw:  # flat form
        unknown = sorted(str(k) for k in raw if k not in _FLAT_KEYS)
        if unknown:
            raise FaqError(
                f"{where}: unknown key(s) {', '.join(unknown)} in a flat entry"
                f" (allowed: {', '.join(sorted(_FLAT_KEYS))})"
            )
        lang = _text(raw.get("lang", "en"), "'lang'", where)
        return [
            FaqEntry(
                id=eid,
                lang=lang,
                question=_text(raw.get("question"), "'question'", where),
                alternatives=_texts(raw.get("alternatives"), "'alternatives'", where),
                answer=_text(raw.get("answer"), "'answer'", where),
            )
        ]
    out: list[FaqEntry] = []
    for lang, block in raw.items():
        if lang == "id":
            continue
        if not isinstance(lang, str) or not lang.strip():
            hint = " (quote it: YAML reads no/yes/on/off as booleans)"
            if not isinstance(lang, bool):
                hint = ""
            raise FaqError(f"{where}: language key {lang!r} must be a string{hint}")
        lw = f"{where}, language {lang!r}"
        if not isinstance(block, Mapping):
            raise FaqError(f"{lw}: must be a mapping with q, alt and a, got {type(block).__name__}")
        unknown = sorted(str(k) for k in block if k not in _LANG_KEYS)
        if unknown:
            raise FaqError(f"{lw}: unknown key(s) {', '.join(unknown)} (allowed: a, alt, q)")
        out.append(
            FaqEntry(
                id=eid,
                lang=lang.strip(),
                question=_text(block.get("q"), "question 'q'", lw),
                alternatives=_texts(block.get("alt"), "'alt'", lw),
                answer=_text(block.get("a"), "answer 'a'", lw),
            )
        )
    if not out:
        raise FaqError(
            f"{where}: no question; give 'question' and 'answer' (flat form)"
            " or language blocks such as 'en: {q: ..., a: ...}'"
        )
    return out
