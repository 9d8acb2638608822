"""The intent classifier: which of a KB's entries a question asks for, learnt from the KB itself.

For each language it is given, a multinomial logistic regression (scikit-learn's
``LogisticRegression``) is fitted on the e5 vectors of that language's phrasings, one class per
entry, plus one class "none of them" learnt from the KB's ``out_of_scope`` messages. A question's
confidence in an entry is ``(1 + p(entry) - p(none)) / 2``, from 0 to 1: high when the
classifier is sure of that entry and sure the question is not one the KB does not answer.

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
    """``entries``: the KB's entry indexes, one per class in order; ``has_none``: a last class
    for the out-of-scope messages. The logits are ``coef @ (q - mean) + intercept``."""

    entries: Any  # int array (classes without "none",)
    coef: Any  # (classes, dim)
    intercept: Any  # (classes,)
    mean: Any  # (dim,): the training vectors' mean, subtracted first
    has_none: bool

    def confidence(self, q: Any) -> Any:
        """Per entry of :attr:`entries`, from 0 to 1."""
        import numpy as np

        logits = self.coef @ (q - self.mean) + self.intercept
        p = np.exp(logits - logits.max())
        p /= p.sum()
        none = p[-1] if self.has_none else 0.0
        return (1.0 + p[: len(self.entries)] - none) / 2.0

    def arrays(self) -> dict[str, Any]:
        """What :meth:`from_arrays` reads back (the entries are the KB's, not the file's)."""
        return {"coef": self.coef, "intercept": self.intercept, "mean": self.mean}

    @classmethod
    def from_arrays(cls, a: dict[str, Any], entries: Sequence[int], *,
                    has_none: bool) -> "IntentClassifier | None":
        """The classifier :meth:`arrays` wrote, over the KB's ``entries`` now (the same
        phrasings may sit at other places of the KB); None when ``a`` is not one for them."""
        import numpy as np

        classes = len(entries) + (1 if has_none else 0)
        try:
            coef, intercept, mean = a["coef"], a["intercept"], a["mean"]
        except KeyError:
            return None
        if coef.ndim != 2 or coef.shape[0] != classes or intercept.shape != (classes,) or mean.shape != coef.shape[1:]:
            return None
        return cls(np.asarray(entries, dtype=np.intp), coef, intercept, mean, has_none)


def intents_key(rows: Sequence[str], labels: Sequence[int], c: float, version: str) -> str:
    """What a fitted classifier depends on: its training rows (their embeddings' cache keys),
    their labels, ``c`` and the code's ``version``."""
    h = hashlib.sha256(f"{version}\0{c!r}".encode())
    for row, label in zip(rows, labels):
        h.update(f"\0{label}:{row}".encode())
    return h.hexdigest()


def fit_intents(vectors: Any, labels: Sequence[int], entries: Sequence[int], *, has_none: bool,
                c: float) -> IntentClassifier | None:
    """Fit on ``vectors`` (one row per phrasing or out-of-scope message) whose ``labels`` index
    ``entries`` (``len(entries)``: the out-of-scope class). None when there is only one class:
    nothing to tell apart. Raises ImportError without scikit-learn."""
    classes = len(entries) + (1 if has_none else 0)
    if classes < 2:
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
            log.warning("intent classifier did not converge", extra={"entries": len(entries), "reason": str(w.message)})
    coef, intercept = model.coef_, model.intercept_
    if classes == 2:  # binary: one row of logits for class 1; softmax([0, z]) is the same
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    return IntentClassifier(np.asarray(entries, dtype=np.intp), coef.astype(np.float32),
                            intercept.astype(np.float32), mean.astype(np.float32), has_none)
