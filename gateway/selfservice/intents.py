"""The intent classifier: which of a KB's entries a question asks for, learnt from the KB itself.

A multinomial logistic regression (scikit-learn's ``LogisticRegression``) is fitted on the e5
vectors of the phrasings of every language it is given, one class per entry id (an entry's
English and Chinese phrasings teach the same class: e5 puts a question and its translation close
together, so each language learns from the other's phrasings too), plus one class "none of them"
learnt from the KB's ``out_of_scope`` messages in those languages. A question's confidence in an
entry is ``(1 + p(entry) - p(none)) / 2``, from 0 to 1: high when the classifier is sure of that
entry and sure the question is not one the KB does not answer.

Where the cosine blend asks "how close is the question to this entry's phrasings", the
classifier asks "which entry's phrasings, against all the others', is it like": it learns what
tells entries apart and weighs little what they all share (every entry speaks of parcels). On
the shipping KB it answers more of the dev set at the same wrong rate in both languages, given
about a dozen phrasings per entry; with three, it did worse than the blend
(docs/selfservice.md). Only the training needs scikit-learn; a fitted classifier is numpy
arrays, kept on disk by the semantic matcher (:meth:`IntentClassifier.arrays`).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = ["IntentClassifier", "fit_intents", "intents_key"]

log = logging.getLogger("contactgate")

MAX_ITER = 1000  # lbfgs steps; the shipping KB converges in ~40, 1,500 entries in ~30


@dataclass(frozen=True, slots=True)
class IntentClassifier:
    """``classes``: how many entries (ids) it tells apart; ``has_none``: a last class for the
    out-of-scope messages. The logits are ``coef @ (q - mean) + intercept``."""

    classes: int  # without "none"
    coef: Any  # (classes, dim)
    intercept: Any  # (classes,)
    mean: Any  # (dim,): the training vectors' mean, subtracted first
    has_none: bool

    def confidence(self, q: Any) -> Any:
        """Per class (without "none"), from 0 to 1."""
        import numpy as np

        logits = self.coef @ (q - self.mean) + self.intercept
        p = np.exp(logits - logits.max())
        p /= p.sum()
        none = p[-1] if self.has_none else 0.0
        return (1.0 + p[: self.classes] - none) / 2.0

    def arrays(self) -> dict[str, Any]:
        """What :meth:`from_arrays` reads back (which entry each class is, is the KB's to say)."""
        return {"coef": self.coef, "intercept": self.intercept, "mean": self.mean}

    @classmethod
    def from_arrays(cls, a: dict[str, Any], classes: int, *,
                    has_none: bool) -> "IntentClassifier | None":
        """The classifier :meth:`arrays` wrote, telling ``classes`` entries apart; None when
        ``a`` is not one for them."""
        rows = classes + (1 if has_none else 0)
        try:
            coef, intercept, mean = a["coef"], a["intercept"], a["mean"]
        except KeyError:
            return None
        if coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,) or mean.shape != coef.shape[1:]:
            return None
        return cls(classes, coef, intercept, mean, has_none)


def intents_key(rows: Sequence[str], labels: Sequence[int], c: float, version: str) -> str:
    """What a fitted classifier depends on: its training rows (their embeddings' cache keys),
    their labels, ``c`` and the code's ``version``."""
    h = hashlib.sha256(f"{version}\0{c!r}".encode())
    for row, label in zip(rows, labels):
        h.update(f"\0{label}:{row}".encode())
    return h.hexdigest()


def fit_intents(vectors: Any, labels: Sequence[int], classes: int, *, has_none: bool,
                c: float) -> IntentClassifier | None:
    """Fit on ``vectors`` (one row per phrasing or out-of-scope message) whose ``labels`` are
    from 0 to ``classes - 1`` (``classes``: the out-of-scope class). None when there is only one
    class: nothing to tell apart. Raises ImportError without scikit-learn."""
    if classes + (1 if has_none else 0) < 2:
        return None
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels)
    mean = vectors.mean(axis=0)
    with warnings.catch_warnings(record=True) as caught:
        # A KB with one phrasing per entry has about as many classes as samples, which
        # scikit-learn warns may be a regression problem: it is not.
        warnings.simplefilter("always")
        model = LogisticRegression(C=c, max_iter=MAX_ITER).fit(vectors - mean, y)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            log.warning("intent classifier did not converge", extra={"entries": classes, "reason": str(w.message)})
    coef, intercept = model.coef_, model.intercept_
    if classes + (1 if has_none else 0) == 2:  # binary: one row of logits for class 1; softmax([0, z]) is the same
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return IntentClassifier(classes, coef.astype(np.float32),
                            intercept.astype(np.float32), mean.astype(np.float32), has_none)
