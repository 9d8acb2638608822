"""``contactgate faq-eval KB QUESTIONS.yaml``: the command line of ``evaluate.py``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import ConfigError, SelfServiceConfig, load_config
from ..faq import FaqError
from . import build_matcher
from .calibration import CHOICES_HIT, CHOICES_OUT, calibrate, load_calibration, made_for_another_kb, write_calibration
from .evaluate import CalibrationError, check_ids, evaluate, load_questions, outcomes, render
from .matcher import Thresholds

EXIT_USAGE = 2


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = commands.add_parser(
        "faq-eval", help="measure FAQ matching on a set of questions; --calibrate picks thresholds",
        description="Answered-correct, wrong and out-of-KB handed off, per language, and the "
                    "confusion pairs. See docs/selfservice.md.")
    p.add_argument("kb", help="the FAQ knowledge base (YAML)")
    p.add_argument("questions", help="questions: a YAML list of {text, lang, expect: entry id or null}")
    p.add_argument("--matcher", choices=["lexical", "semantic"], help="default: the config's, else lexical")
    p.add_argument("--config", help="take the matcher's options (synonyms, typo_tolerance, semantic) "
                                    "and thresholds from this config.yaml's selfservice section")
    # One or the other (docs/selfservice.md): given both, one would be silently ignored.
    at = p.add_mutually_exclusive_group()
    at.add_argument("--min-score", type=float, help="one threshold for every language (default: the config's)")
    at.add_argument("--thresholds", metavar="CALIBRATION.yaml", help="evaluate at a calibration file's thresholds")
    p.add_argument("--calibrate", action="store_true", help="pick per-language thresholds and write them")
    p.add_argument("--target-wrong", type=float, default=0.03,
                   help="with --calibrate: wrong answers allowed, of all questions per language (default 0.03)")
    p.add_argument("--folds", type=int, default=5, help="with --calibrate: cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=14, help="with --calibrate: the folds' shuffle (default 14)")
    p.add_argument("--choices-hit", type=float, default=CHOICES_HIT,
                   help="with --calibrate: the did-you-mean floor keeps the right entry among the choices "
                        f"for at least this share of the in-KB questions offered choices (default {CHOICES_HIT})")
    p.add_argument("--choices-out", type=float, default=CHOICES_OUT,
                   help="with --calibrate: and offers choices to at most this share of the out-of-KB "
                        f"questions (default {CHOICES_OUT})")
    p.add_argument("-o", "--output", help="with --calibrate: the file to write "
                                          "(default: KB's name with .<matcher>.calibration.yaml)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(args: argparse.Namespace) -> int:
    kb, qpath = Path(args.kb), Path(args.questions)
    try:
        ss = load_config(Path(args.config)).selfservice if args.config else SelfServiceConfig()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    update: dict = {"faq": kb}
    if args.matcher:
        update["matcher"] = args.matcher
    ss = ss.model_copy(update=update)
    try:
        matcher = build_matcher(ss, quiet=True)
        if ss.matcher != matcher.name:
            print(f"the {ss.matcher} matcher is not installed (pip install 'contactgate[semantic]')",
                  file=sys.stderr)
            return EXIT_USAGE
        questions = load_questions(qpath)
        check_ids(matcher, questions, str(qpath))
        by_lang = dict(ss.thresholds)
        choices = dict(ss.choices_thresholds)
        if args.thresholds:
            made = load_calibration(Path(args.thresholds))
            if (made.matcher, made.version) != (matcher.name, matcher.version):
                print(f"{args.thresholds}: calibrated for {made.matcher} {made.version}, not for {matcher.name}"
                      f" {matcher.version}", file=sys.stderr)
                return EXIT_USAGE
            if made_for_another_kb(made, matcher):
                print(f"{args.thresholds}: calibrated on another version of {kb} (its phrasings or"
                      " out-of-scope messages changed): re-calibrate", file=sys.stderr)
            by_lang, choices = made.thresholds, made.choices
    except (FaqError, CalibrationError) as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_USAGE
    default = args.min_score if args.min_score is not None else ss.min_score
    if args.min_score is not None and not args.thresholds:
        by_lang = {}
    results = outcomes(matcher, questions)
    thresholds = Thresholds(default, by_lang, ss.choices_min_score, choices)
    reports = evaluate(results, thresholds)
    cal = None
    if args.calibrate:
        if (not 0 <= args.target_wrong < 1 or args.folds < 2 or not 0 <= args.choices_hit <= 1
                or not 0 <= args.choices_out <= 1):
            print("--target-wrong must be in [0, 1), --folds at least 2, --choices-hit and"
                  " --choices-out in [0, 1]", file=sys.stderr)
            return EXIT_USAGE
        cal = calibrate(results, matcher=matcher, target_wrong=args.target_wrong, folds=args.folds,
                        seed=args.seed, choices_hit=args.choices_hit, choices_out=args.choices_out)
        out = Path(args.output) if args.output else kb.with_name(f"{kb.stem}.{matcher.name}.calibration.yaml")
        write_calibration(out, cal, matcher=matcher, kb=kb, questions=qpath)
    if args.json:
        doc: dict = {"matcher": matcher.name, "version": matcher.version, "questions": len(results),
                     "by_lang": {k: r.as_dict() for k, r in reports.items()}}
        if cal is not None:
            doc["calibrated"] = {
                "thresholds": cal.thresholds, "fold_thresholds": cal.fold_thresholds,
                "choices": cal.choices, "fold_choices": cal.fold_choices,
                "cross_validated": {k: r.as_dict() for k, r in cal.cross_validated.items()},
                "fitted": {k: r.as_dict() for k, r in cal.fitted.items()}, "file": str(out)}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(render(results, reports, matcher=matcher, calibration=cal))
        if cal is not None:
            print(f"wrote {out}: thresholds "
                  + ", ".join(f"{k} {v:.4f}" for k, v in cal.thresholds.items())
                  + "; did you mean from " + ", ".join(f"{k} {v:.4f}" for k, v in cal.choices.items()))
    return 0
