"""``contactgate faq-eval``: how well a matcher answers a set of questions, per language.

The three figures the self-service promise is about, per language of the question:

* **answered-correct**: in-KB questions answered with their entry, of all in-KB questions;
* **wrong**: questions answered with another entry, or out-of-KB questions answered at all, of
  all questions (a wrong answer costs trust whichever way it happens);
* **out-of-KB handed off**: out-of-KB questions not answered, of all out-of-KB questions.

And the "did you mean" band below the answer's threshold (``Thresholds.choices_*``): how many
questions are offered choices (up to 3 candidates scoring at least the band's floor), for how
many in-KB ones of those the right entry is among the choices, and how many out-of-KB questions
are offered choices at all.

Calibration (``--calibrate``) is in ``calibration.py``.

Questions file (YAML list): ``{text: ..., lang: en|zh|..., expect: <entry id> | null}``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..faq import FaqMatch
from .matcher import Matcher, Thresholds, choose

if TYPE_CHECKING:
    from .calibration import Calibration

__all__ = [
    "CalibrationError",
    "LangReport",
    "Outcome",
    "Question",
    "evaluate",
    "load_questions",
    "outcomes",
    "render",
]

SUGGESTIONS = 3  # choices a "did you mean" offers (SelfService's MAX_CHOICES)


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

    def choices(self, threshold: float, floor: float | None) -> tuple[FaqMatch, ...]:
        """What SelfService offers when nothing reaches ``threshold``: the top candidates
        scoring at least ``floor`` (none when answered, or without a band)."""
        if floor is None or self.answer(threshold) is not None:
            return ()
        return tuple(m for m in self.ranked[:SUGGESTIONS] if m.score >= floor)


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
    choices_floor: float | None = None  # the "did you mean" band's floor; None: no band
    offered: int = 0  # questions offered choices
    offered_in_kb: int = 0
    right_in_choices: int = 0  # in-KB offered choices with their entry among them
    offered_out_of_kb: int = 0

    def add(self, o: Outcome) -> None:
        q, m = o.question, o.answer(self.threshold)
        self.questions += 1
        choices = o.choices(self.threshold, self.choices_floor)
        if choices:
            self.offered += 1
            if q.expect is None:
                self.offered_out_of_kb += 1
            else:
                self.offered_in_kb += 1
                self.right_in_choices += q.expect in {c.entry.id for c in choices}
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

    @property
    def offered_rate(self) -> float:
        """The "did you mean" rate: questions offered choices, of all questions."""
        return self.offered / self.questions if self.questions else 0.0

    @property
    def hit_rate(self) -> float:
        """The right entry among the choices, of the in-KB questions offered choices."""
        return self.right_in_choices / self.offered_in_kb if self.offered_in_kb else 1.0

    @property
    def offered_out_rate(self) -> float:
        return self.offered_out_of_kb / self.out_of_kb if self.out_of_kb else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold, "questions": self.questions, "in_kb": self.in_kb,
            "out_of_kb": self.out_of_kb, "correct": self.correct, "wrong": self.wrong,
            "handed_off": self.handed_off, "correct_rate": round(self.correct_rate, 4),
            "wrong_rate": round(self.wrong_rate, 4), "handoff_rate": round(self.handoff_rate, 4),
            "choices_floor": self.choices_floor, "offered": self.offered,
            "offered_in_kb": self.offered_in_kb, "right_in_choices": self.right_in_choices,
            "offered_out_of_kb": self.offered_out_of_kb, "offered_rate": round(self.offered_rate, 4),
            "hit_rate": round(self.hit_rate, 4) if self.offered_in_kb else None,  # none offered: no rate
            "offered_out_rate": round(self.offered_out_rate, 4),
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
            reports[lang] = LangReport(lang, thresholds.by_lang.get(lang, thresholds.default),
                                       choices_floor=thresholds.choices_by_lang.get(lang, thresholds.choices_default))
        rep = reports[lang]
        saved = rep.threshold, rep.choices_floor
        rep.threshold = thresholds.for_text(o.question.text)
        rep.choices_floor = thresholds.choices_for_text(o.question.text)
        rep.add(o)
        rep.threshold, rep.choices_floor = saved
    return dict(sorted(reports.items()))


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
        if r.choices_floor is None:
            lines.append(f"  {lang}: did you mean: no band")
        else:
            lines.append(
                f"  {lang}: did you mean from {r.choices_floor:.4f}: offered {_pct(r.offered, r.questions)} of all"
                f"  right entry among the choices {_pct(r.right_in_choices, r.offered_in_kb)} of in-KB offered"
                f"  out-of-KB offered choices {_pct(r.offered_out_of_kb, r.out_of_kb)}"
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
        for lang, ts in calibration.fold_choices.items():
            lines.append(f"  {lang} fold did-you-mean floors: {', '.join(f'{t:.4f}' for t in ts)}")
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
