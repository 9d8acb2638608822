"""``contactgate faq-eval --calibrate``: per-language thresholds for a target wrong-answer rate,
and the "did you mean" floor below them; the calibration files the config names.

Calibration, per language: the lowest threshold whose wrong rate on the questions is at most
the target (so the most answered), set halfway between the score it admits and the next lower
score. The questions are split into k folds (seeded shuffle); for each fold a threshold is picked
on the other folds and scored on the fold itself, which estimates how the procedure does on
questions it has not seen. The threshold written is the higher of the one picked on all
questions and the median of the fold thresholds, so one lucky split cannot lower it.

The band's floor, per language, below the threshold: the lowest floor at which the right entry
is among the choices for at least ``choices_hit`` (default 80%) of the in-KB questions offered
choices, and at most ``choices_out`` (default 20%) of the out-of-KB questions are offered
choices (the band counted as a whole, at the lowest candidate score that meets both). It is
cross-validated and written the same way as the threshold (the higher of the two).
"""

from __future__ import annotations

import hashlib
import random
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple, Sequence

import yaml

from .evaluate import SUGGESTIONS, CalibrationError, LangReport, Outcome, evaluate
from .matcher import Matcher, Thresholds

__all__ = ["CHOICES_HIT", "CHOICES_OUT", "Calibration", "CalibrationFile", "calibrate", "load_calibration", "made_for_another_kb",
           "write_calibration"]

CALIBRATION_FORMAT = 1
CHOICES_HIT = 0.8  # the right entry among the choices, of the in-KB questions offered choices
CHOICES_OUT = 0.2  # out-of-KB questions offered choices, of the out-of-KB questions


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


def _pick_floor(results: Sequence[Outcome], threshold: float, hit: float, out: float) -> float:
    """The "did you mean" floor below ``threshold``: the lowest of the candidates' scores (the
    top 3 of each question not answered there) at which at most ``out`` of the out-of-KB
    questions are offered choices and the right entry is among the choices for at least ``hit``
    of the in-KB questions offered choices (the band as a whole, not each score in it); halfway
    down to the next score, like :func:`_pick`. The threshold itself (an empty band) when no
    floor meets both."""
    out_of_kb = sum(1 for o in results if o.question.expect is None)
    below = sorted({m.score for o in results if o.answer(threshold) is None
                    for m in o.ranked[:SUGGESTIONS] if m.score < threshold}, reverse=True)
    chosen: int | None = None
    for i, floor in enumerate(below):
        offered = [(o, c) for o in results if (c := o.choices(threshold, floor))]
        in_kb = [(o, c) for o, c in offered if o.question.expect is not None]
        outs = len(offered) - len(in_kb)
        if outs > out * out_of_kb:
            break  # only grows further down
        hits = sum(1 for o, c in in_kb if o.question.expect in {m.entry.id for m in c})
        if in_kb and hits >= hit * len(in_kb):
            chosen = i
    if chosen is None:
        return threshold
    lower = below[chosen + 1] if chosen + 1 < len(below) else 0.0
    return round((below[chosen] + lower) / 2, 4)


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
    choices: dict[str, float]  # the "did you mean" floor per language
    fold_choices: dict[str, list[float]]
    cross_validated: dict[str, LangReport]  # each fold scored with the threshold of the others
    fitted: dict[str, LangReport]  # all questions at the written thresholds
    choices_hit: float = CHOICES_HIT
    choices_out: float = CHOICES_OUT


def calibrate(results: Sequence[Outcome], *, matcher: Matcher, target_wrong: float = 0.03,
              folds: int = 5, seed: int = 14, choices_hit: float = CHOICES_HIT,
              choices_out: float = CHOICES_OUT) -> Calibration:
    by_lang: dict[str, list[Outcome]] = {}
    for o in results:
        by_lang.setdefault(o.question.lang, []).append(o)
    thresholds: dict[str, float] = {}
    fold_thresholds: dict[str, list[float]] = {}
    choices: dict[str, float] = {}
    fold_choices: dict[str, list[float]] = {}
    cv: dict[str, LangReport] = {}
    for lang, items in sorted(by_lang.items()):
        shuffled = list(items)
        random.Random(f"{seed}:{lang}").shuffle(shuffled)
        k = max(2, min(folds, len(shuffled)))
        parts = [shuffled[f::k] for f in range(k)]
        report = LangReport(lang, threshold=float("nan"))
        picked, floors = [], []
        for f in range(k):
            train = [o for g, part in enumerate(parts) if g != f for o in part]
            t = _pick(train, target_wrong)
            picked.append(t)
            floors.append(_pick_floor(train, t, choices_hit, choices_out))
            report.threshold, report.choices_floor = t, floors[-1]
            for o in parts[f]:
                report.add(o)
        report.threshold = statistics.median(picked)
        report.choices_floor = statistics.median(floors)
        cv[lang] = report
        fold_thresholds[lang], fold_choices[lang] = picked, floors
        thresholds[lang] = max(_pick(items, target_wrong), statistics.median(picked))
        choices[lang] = min(thresholds[lang], max(
            _pick_floor(items, thresholds[lang], choices_hit, choices_out), statistics.median(floors)))
    fitted = evaluate(results, Thresholds(default=1.0, by_lang=thresholds, choices_by_lang=choices))
    return Calibration(matcher.name, matcher.version, target_wrong, folds, seed, thresholds,
                       fold_thresholds, choices, fold_choices, cv, fitted, choices_hit, choices_out)


# ---------------------------------------------------------------------------------------------
# Calibration files


def kb_digest(matcher: Matcher) -> str:
    h = hashlib.sha256()
    for e in matcher.entries:
        h.update(repr((e.id, e.lang, e.phrasings)).encode())
    index = getattr(matcher, "index", None)  # the KB's out_of_scope messages change scores too
    for lang, texts in sorted(getattr(index, "out_of_scope", {}).items()):
        h.update(repr(("out_of_scope", lang, texts)).encode())
    return h.hexdigest()[:16]


def write_calibration(path: Path, cal: Calibration, *, matcher: Matcher, kb: Path, questions: Path) -> None:
    doc = {
        "format": CALIBRATION_FORMAT,
        "matcher": cal.matcher,
        "version": cal.version,
        "thresholds": cal.thresholds,
        "target_wrong": cal.target_wrong,
        "choices": cal.choices,
        "choices_target": {"hit": cal.choices_hit, "out_of_kb": cal.choices_out},
        "made": {
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "kb": str(kb), "kb_digest": kb_digest(matcher), "questions": str(questions),
            "folds": cal.folds, "seed": cal.seed, "fold_thresholds": cal.fold_thresholds,
            "fold_choices": cal.fold_choices,
        },
        "cross_validated": {lang: r.as_dict() for lang, r in cal.cross_validated.items()},
    }
    header = ("# Written by `contactgate faq-eval --calibrate`; name it in selfservice.calibration.\n"
              "# Valid only for the matcher and version below: re-calibrate after changing either.\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    tmp.replace(path)


class CalibrationFile(NamedTuple):
    matcher: str
    version: str
    thresholds: dict[str, float]  # the answer's, per language
    choices: dict[str, float]  # the "did you mean" floor per language (empty in older files)
    kb_digest: str | None = None  # kb_digest() of the KB it was made on (None in older files)


def load_calibration(path: Path) -> CalibrationFile:
    """What a calibration file says (:class:`CalibrationFile`)."""
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
    choices = doc.get("choices", {})
    if (not isinstance(choices, dict)
            or not all(isinstance(k, str) and isinstance(v, (int, float)) and 0 < v <= 1.0001
                       for k, v in choices.items())):
        raise CalibrationError(f"{path}: 'choices' must map languages to scores in (0, 1]")
    made = doc.get("made")
    digest = made.get("kb_digest") if isinstance(made, dict) else None
    return CalibrationFile(matcher, version, {k: float(v) for k, v in thresholds.items()},
                           {k: float(v) for k, v in choices.items()}, digest if isinstance(digest, str) else None)


def made_for_another_kb(calibration: CalibrationFile, matcher: Matcher) -> bool:
    """The KB's phrasings or out-of-scope messages changed since the file was made (an approved
    proposal, an edit): its thresholds still apply, but scores moved; re-calibrate."""
    return calibration.kb_digest is not None and calibration.kb_digest != kb_digest(matcher)
