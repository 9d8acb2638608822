"""``contactgate faq-eval``: how well a matcher answers a set of questions, per language, and
per-language thresholds picked for a target wrong-answer rate (``--calibrate``).

The three figures the self-service promise is about, per language of the question:

* **answered-correct**: in-KB questions answered with their entry, of all in-KB questions;
* **wrong**: questions answered with another entry, or out-of-KB questions answered at all, of
  all questions (a wrong answer costs trust whichever way it happens);
* **out-of-KB handed off**: out-of-KB questions not answered, of all out-of-KB questions.

Calibration, per language: the lowest threshold whose wrong rate on the questions is at most
the target (so the most answered), set halfway between the score it admits and the next lower
score. The questions are split into k folds (seeded shuffle); for each fold a threshold is picked
on the other folds and scored on the fold itself, which estimates how the procedure does on
questions it has not seen. The threshold written is the higher of the one picked on all
questions and the median of the fold thresholds, so one lucky split cannot lower it.

Questions file (YAML list): ``{text: ..., lang: en|zh|..., expect: <entry id> | null}``.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ..faq import FaqMatch
from .matcher import Matcher, Thresholds, choose

__all__ = [
    "CalibrationError",
    "Calibration",
    "LangReport",
    "Question",
    "calibrate",
    "evaluate",
    "load_calibration",
    "load_questions",
    "render",
    "write_calibration",
]

CALIBRATION_FORMAT = 1
SUGGESTIONS = 3  # choices a "did you mean" would offer: reported as top-3 recall


class CalibrationError(ValueError):
    """A questions or calibration file that cannot be used; the message names the file."""


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    lang: str
    expect: str | None  # the entry id that answers it, None for out-of-KB


@dataclass(frozen=True, slots=True)
class Outcome:
    question: Question
    ranked: tuple[FaqMatch, ...]  # top candidates, best first

    @property
    def top(self) -> FaqMatch | None:
        return self.ranked[0] if self.ranked else None

    def answer(self, threshold: float) -> FaqMatch | None:
        return choose(self.ranked, threshold)


@dataclass(slots=True)
class LangReport:
    lang: str
    threshold: float
    questions: int = 0
    in_kb: int = 0
    out_of_kb: int = 0
    correct: int = 0  # in-KB answered with the expected entry
    wrong: int = 0  # answered with another entry, or out-of-KB answered
    handed_off: int = 0  # out-of-KB not answered
    in_top3: int = 0  # in-KB not answered whose entry is among the top 3 (a "did you mean")
    unanswered_in_kb: int = 0
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)  # (expected, answered)

    def add(self, o: Outcome) -> None:
        q, m = o.question, o.answer(self.threshold)
        self.questions += 1
        if q.expect is None:
            self.out_of_kb += 1
            if m is None:
                self.handed_off += 1
            else:
                self.wrong += 1
                self.confusions[("(out of KB)", m.entry.id)] += 1
            return
        self.in_kb += 1
        if m is None:
            self.unanswered_in_kb += 1
            if q.expect in {c.entry.id for c in o.ranked[:SUGGESTIONS]}:
                self.in_top3 += 1
        elif m.entry.id == q.expect:
            self.correct += 1
        else:
            self.wrong += 1
            self.confusions[(q.expect, m.entry.id)] += 1

    @property
    def correct_rate(self) -> float:
        return self.correct / self.in_kb if self.in_kb else 0.0

    @property
    def wrong_rate(self) -> float:
        return self.wrong / self.questions if self.questions else 0.0

    @property
    def handoff_rate(self) -> float:
        return self.handed_off / self.out_of_kb if self.out_of_kb else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "questions": self.questions, "in_kb": self.in_kb,
            "out_of_kb": self.out_of_kb, "correct": self.correct, "wrong": self.wrong,
            "handed_off": self.handed_off, "correct_rate": round(self.correct_rate, 4),
            "wrong_rate": round(self.wrong_rate, 4), "handoff_rate": round(self.handoff_rate, 4),
        }


# ---------------------------------------------------------------------------------------------
# Questions


def load_questions(path: Path) -> list[Question]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationError(f"{path}: cannot read questions: {exc}") from None
    if not isinstance(data, list) or not data:
        raise CalibrationError(f"{path}: expected a non-empty list of {{text, lang, expect}}")
    out = []
    for n, item in enumerate(data):
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            raise CalibrationError(f"{path}: question[{n}]: needs a non-empty 'text'")
        lang, expect = item.get("lang"), item.get("expect")
        if not isinstance(lang, str) or not lang:
            raise CalibrationError(f"{path}: question[{n}] ({item['text']!r}): needs 'lang'")
        if expect is not None and not isinstance(expect, str):
            raise CalibrationError(f"{path}: question[{n}]: 'expect' must be an entry id or null")
        unknown = set(item) - {"text", "lang", "expect"}
        if unknown:
            raise CalibrationError(f"{path}: question[{n}]: unknown key(s) {', '.join(sorted(unknown))}")
        out.append(Question(item["text"], lang, expect))
    return out


def outcomes(matcher: Matcher, questions: Iterable[Question]) -> list[Outcome]:
    """Each question ranked once; thresholds are applied afterwards, so calibration re-uses
    these. The ranking keeps every candidate in the question's language ahead of the others,
    as :func:`choose` needs."""
    return [Outcome(q, tuple(matcher.rank(q.text))) for q in questions]


def check_ids(matcher: Matcher, questions: Iterable[Question], source: str) -> None:
    ids = {e.id for e in matcher.entries}
    missing = sorted({q.expect for q in questions if q.expect is not None and q.expect not in ids})
    if missing:
        raise CalibrationError(f"{source}: expected entries not in the KB: {', '.join(missing)}")


# ---------------------------------------------------------------------------------------------
# Evaluation


def evaluate(results: Sequence[Outcome], thresholds: Thresholds) -> dict[str, LangReport]:
    """Per language of the questions (their ``lang`` label); each question's threshold is the
    one for its detected language, as in the gateway."""
    reports: dict[str, LangReport] = {}
    for o in results:
        lang = o.question.lang
        if lang not in reports:
            reports[lang] = LangReport(lang, thresholds.by_lang.get(lang, thresholds.default))
        rep = reports[lang]
        saved = rep.threshold
        rep.threshold = thresholds.for_text(o.question.text)
        rep.add(o)
        rep.threshold = saved
    return dict(sorted(reports.items()))


def _pick(results: Sequence[Outcome], target: float) -> float:
    """The lowest threshold whose wrong rate over ``results`` is at most ``target``, halfway
    between the lowest top score it admits and the next lower one (above 1 to answer nothing)."""
    n = len(results)
    if n == 0:
        return 1.0
    budget = target * n
    # Every threshold between two neighbouring top scores answers the same questions, so only
    # the top scores themselves are candidates; go down from the highest while the budget holds.
    scored = sorted(((o.top.score, o) for o in results if o.top is not None), key=lambda t: -t[0])
    chosen: float | None = None  # lowest admitted score so far
    i = 0
    while i < len(scored):
        s = scored[i][0]
        j = i
        while j < len(scored) and scored[j][0] == s:
            j += 1
        wrong = sum(1 for o in results if _is_wrong(o, s))
        if wrong > budget:
            break
        chosen = s
        i = j
    if chosen is None:  # even the surest answers are too often wrong: answer nothing
        return round(scored[0][0], 4) + 0.0001
    lower = scored[i][0] if i < len(scored) else 0.0
    return round((chosen + lower) / 2, 4)


def _is_wrong(o: Outcome, threshold: float) -> bool:
    m = o.answer(threshold)
    return m is not None and m.entry.id != o.question.expect


@dataclass(slots=True)
class Calibration:
    matcher: str
    version: str
    target_wrong: float
    folds: int
    seed: int
    thresholds: dict[str, float]
    fold_thresholds: dict[str, list[float]]
    cross_validated: dict[str, LangReport]  # each fold scored with the threshold of the others
    fitted: dict[str, LangReport]  # all questions at the written thresholds


def calibrate(results: Sequence[Outcome], *, matcher: Matcher, target_wrong: float = 0.03,
              folds: int = 5, seed: int = 14) -> Calibration:
    by_lang: dict[str, list[Outcome]] = {}
    for o in results:
        by_lang.setdefault(o.question.lang, []).append(o)
    thresholds: dict[str, float] = {}
    fold_thresholds: dict[str, list[float]] = {}
    cv: dict[str, LangReport] = {}
    for lang, items in sorted(by_lang.items()):
        shuffled = list(items)
        random.Random(f"{seed}:{lang}").shuffle(shuffled)
        k = max(2, min(folds, len(shuffled)))
        parts = [shuffled[f::k] for f in range(k)]
        report = LangReport(lang, threshold=float("nan"))
        picked = []
        for f in range(k):
            train = [o for g, part in enumerate(parts) if g != f for o in part]
            t = _pick(train, target_wrong)
            picked.append(t)
            report.threshold = t
            for o in parts[f]:
                report.add(o)
        report.threshold = statistics.median(picked)
        cv[lang] = report
        fold_thresholds[lang] = picked
        thresholds[lang] = max(_pick(items, target_wrong), statistics.median(picked))
    fitted = evaluate(results, Thresholds(default=1.0, by_lang=thresholds))
    return Calibration(matcher.name, matcher.version, target_wrong, folds, seed, thresholds,
                       fold_thresholds, cv, fitted)


# ---------------------------------------------------------------------------------------------
# Calibration files


def kb_digest(matcher: Matcher) -> str:
    h = hashlib.sha256()
    for e in matcher.entries:
        h.update(repr((e.id, e.lang, e.phrasings)).encode())
    return h.hexdigest()[:16]


def write_calibration(path: Path, cal: Calibration, *, matcher: Matcher, kb: Path, questions: Path) -> None:
    doc = {
        "format": CALIBRATION_FORMAT,
        "matcher": cal.matcher,
        "version": cal.version,
        "thresholds": cal.thresholds,
        "target_wrong": cal.target_wrong,
        "made": {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "kb": str(kb), "kb_digest": kb_digest(matcher), "questions": str(questions),
            "folds": cal.folds, "seed": cal.seed, "fold_thresholds": cal.fold_thresholds,
        },
        "cross_validated": {lang: r.as_dict() for lang, r in cal.cross_validated.items()},
    }
    header = ("# Written by `contactgate faq-eval --calibrate`; name it in selfservice.calibration.\n"
              "# Valid only for the matcher and version below: re-calibrate after changing either.\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


def load_calibration(path: Path) -> tuple[str, str, dict[str, float]]:
    """``(matcher, version, thresholds per language)`` of a calibration file."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CalibrationError(f"{path}: cannot read calibration: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CALIBRATION_FORMAT:
        raise CalibrationError(f"{path}: not a calibration file of format {CALIBRATION_FORMAT}"
                               " (write one with contactgate faq-eval --calibrate)")
    thresholds = doc.get("thresholds")
    if (not isinstance(thresholds, dict) or not thresholds
            or not all(isinstance(k, str) and isinstance(v, (int, float)) and 0 < v <= 1.0001
                       for k, v in thresholds.items())):
        raise CalibrationError(f"{path}: 'thresholds' must map languages to scores in (0, 1]")
    matcher, version = doc.get("matcher"), doc.get("version")
    if not isinstance(matcher, str) or not isinstance(version, str):
        raise CalibrationError(f"{path}: needs 'matcher' and 'version'")
    return matcher, version, {k: float(v) for k, v in thresholds.items()}


# ---------------------------------------------------------------------------------------------
# Text report


def _pct(a: int, b: int) -> str:
    return f"{a}/{b} ({100 * a / b:.1f}%)" if b else "0/0 (-)"


def render_reports(reports: dict[str, LangReport], title: str) -> list[str]:
    lines = [title]
    for lang, r in reports.items():
        lines.append(
            f"  {lang}: threshold {r.threshold:.4f}  answered-correct {_pct(r.correct, r.in_kb)} of in-KB"
            f"  wrong {_pct(r.wrong, r.questions)} of all"
            f"  out-of-KB handed off {_pct(r.handed_off, r.out_of_kb)}"
            f"  unanswered in-KB with the entry in the top {SUGGESTIONS} {_pct(r.in_top3, r.unanswered_in_kb)}"
        )
    return lines


def render(results: Sequence[Outcome], reports: dict[str, LangReport], *, matcher: Matcher,
           calibration: Calibration | None = None) -> str:
    lines = [f"matcher {matcher.name} ({matcher.version}), {len(results)} questions"]
    if calibration is not None:
        lines += render_reports(
            calibration.cross_validated,
            f"cross-validated ({calibration.folds} folds, target wrong {calibration.target_wrong:.1%}; "
            "each fold at the threshold picked on the others, median shown):")
        for lang, ts in calibration.fold_thresholds.items():
            lines.append(f"  {lang} fold thresholds: {', '.join(f'{t:.4f}' for t in ts)}")
        lines += render_reports(calibration.fitted, "at the calibrated thresholds, all questions:")
    else:
        lines += render_reports(reports, "at the thresholds:")
    wrong = Counter()
    for r in (calibration.fitted if calibration is not None else reports).values():
        wrong.update(r.confusions)
    lines.append("wrong answers (expected -> answered):" + ("" if wrong else " none"))
    for (a, b), n in wrong.most_common():
        lines.append(f"  {n} x {a} -> {b}")
    top1 = Counter((o.question.lang, o.question.expect, o.top.entry.id if o.top else "(nothing)")
                   for o in results
                   if o.question.expect is not None and (o.top is None or o.top.entry.id != o.question.expect))
    lines.append("in-KB questions whose best candidate is another entry, at any score (lang: expected -> best):"
                 + ("" if top1 else " none"))
    for (lang, a, b), n in sorted(top1.items()):
        lines.append(f"  {lang}: {n} x {a} -> {b}")
    return "\n".join(lines)
