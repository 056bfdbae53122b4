"""A learned extension of the tag table to tags it does not list (SkyScript's two-stage classifier).

SkyScript embedded "key value" with a text encoder and trained two classifiers on about 2,000
hand-labelled tags: (I) can the tag be seen from above at all, (II) the coarsest GSD class
(of :data:`~terrascribe.text.osm_tags.GSD_LEVELS`) at which it still can. We train the same two
stages, plus a third (feature or attribute), as scikit-learn logistic regressions on the rows of
our reviewed table, with any text embedding:

- :class:`HashedNgramEmbedder`: hashed character n-grams, no model needed, deterministic;
- :func:`model_embedder`: any terrascribe model's text tower (``encode_texts``).

A fitted classifier is saved as plain JSON (coefficients, never pickles: loading a joblib file
from a stranger runs their code). Typical use::

    table = TagTable.load()
    clf = fit_tag_classifier(table, HashedNgramEmbedder())
    bigger = extend_table(table, [("highway", "busway"), ("amenity", "grit_bin")], clf)
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from terrascribe.text.osm_tags import GSD_LEVELS, TagRule, TagTable, normalise_tag

TextEmbedder = Callable[[Sequence[str]], np.ndarray]
"""Maps N texts to an (N, D) float array."""

FORMAT = "terrascribe-tag-classifier"
FORMAT_VERSION = 1


class TagClassifierError(ValueError):
    """A saved classifier is malformed or does not match the embedding it is used with."""


def tag_text(key: str, value: str) -> str:
    """The text a tag is embedded as: ``roof:shape=half-hipped`` -> ``"roof shape half-hipped"``.

    Key-level rules (``value == "*"``) and glob keys embed as their key words only.
    """
    key, value = normalise_tag(key, value)
    words = key.replace("*", " ").replace(":", " ").replace("_", " ")
    if value != "*":
        words += " " + value.replace("_", " ").replace(";", " ")
    return " ".join(words.split())


# --- embeddings ----------------------------------------------------------------------------------


class HashedNgramEmbedder:
    """A model-free, deterministic text embedding: hashed character 2-4-grams, L2-normalised.

    Good enough to generalise within a key ("highway busway" is near "highway bus guideway") and
    used as the stand-in embedding in tests.
    """

    def __init__(self, n_features: int = 2**12, ngram_range: tuple[int, int] = (2, 4)) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        self.ngram_range = ngram_range
        self._vectorizer = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=ngram_range,
            n_features=n_features,
            alternate_sign=False,
            norm="l2",
        )

    @property
    def name(self) -> str:
        """Identifies the embedding in saved classifiers."""
        lo, hi = self.ngram_range
        return f"hashed-char-ngrams-{lo}-{hi}-{self.n_features}"

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return self._vectorizer.transform(list(texts)).toarray().astype(np.float32)


def model_embedder(bundle: Any, *, cache_dir: str | Path | None = None) -> TextEmbedder:
    """A :data:`TextEmbedder` from a loaded terrascribe model (``models.zoo.load_model``).

    The returned callable has a ``name`` attribute: the model's fingerprint, recorded in saved
    classifiers so they are only reused with the same text tower.
    """
    from terrascribe.models.encode import encode_texts

    def embed(texts: Sequence[str]) -> np.ndarray:
        return encode_texts(bundle, list(texts), cache_dir=cache_dir, progress=False)

    embed.name = f"model:{getattr(bundle, 'name', '?')}:{getattr(bundle, 'fingerprint', '?')}"  # type: ignore[attr-defined]
    return embed


def _embedding_name(embed: TextEmbedder) -> str:
    return str(getattr(embed, "name", getattr(embed, "__name__", type(embed).__name__)))


def _embed(embed: TextEmbedder, texts: Sequence[str]) -> np.ndarray:
    x = np.asarray(embed(list(texts)), dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(texts):
        raise ValueError(f"the embedding returned shape {x.shape} for {len(texts)} texts")
    if not np.isfinite(x).all():
        raise ValueError("the embedding returned non-finite values")
    return x


# --- linear heads --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinearHead:
    """A fitted logistic regression reduced to arrays: ``softmax(x @ coef.T + intercept)``."""

    classes: tuple[str, ...]
    coef: np.ndarray  # (C, D), or (1, D) for two classes as scikit-learn stores them
    intercept: np.ndarray  # (C,) or (1,)

    @classmethod
    def fit(cls, x: np.ndarray, y: Sequence[str], *, c: float, seed: int) -> LinearHead:
        """Fit on embeddings ``x`` and labels ``y`` (a single class gives a constant head)."""
        labels = sorted(set(y))
        if len(labels) == 1:
            return cls((labels[0],), np.zeros((1, x.shape[1])), np.zeros(1))
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
        model.fit(x, np.asarray(y))
        return cls(
            tuple(str(k) for k in model.classes_), model.coef_.copy(), model.intercept_.copy()
        )

    def proba(self, x: np.ndarray) -> np.ndarray:
        """(N, C) class probabilities in :attr:`classes` order."""
        if len(self.classes) == 1:
            return np.ones((x.shape[0], 1))
        logits = x @ self.coef.T + self.intercept
        if len(self.classes) == 2:
            p = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p, p], axis=1)
        logits = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> list[str]:
        """The most probable class per row."""
        return [self.classes[i] for i in self.proba(x).argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], dim: int) -> LinearHead:
        classes = tuple(str(c) for c in data["classes"])
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = np.asarray(data["intercept"], dtype=np.float64)
        rows = 1 if len(classes) <= 2 else len(classes)
        if coef.shape != (rows, dim) or intercept.shape != (rows,):
            raise TagClassifierError(
                f"head for classes {classes} has coef {coef.shape} / intercept "
                f"{intercept.shape}, expected ({rows}, {dim}) / ({rows},)"
            )
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            raise TagClassifierError("head has non-finite coefficients")
        return cls(classes, coef, intercept)


# --- the classifier ------------------------------------------------------------------------------


@dataclass
class _KeyDefaults:
    """What the table's rows of one key agree on, to fill in predicted rules."""

    category: str
    applies_to: tuple[str, ...]
    priority: int


def _key_defaults(table: TagTable) -> dict[str, _KeyDefaults]:
    by_key: dict[str, list[TagRule]] = {}
    for rule in table.rules:
        by_key.setdefault(rule.key, []).append(rule)
    out = {}
    for key, rules in by_key.items():
        visible = [r for r in rules if r.visible] or rules
        category = Counter(r.category for r in rules).most_common(1)[0][0]
        applies = Counter(r.applies_to for r in visible).most_common(1)[0][0]
        priority = int(np.median([r.priority for r in visible]))
        out[key] = _KeyDefaults(category, applies, priority)
    return out


def _humanise(text: str) -> str:
    return " ".join(text.replace("_", " ").replace(":", " ").split())


@dataclass
class TagClassifier:
    """Two-stage tag visibility classifier (+ feature/attribute role) over text embeddings.

    Attributes:
        visibility: Stage I head (classes ``"false"``/``"true"``).
        gsd: Stage II head (classes are GSD levels as strings, e.g. ``"0.6"``).
        role: Feature-or-attribute head.
        embedding_name: Identifies the embedding the heads were fitted on.
        dim: Embedding width.
        table_version: Version of the table it was trained on.
        key_defaults: Category, ``applies_to`` and priority per key, copied from the table.
        embed: The embedding function (not saved; pass it again to :meth:`load`).
    """

    visibility: LinearHead
    gsd: LinearHead
    role: LinearHead
    embedding_name: str
    dim: int
    table_version: str
    key_defaults: dict[str, _KeyDefaults] = field(default_factory=dict)
    embed: TextEmbedder | None = None

    def _x(self, texts: Sequence[str]) -> np.ndarray:
        if self.embed is None:
            raise TagClassifierError("this classifier has no embedding function: pass embed=")
        x = _embed(self.embed, texts)
        if x.shape[1] != self.dim:
            raise TagClassifierError(
                f"embedding width {x.shape[1]} does not match the classifier's {self.dim} "
                f"(fitted on {self.embedding_name!r})"
            )
        return x

    def predict(
        self, tags: Mapping[str, str] | Iterable[tuple[str, str]], *, threshold: float = 0.5
    ) -> list[TagRule]:
        """Predict a rule for each tag (in input order), marked ``source="classifier"``.

        Args:
            tags: A tag mapping or ``(key, value)`` pairs.
            threshold: Probability of stage I above which a tag is called visible.
        """
        pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
        pairs = [normalise_tag(k, v) for k, v in pairs]
        if not pairs:
            return []
        x = self._x([tag_text(k, v) for k, v in pairs])
        visible_index = (
            self.visibility.classes.index("true") if "true" in self.visibility.classes else None
        )
        p_visible = (
            self.visibility.proba(x)[:, visible_index]
            if visible_index is not None
            else np.zeros(len(pairs))
        )
        gsd = self.gsd.predict(x)
        roles = self.role.predict(x)
        rules = []
        for (key, value), pv, g, role in zip(pairs, p_visible, gsd, roles, strict=True):
            rules.append(self._rule(key, value, bool(pv >= threshold), float(g), role))
        return rules

    def _rule(self, key: str, value: str, visible: bool, gsd: float, role: str) -> TagRule:
        defaults = self.key_defaults.get(key)
        phrase = ""
        if visible:
            if value.lower() in ("yes", "true", "*"):
                phrase = _humanise(key)
            elif role == "attribute":
                phrase = f"{_humanise(value)} {_humanise(key.rsplit(':', 1)[-1])}"
            else:
                phrase = _humanise(value)
            visible = bool(phrase)
        return TagRule(
            key=key,
            value=value,
            visible=visible,
            max_gsd_m=gsd if visible else None,
            phrase=phrase,
            category=defaults.category if defaults else _humanise(key.split(":", 1)[0]),
            role=role if role in ("feature", "attribute") else "feature",
            priority=(defaults.priority if defaults else 40) if visible else 0,
            applies_to=defaults.applies_to if defaults else (),
            source="classifier",
        )

    # persistence -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to predict again, as JSON-able data (no pickles)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "embedding": self.embedding_name,
            "dim": self.dim,
            "table_version": self.table_version,
            "heads": {
                "visibility": self.visibility.to_dict(),
                "gsd": self.gsd.to_dict(),
                "role": self.role.to_dict(),
            },
            "key_defaults": {
                k: {
                    "category": d.category,
                    "applies_to": list(d.applies_to),
                    "priority": d.priority,
                }
                for k, d in sorted(self.key_defaults.items())
            },
        }

    def save(self, path: str | Path) -> Path:
        """Write the classifier as JSON (atomically: a temporary file, then a rename)."""
        from terrascribe.shards import atomic_write_text

        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), sort_keys=True))
        return path

    @classmethod
    def load(
        cls, path: str | Path, embed: TextEmbedder | None = None, *, check_embedding: bool = True
    ) -> TagClassifier:
        """Read a classifier saved by :meth:`save`.

        Args:
            path: The JSON file.
            embed: The embedding function to predict with; it must be the one the classifier
                was fitted on (compared by name unless ``check_embedding`` is False).
            check_embedding: Refuse an embedding whose name differs from the saved one.

        Raises:
            TagClassifierError: Not a classifier file, malformed heads, or another embedding.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TagClassifierError(f"{path}: no such classifier file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise TagClassifierError(f"{path}: not a readable JSON classifier ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TagClassifierError(f"{path}: not a terrascribe tag classifier file")
        if data.get("format_version") != FORMAT_VERSION:
            raise TagClassifierError(
                f"{path}: format version {data.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        try:
            dim = int(data["dim"])
            heads = {
                name: LinearHead.from_dict(data["heads"][name], dim)
                for name in ("visibility", "gsd", "role")
            }
            defaults = {
                str(k): _KeyDefaults(str(d["category"]), tuple(d["applies_to"]), int(d["priority"]))
                for k, d in data.get("key_defaults", {}).items()
            }
        except TagClassifierError as exc:
            raise TagClassifierError(f"{path}: {exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise TagClassifierError(f"{path}: malformed classifier ({exc!r})") from None
        for g in heads["gsd"].classes:
            if not any(math.isclose(float(g), level) for level in GSD_LEVELS):
                raise TagClassifierError(f"{path}: GSD class {g} is not one of {GSD_LEVELS}")
        name = str(data.get("embedding", ""))
        if embed is not None and check_embedding and _embedding_name(embed) != name:
            raise TagClassifierError(
                f"{path}: fitted on embedding {name!r}, but given {_embedding_name(embed)!r}"
            )
        return cls(
            visibility=heads["visibility"],
            gsd=heads["gsd"],
            role=heads["role"],
            embedding_name=name,
            dim=dim,
            table_version=str(data.get("table_version", "")),
            key_defaults=defaults,
            embed=embed,
        )


# --- training and evaluation ---------------------------------------------------------------------


def _training_rows(table: TagTable) -> list[TagRule]:
    """Rows to learn from: every rule; ``hide`` rows are invisible tags like any other."""
    return list(table.rules)


def _labels(rules: Sequence[TagRule]) -> tuple[list[str], list[str], list[str]]:
    visible = ["true" if r.visible else "false" for r in rules]
    gsd = [f"{r.max_gsd_m:g}" for r in rules if r.visible]
    role = ["attribute" if r.role == "attribute" else "feature" for r in rules]
    return visible, gsd, role


def _fit_heads(
    rules: Sequence[TagRule], x: np.ndarray, *, c: float, seed: int
) -> tuple[LinearHead, LinearHead, LinearHead]:
    visible, gsd, role = _labels(rules)
    mask = np.array([r.visible for r in rules])
    if not mask.any():
        raise ValueError("the table has no visible tag to learn stage II from")
    return (
        LinearHead.fit(x, visible, c=c, seed=seed),
        LinearHead.fit(x[mask], gsd, c=c, seed=seed),
        LinearHead.fit(x, role, c=c, seed=seed),
    )


def fit_tag_classifier(
    table: TagTable, embed: TextEmbedder, *, c: float = 10.0, seed: int = 0
) -> TagClassifier:
    """Fit the two stages (and the role head) on every row of ``table``.

    Args:
        table: The reviewed tag table (exact rows and key-level rules are all examples).
        embed: Text embedding, e.g. :class:`HashedNgramEmbedder` or :func:`model_embedder`.
        c: Inverse L2 regularisation strength of the logistic regressions.
        seed: Seed for scikit-learn (the lbfgs solver is deterministic anyway).

    Returns:
        The fitted classifier, holding ``embed`` for prediction.
    """
    rules = _training_rows(table)
    x = _embed(embed, [tag_text(r.key, r.value) for r in rules])
    visibility, gsd, role = _fit_heads(rules, x, c=c, seed=seed)
    return TagClassifier(
        visibility=visibility,
        gsd=gsd,
        role=role,
        embedding_name=_embedding_name(embed),
        dim=x.shape[1],
        table_version=table.version,
        key_defaults=_key_defaults(table),
        embed=embed,
    )


def evaluate_tag_classifier(
    table: TagTable,
    embed: TextEmbedder,
    *,
    test_fraction: float = 0.2,
    split: str = "random",
    seed: int = 0,
    c: float = 10.0,
) -> dict[str, Any]:
    """Held-out accuracy of stage I (visible?) and stage II (GSD class) on a split of the table.

    Args:
        split: ``random`` (rows) or ``key`` (whole keys held out: the harder, honest test of
            generalising to keys never seen).
        test_fraction: Share of rows (or keys) held out.

    Returns:
        ``{"stage1_accuracy", "stage1_majority", "stage2_accuracy", "stage2_majority",
        "stage2_within_one_level", "n_train", "n_test", "n_test_visible", "split", "embedding"}``;
        the majority baselines predict the training set's most frequent class.
    """
    rules = _training_rows(table)
    rng = np.random.default_rng(seed)
    if split == "random":
        test = rng.random(len(rules)) < test_fraction
    elif split == "key":
        keys = sorted({r.key for r in rules})
        held = {k for k in keys if rng.random() < test_fraction}
        test = np.array([r.key in held for r in rules])
    else:
        raise ValueError(f"split must be 'random' or 'key', got {split!r}")
    if test.all() or not test.any():
        raise ValueError("the split left no training or no test rows; change test_fraction")
    x = _embed(embed, [tag_text(r.key, r.value) for r in rules])
    train_rules = [r for r, t in zip(rules, test, strict=True) if not t]
    test_rules = [r for r, t in zip(rules, test, strict=True) if t]
    visibility, gsd, _ = _fit_heads(train_rules, x[~test], c=c, seed=seed)
    y1_train, y2_train, _ = _labels(train_rules)
    y1_test, y2_test, _ = _labels(test_rules)
    pred1 = visibility.predict(x[test])
    vis_test = np.array([r.visible for r in test_rules])
    pred2 = gsd.predict(x[test][vis_test]) if vis_test.any() else []
    major1 = Counter(y1_train).most_common(1)[0][0]
    major2 = Counter(y2_train).most_common(1)[0][0]
    levels = [f"{g:g}" for g in GSD_LEVELS]

    def acc(pred: Sequence[str], true: Sequence[str]) -> float:
        return (
            float(np.mean([p == t for p, t in zip(pred, true, strict=True)])) if true else math.nan
        )

    within_one = (
        float(
            np.mean(
                [
                    abs(levels.index(p) - levels.index(t)) <= 1
                    for p, t in zip(pred2, y2_test, strict=True)
                ]
            )
        )
        if y2_test
        else math.nan
    )
    return {
        "split": split,
        "embedding": _embedding_name(embed),
        "n_train": len(train_rules),
        "n_test": len(test_rules),
        "n_test_visible": int(vis_test.sum()),
        "stage1_accuracy": acc(pred1, y1_test),
        "stage1_majority": acc([major1] * len(y1_test), y1_test),
        "stage2_accuracy": acc(pred2, y2_test),
        "stage2_majority": acc([major2] * len(y2_test), y2_test),
        "stage2_within_one_level": within_one,
    }


def extend_table(
    table: TagTable,
    tags: Mapping[str, str] | Iterable[tuple[str, str]],
    classifier: TagClassifier,
    *,
    threshold: float = 0.5,
) -> TagTable:
    """A new table with classifier-predicted rows for the tags ``table`` has no rule for.

    Tags the table already resolves (an exact row or a key-level rule) are left alone: reviewed
    rows always win. Predicted rows carry ``source="classifier"`` and the version gets a
    ``+classifier`` suffix, so a dataset built with them says so.
    """
    pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    unknown = sorted({normalise_tag(k, v) for k, v in pairs if table.lookup(k, v) is None})
    unknown = [(k, v) for k, v in unknown if k and v]
    predicted = classifier.predict(unknown, threshold=threshold)
    return TagTable.from_rules([*table.rules, *predicted], version=f"{table.version}+classifier")
