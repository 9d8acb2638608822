"""Tests for gateway.faq: loading knowledge bases, tokenizing, and matching calibration."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.faq import (
    DEFAULT_MIN_SCORE,
    FaqEntry,
    FaqError,
    FaqIndex,
    FaqMatch,
    detect_lang,
    tokenize,
)

ROOT = Path(__file__).resolve().parent.parent
SHIPPING_KB = ROOT / "faq" / "shipping_kb.yaml"


@functools.cache
def kb() -> FaqIndex:
    """The shipped KB as a KB of a few phrasings per entry: each entry's question and first two
    alternatives (the shipped one has ten more in English, docs/selfservice.md), the shape
    DEFAULT_MIN_SCORE is for."""
    entries = FaqIndex.load(SHIPPING_KB).entries
    return FaqIndex(dataclasses.replace(e, alternatives=e.alternatives[:2]) for e in entries)


def _phrasings() -> list[tuple[str, str, str]]:
    return [(e.id, e.lang, p) for e in kb().entries for p in e.phrasings]


# ---------------------------------------------------------------------------------------------
# Calibration on the shipping KB at DEFAULT_MIN_SCORE (0.35)
#
# Scores with the current tokenizer and weights: every phrasing of the KB scores 1.0 for its own
# entry. English paraphrases below score 0.53 to 1.0 (median 0.81), Chinese ones 0.39 to 0.97
# (median 0.65; lowest "客服几点上班" 0.39, "能寄锂电池吗" 0.41, "我的包裹坏了" 0.51). The unrelated
# texts score at most 0.33 ("what's the weather in Paris" -> delay-weather, it shares "weather"),
# 9 of the 20 score 0. So the weakest paraphrase and the strongest non-match are 0.06 apart and
# the threshold 0.35 is between them.
#
# Left out on purpose, because a lexical matcher cannot get them right and they are at least
# arguably ambiguous:
# * "what time is it" / "现在几点了": the only topical word ("time", "几点") is the one of
#   delivery-time / service hours, so they match those (0.82 / 0.40).
# * "my package was damaged": the KB says "package" only in the tracking phrasings ("Where is
#   my package?") and "parcel" in the damage ones; without synonyms it goes to track-parcel.
#   "my parcel arrived broken" is in the list instead.
# * "do you offer insurance" (shares "offer" with "Do you offer cash on delivery?"), "are you open
#   on Sunday" (shares "open" with "open a business account"), "how many days until my parcel
#   arrives" (shares "parcel arrive" with the damage question): wrong entry, no shared meaning.
# ---------------------------------------------------------------------------------------------

EN_PARAPHRASES = [
    ("where is my package now?", "track-parcel"),
    ("how much to ship a parcel", "shipping-cost"),
    ("what's the price of shipping", "shipping-cost"),
    ("my parcel arrived broken", "damaged-parcel"),
    ("can I send lithium batteries?", "prohibited-items"),
    ("I lost my parcel", "lost-parcel"),
    ("change my address", "change-address"),
    ("book a pickup", "schedule-pickup"),
    ("how do I get an invoice for my shipment", "invoice"),
    ("forgot password", "account-password"),
    ("where can I drop off a parcel", "pickup-point"),
    ("customs fees", "customs"),
    ("who pays import duties", "customs"),
    ("do you do cash on delivery", "cash-on-delivery"),
    ("my tracking is stuck", "tracking-not-updating"),
    ("the courier was rude", "complaint-courier"),
    ("how to pack glass", "packaging"),
    ("can I pay with Alipay", "pay-methods"),
    ("when does customer service open", "opening-hours-service"),
    ("can I ship frozen food", "cold-chain"),
    ("I was not home when the courier came", "missed-delivery"),
]

ZH_PARAPHRASES = [
    ("我的包裹坏了", "damaged-parcel"),
    ("包裹破损了", "damaged-parcel"),
    ("能寄锂电池吗", "prohibited-items"),
    ("我的快递到哪里了", "track-parcel"),
    ("运费多少", "shipping-cost"),
    ("包裹丢了怎么办", "lost-parcel"),
    ("快递丢了", "lost-parcel"),
    ("怎么修改地址", "change-address"),
    ("收货地址写错了", "change-address"),
    ("怎么开增值税发票", "invoice"),
    ("忘记密码怎么办", "account-password"),
    ("客服几点上班", "opening-hours-service"),
    ("可以用支付宝付款吗", "pay-methods"),
    ("预约快递员上门取件", "schedule-pickup"),
    ("快递员服务态度太差了", "complaint-courier"),
    ("冷冻食品能寄吗", "cold-chain"),
    ("最近的网点在哪", "pickup-point"),
    ("台风会延误吗", "delay-weather"),
]

UNRELATED = [
    "I want to talk to a human",
    "hello",
    "what's the weather in Paris",
    "asdfgh",
    "thank you very much",
    "tell me a joke",
    "good morning",
    "can you help me",
    "who are you",
    "I need to speak with someone",
    "我想投诉你们的经理",  # a complaint about a manager is for an agent, not the courier FAQ
    "你好",
    "今天天气怎么样",
    "讲个笑话",
    "转人工",
    "你是谁",
    "我叫小明",
    "谢谢",
    "帮我订一张机票",
    "再见",
]


def test_default_min_score() -> None:
    assert DEFAULT_MIN_SCORE == 0.35


def test_kb_loads_both_languages() -> None:
    entries = kb().entries
    assert len(entries) == 60
    assert {e.lang for e in entries} == {"en", "zh"}
    assert len({e.id for e in entries}) == 30
    assert len(kb()) == 60


@pytest.mark.parametrize(("entry_id", "lang", "text"), _phrasings())
def test_every_phrasing_matches_its_own_entry(entry_id: str, lang: str, text: str) -> None:
    m = kb().match(text, min_score=DEFAULT_MIN_SCORE)
    assert m is not None
    assert (m.entry.id, m.entry.lang) == (entry_id, lang)
    assert m.score == 1.0


@pytest.mark.parametrize(("text", "entry_id"), EN_PARAPHRASES)
def test_english_paraphrases(text: str, entry_id: str) -> None:
    m = kb().match(text, min_score=DEFAULT_MIN_SCORE)
    assert m is not None, text
    assert m.entry.id == entry_id
    assert m.entry.lang == "en"
    assert DEFAULT_MIN_SCORE <= m.score <= 1.0


@pytest.mark.parametrize(("text", "entry_id"), ZH_PARAPHRASES)
def test_chinese_paraphrases(text: str, entry_id: str) -> None:
    m = kb().match(text, min_score=DEFAULT_MIN_SCORE)
    assert m is not None, text
    assert m.entry.id == entry_id
    assert m.entry.lang == "zh"
    assert DEFAULT_MIN_SCORE <= m.score <= 1.0


@pytest.mark.parametrize("text", UNRELATED)
def test_unrelated_text_does_not_match(text: str) -> None:
    assert kb().match(text, min_score=DEFAULT_MIN_SCORE) is None


def test_calibration_margin() -> None:
    """The threshold sits between the weakest paraphrase and the strongest unrelated text."""
    pos = [kb().match(t, min_score=0.0) for t, _ in EN_PARAPHRASES + ZH_PARAPHRASES]
    neg = [kb().match(t, min_score=0.0) for t in UNRELATED]
    weakest = min(m.score for m in pos if m is not None)
    strongest = max((m.score for m in neg if m is not None), default=0.0)
    assert strongest < DEFAULT_MIN_SCORE <= weakest


@pytest.mark.parametrize("text", ["", " ", "\n\t  ", "\u3000"])
def test_empty_text_is_none(text: str) -> None:
    assert kb().match(text, min_score=0.0) is None


def test_text_must_be_a_string() -> None:
    with pytest.raises(TypeError):
        kb().match(None, min_score=0.0)  # type: ignore[arg-type]


def test_no_shared_token_never_matches() -> None:
    assert kb().match("asdfgh", min_score=0.0) is None
    assert kb().match("!!! ??? ...", min_score=0.0) is None


def test_min_score_is_respected() -> None:
    text = "能寄锂电池吗"
    m = kb().match(text, min_score=0.0)
    assert m is not None and 0.0 < m.score < 1.0
    assert kb().match(text, min_score=m.score) == m
    assert kb().match(text, min_score=m.score + 1e-6) is None


def test_language_preference_in_kb() -> None:
    # The Chinese VIP question also shares "vip" with the English entry; Chinese wins.
    m = kb().match("VIP会员有什么权益?", min_score=DEFAULT_MIN_SCORE)
    assert m is not None and (m.entry.id, m.entry.lang) == ("vip-program", "zh")
    m = kb().match("how to become a VIP", min_score=DEFAULT_MIN_SCORE)
    assert m is not None and (m.entry.id, m.entry.lang) == ("vip-program", "en")


def _entry(id: str, lang: str, q: str, *alts: str) -> FaqEntry:
    return FaqEntry(id=id, lang=lang, question=q, alternatives=alts, answer=f"answer {id}/{lang}")


def test_language_preference_beats_a_better_score_elsewhere() -> None:
    index = FaqIndex(
        [
            _entry("vip-en", "en", "VIP 会员"),  # an English entry that happens to be all tokens
            _entry("vip-zh", "zh", "VIP会员的专属权益和优惠"),
        ]
    )
    # The English entry contains exactly the question's tokens and scores 1.0, but the question
    # is Chinese and the Chinese entry passes the threshold, so it wins.
    m = index.match("VIP会员", min_score=0.3)
    assert m is not None and m.entry.id == "vip-zh" and m.score < 1.0
    # Above the Chinese entry's score the English one is the fallback.
    m2 = index.match("VIP会员", min_score=m.score + 0.01)
    assert m2 is not None and m2.entry.id == "vip-en" and m2.score == 1.0


def test_other_language_is_a_fallback() -> None:
    index = FaqIndex([_entry("vip", "en", "VIP program benefits"), _entry("x", "zh", "发票")])
    # Detected as Chinese, no Chinese entry passes: the English one is used.
    m = index.match("VIP会员", min_score=0.1)
    assert m is not None and m.entry.id == "vip"
    # Entries whose language is a regional variant count as that language: same score, the
    # first entry would win a tie, but the question is Chinese.
    index = FaqIndex([_entry("a", "en", "发票"), _entry("b", "zh-CN", "发票")])
    m = index.match("发票", min_score=0.1)
    assert m is not None and m.entry.id == "b" and m.score == 1.0


def test_deterministic() -> None:
    texts = [t for t, _ in EN_PARAPHRASES + ZH_PARAPHRASES] + UNRELATED
    first = [kb().match(t, min_score=0.0) for t in texts]
    again = kb.__wrapped__()  # built again, not the cached one
    assert [again.match(t, min_score=0.0) for t in texts] == first
    assert [kb().match(t, min_score=0.0) for t in texts] == first


def test_ties_go_to_the_first_entry() -> None:
    index = FaqIndex([_entry("first", "en", "refund"), _entry("second", "en", "refund")])
    m = index.match("refund", min_score=0.0)
    assert m is not None and m.entry.id == "first"


def test_empty_index() -> None:
    index = FaqIndex([])
    assert index.entries == ()
    assert index.match("how do I track my parcel", min_score=0.0) is None


def test_index_rejects_duplicates_and_non_entries() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        FaqIndex([_entry("a", "en", "x"), _entry("a", "en", "y")])
    with pytest.raises(TypeError):
        FaqIndex(["not an entry"])  # type: ignore[list-item]


def test_match_result_types() -> None:
    m = kb().match("how do I track my parcel", min_score=DEFAULT_MIN_SCORE)
    assert isinstance(m, FaqMatch) and isinstance(m.entry, FaqEntry)
    assert isinstance(m.score, float)
    assert m.entry.answer.startswith("Enter your tracking number")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_match_never_raises(text: str) -> None:
    m = kb().match(text, min_score=0.0)
    assert m is None or 0.0 <= m.score <= 1.0
    m = kb().match(text, min_score=DEFAULT_MIN_SCORE)
    assert m is None or DEFAULT_MIN_SCORE <= m.score <= 1.0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from("包裹快递寄件运费丢了坏破损的吗 parcelvip?")))
def test_match_never_raises_on_kb_like_text(text: str) -> None:
    m = kb().match(text, min_score=0.0)
    assert m is None or 0.0 <= m.score <= 1.0


# ---------------------------------------------------------------------------------------------
# Tokenizing and language detection


def test_english_tokens() -> None:
    assert tokenize("The boxes were damaged!") == ["box", "damag"]
    assert tokenize("damage") == tokenize("damaged") == tokenize("damages") == ["damag"]
    assert tokenize("Shipping") == tokenize("shipped") == tokenize("ships") == ["ship"]
    assert tokenize("batteries") == ["battery"]
    assert tokenize("What's the status?") == ["status"]
    assert tokenize("I can't log in") == ["can", "not", "log"]


def test_chinese_tokens() -> None:
    toks = tokenize("能寄锂电池吗")
    assert "锂电池" in toks and "电池" in toks  # jieba words, search mode
    assert "2:电池" in toks and "2:能寄" in toks  # character bigrams
    assert "1:寄" in toks and "1:吗" not in toks  # characters, particles dropped
    assert tokenize("你好吗") == tokenize("你好")  # stopwords only -> nothing distinctive left
    assert tokenize("的了吗") == []


def test_full_width_and_mixed_text() -> None:
    assert tokenize("ＶＩＰ") == ["vip"]
    toks = tokenize("VIP会员")
    assert "vip" in toks and "会员" in toks


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("How do I track my parcel?", "en"),
        ("如何查询包裹物流?", "zh"),
        ("VIP会员有什么权益?", "zh"),
        ("can I pay with 支付宝", "en"),
        ("", "en"),
        ("12345 ?!", "en"),
        ("快递 DHL", "zh"),
    ],
)
def test_detect_lang(text: str, lang: str) -> None:
    assert detect_lang(text) == lang
    assert FaqIndex.detect_lang(text) == lang


def test_import_is_cheap_and_jieba_quiet() -> None:
    code = (
        "import sys\n"
        "import gateway.faq as faq\n"
        "assert 'jieba' not in sys.modules, 'jieba imported at import time'\n"
        "index = faq.FaqIndex([faq.FaqEntry('a', 'zh', '运费怎么算', (), 'x')])\n"
        "assert index.match('运费多少', min_score=0.2) is not None\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no "Building prefix dict ..." chatter


# ---------------------------------------------------------------------------------------------
# Loading files


def _write(tmp_path: Path, text: str, name: str = "kb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_multilingual_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
- id: hours
  en: {q: "When are you open?", alt: ["opening hours"], a: "8-22 every day."}
  zh: {q: "几点营业?", a: "每天8-22点。"}
  fr:
    q: Quand êtes-vous ouverts ?
    alt: [horaires d'ouverture]
    a: |
      Tous les jours de 8h à 22h.
""",
    )
    index = FaqIndex.load(str(path))
    assert [(e.id, e.lang) for e in index.entries] == [
        ("hours", "en"),
        ("hours", "zh"),
        ("hours", "fr"),
    ]
    en, zh, fr = index.entries
    assert en == FaqEntry(
        "hours", "en", "When are you open?", ("opening hours",), "8-22 every day."
    )
    assert zh.alternatives == ()
    assert fr.answer == "Tous les jours de 8h à 22h."  # block scalar, trailing newline stripped
    m = index.match("horaires d'ouverture", min_score=DEFAULT_MIN_SCORE)
    assert m is not None and m.entry.lang == "fr"


def test_load_flat_form(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
- id: reset-password
  question: How do I reset my password?
  alternatives:
    - forgot password
    - cannot log in
  answer: Use "Forgot password" on the login page.
- id: reset-password
  lang: zh
  question: 怎么重置密码?
  answer: 在登录页点击“忘记密码”。
- id: opening-hours
  question: When are you open?
  answer: Every day 8-22.
""",
    )
    index = FaqIndex.load(path)
    assert [(e.id, e.lang) for e in index.entries] == [
        ("reset-password", "en"),
        ("reset-password", "zh"),
        ("opening-hours", "en"),
    ]
    assert index.entries[0].alternatives == ("forgot password", "cannot log in")
    assert index.entries[2].alternatives == ()
    m = index.match("I forgot my password", min_score=DEFAULT_MIN_SCORE)
    assert m is not None and (m.entry.id, m.entry.lang) == ("reset-password", "en")
    m = index.match("密码怎么重置", min_score=DEFAULT_MIN_SCORE)
    assert m is not None and (m.entry.id, m.entry.lang) == ("reset-password", "zh")


def test_load_mixed_forms_and_empty_list(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
- {id: a, question: first question, answer: one}
- id: b
  en: {q: second question, a: two}
""",
    )
    assert [e.id for e in FaqIndex.load(path).entries] == ["a", "b"]
    assert FaqIndex.load(_write(tmp_path, "[]\n", "empty.yaml")).entries == ()


def test_error_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(FaqError, match="not found") as exc:
        FaqIndex.load(path)
    assert str(path) in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_error_directory(tmp_path: Path) -> None:
    with pytest.raises(FaqError, match="cannot read"):
        FaqIndex.load(tmp_path)


def test_error_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "- id: a\n"
        "  en: {q: x, a: y}\n"
        "- id: b\n"
        "  en: {q: x, a: y\n"  # unclosed flow mapping, noticed at the next entry
        "- id: c\n",
    )
    with pytest.raises(FaqError) as exc:
        FaqIndex.load(path)
    msg = str(exc.value)
    assert str(path) in msg and "invalid YAML" in msg and "line 5" in msg


def test_error_invalid_yaml_tab(tmp_path: Path) -> None:
    path = _write(tmp_path, "- id: a\n\tquestion: x\n")
    with pytest.raises(FaqError, match=r"invalid YAML at line 2\b"):
        FaqIndex.load(path)


def test_error_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("- {id: a, question: caf\xe9, answer: x}\n".encode("latin-1"))
    with pytest.raises(FaqError, match="UTF-8"):
        FaqIndex.load(path)


def test_error_entry_without_answer_nested(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "- id: a\n"
        "  en: {q: x, a: y}\n"
        "- id: no-answer\n"
        "  en: {q: x, alt: [z]}\n",
    )
    with pytest.raises(FaqError) as exc:
        FaqIndex.load(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert "entry[1]" in msg and "'no-answer'" in msg and "line 3" in msg
    assert "language 'en'" in msg and "answer" in msg


def test_error_entry_without_answer_flat(tmp_path: Path) -> None:
    path = _write(tmp_path, "- id: lonely\n  question: Is anybody there?\n")
    with pytest.raises(FaqError, match=r"entry\[0\] \(id 'lonely', line 1\): 'answer'"):
        FaqIndex.load(path)


def test_error_entry_without_question(tmp_path: Path) -> None:
    path = _write(tmp_path, "- id: a\n  zh: {a: 答案}\n")
    with pytest.raises(FaqError, match=r"entry\[0\].*language 'zh'.*question"):
        FaqIndex.load(path)


def test_error_top_level_not_a_list(tmp_path: Path) -> None:
    path = _write(tmp_path, "id: a\nquestion: x\nanswer: y\n")
    with pytest.raises(FaqError, match="top level must be a list") as exc:
        FaqIndex.load(path)
    assert str(path) in str(exc.value)
    with pytest.raises(FaqError, match="empty document"):
        FaqIndex.load(_write(tmp_path, "# nothing here\n", "blank.yaml"))
    with pytest.raises(FaqError, match="top level must be a list"):
        FaqIndex.load(_write(tmp_path, "just a string\n", "scalar.yaml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- {question: x, answer: y}\n", r"entry\[0\] \(line 1\): 'id' must be a non-empty string"),
        ("- {id: 7, question: x, answer: y}\n", r"'id' must be a non-empty string \(got int 7\)"),
        ("- just text\n", r"entry\[0\] \(line 1\): an entry must be a mapping"),
        ("- id: a\n", r"entry\[0\] \(id 'a', line 1\): no question"),
        ("- {id: a, question: x, answer: y, alternatives: z}\n", "'alternatives' must be a list"),
        ("- {id: a, question: x, answer: y, alternatives: [z, 3]}\n", r"alternatives'\[1\]"),
        ("- {id: a, question: x, answer: y, tags: [z]}\n", "unknown key.*tags"),
        ("- id: a\n  en: {q: x, a: y, alts: [z]}\n", "language 'en': unknown key.*alts"),
        ("- id: a\n  en: [q, a]\n", "language 'en': must be a mapping"),
        ("- id: a\n  no: {q: x, a: y}\n", "language key False must be a string.*quote"),
        ("- {id: a, question: '  ', answer: y}\n", "'question' must be a non-empty string"),
        (
            "- {id: a, question: x, answer: y}\n- {id: a, question: z, answer: w}\n",
            r"entry\[1\] \(id 'a', line 2\): duplicate id 'a' for language 'en'"
            r" \(first at entry\[0\]\)",
        ),
    ],
)
def test_error_bad_entries(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(FaqError, match=expected) as exc:
        FaqIndex.load(path)
    assert str(exc.value).startswith(f"{path}: ")


def test_faq_entry_alternatives_become_a_tuple() -> None:
    e = FaqEntry("a", "en", "q", ["x", "y"], "a")  # type: ignore[arg-type]
    assert e.alternatives == ("x", "y")
    assert e.phrasings == ("q", "x", "y")
    hash(e)


def test_out_of_scope_messages_are_kept_per_language_and_are_not_entries(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "- id: a\n"
        "  en: {q: first question, a: one}\n"
        "- out_of_scope:\n"
        "    en: [tell me a joke, what's the weather]\n"
        "    zh: [讲个笑话]\n"
        "- out_of_scope: {en: [who are you]}\n"
        "- id: b\n"
        "  en: {q: second question, a: two}\n"
        "  zh: {q: 第二个问题, a: 二}\n",
    )
    index = FaqIndex.load(path)
    assert [e.id for e in index.entries] == ["a", "b", "b"]
    assert index.out_of_scope == {"en": ("tell me a joke", "what's the weather", "who are you"), "zh": ("讲个笑话",)}
    assert index.rank("tell me a joke") == []  # never matched: not an entry
    assert FaqIndex.load(_write(tmp_path, "- {id: a, question: q, answer: a}\n", "plain.yaml")).out_of_scope == {}


@pytest.mark.parametrize(("item", "message"), [
    ("- {id: x, out_of_scope: {en: [hi]}}\n", r"entry\[1\] \(id 'x', line 2\): out_of_scope is an item of its own"),
    ("- out_of_scope: [hi, hello]\n", r"entry\[1\] \(line 2\): out_of_scope must map languages to lists"),
    ("- out_of_scope: {en: hi}\n", r"out_of_scope.en must be a list of strings, got str"),
    ("- out_of_scope: {en: null}\n", r"out_of_scope.en must be a list of strings, got null"),
    ("- out_of_scope: {en: [hi, '']}\n", r"out_of_scope.en\[1\] \(line 2\) must be a non-empty string"),
    ("- out_of_scope:\n    en:\n      - hi\n      - 42\n", r"out_of_scope.en\[1\] \(line 5\) must be a non-empty string \(got int 42\)"),
    # A language no entry has: its messages would never be compared (a typo such as "english").
    ("- out_of_scope: {english: [hi]}\n", r"entry\[1\] \(line 2\): out_of_scope language 'english' has no entries"
                                          r" in this KB \(its languages: en\)"),
])
def test_error_bad_out_of_scope(tmp_path: Path, item: str, message: str) -> None:
    path = _write(tmp_path, "- {id: a, question: q, answer: a}\n" + item)
    with pytest.raises(FaqError, match=message):
        FaqIndex.load(path)


def test_a_yaml_error_in_a_kb_says_what_is_probably_wrong(tmp_path: Path) -> None:
    path = _write(tmp_path, "- id: a\n  en: {q: first, a: one}\n- id: b\n  en: {q: second, a: two\n")
    with pytest.raises(FaqError, match=r"invalid YAML at line 5.*\(probably the \[ \] or \{ \} list opened on line 4 is not closed"):
        FaqIndex.load(path)


def test_the_shipped_kb_lists_out_of_scope_messages_in_both_languages() -> None:
    index = FaqIndex.load(SHIPPING_KB)
    assert set(index.out_of_scope) == {"en", "zh"} and all(len(v) >= 50 for v in index.out_of_scope.values())
    phrasings = {p.casefold() for e in index.entries for p in e.phrasings}
    assert not phrasings & {t.casefold() for v in index.out_of_scope.values() for t in v}
