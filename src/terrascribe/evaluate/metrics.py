"""Evaluation metrics: pure functions on numpy arrays that return plain floats and dicts.

Nothing here touches files, models or torch, so the same functions score embeddings computed by
:mod:`terrascribe.evaluate.runner` and embeddings published by others (``--embeddings DIR``).

Conventions shared by every function:

- Embeddings are ``(N, D)`` float arrays; they are L2-normalised here (again), so callers may pass
  raw model outputs. Similarities are cosine similarities computed in float32, like CLIP_benchmark.
- Labels are integer class indices ``0..C-1``.
- Accuracies and recalls are fractions in ``[0, 1]``.
- A query counts as a hit at ``k`` when fewer than ``k`` candidates score strictly higher than its
  best positive (top-k membership; exact ties are broken in the query's favour).
"""

from __future__ import annotations

import atexit
import re
import shutil
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from terrascribe.text.boxes import normalise_class, pluralise

# Chunk size for similarity matrices: rows * columns stays below this many floats (~256 MB).
_MAX_CELLS = 1 << 26


# --------------------------------------------------------------------------------------------
# Helpers


def normalize(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``x`` (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D (N, D) array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


def ensemble_class_embeddings(template_embeddings: np.ndarray) -> np.ndarray:
    """Template ensembling as CLIP does: mean of normalised prompt embeddings, renormalised.

    Args:
        template_embeddings: ``(C, T, D)`` embeddings of ``T`` prompts for each of ``C`` classes.

    Returns:
        ``(C, D)`` float32 class embeddings.
    """
    emb = np.asarray(template_embeddings, dtype=np.float32)
    if emb.ndim != 3:
        raise ValueError(f"template embeddings must be (C, T, D), got shape {emb.shape}")
    norms = np.linalg.norm(emb, axis=2, keepdims=True)
    mean = (emb / np.maximum(norms, np.float32(1e-12))).mean(axis=1)
    return normalize(mean)


def _labels(labels: Any, n: int, n_classes: int | None, what: str = "labels") -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what} must be a 1-D array of length {n}, got shape {arr.shape}")
    if len(arr) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if len(arr) and arr.min() < 0:
        raise ValueError(f"{what} must be >= 0, got {arr.min()}")
    if n_classes is not None and len(arr) and arr.max() >= n_classes:
        raise ValueError(f"{what} go up to {arr.max()} but there are only {n_classes} classes")
    return arr


def _check_dims(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different embedding sizes: {a.shape[1]} vs {b.shape[1]}")


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each row, how many columns score strictly higher than the target column."""
    target_scores = scores[np.arange(len(scores)), targets]
    return (scores > target_scores[:, None]).sum(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: Iterable[int]) -> dict[int, float]:
    """Fraction of rows whose label is among the ``k`` highest scores, for each ``k``."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    ranks = ranks_of_targets(np.asarray(scores), np.asarray(labels))
    return {k: float((ranks < k).mean()) for k in ks}


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """``(C, C)`` int matrix: row = true class, column = predicted class."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def per_class_recall(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for classes absent from ``labels``)."""
    cm = confusion_matrix(labels, predictions, n_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def mean_per_class_recall(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> float:
    """Balanced accuracy: mean recall over the classes present in ``labels``.

    Same definition as scikit-learn's ``balanced_accuracy_score`` (used by CLIP_benchmark).
    """
    recalls = per_class_recall(labels, predictions, n_classes)
    present = recalls[~np.isnan(recalls)]
    return float(present.mean()) if len(present) else float("nan")


def _classification_scores(
    scores: np.ndarray, labels: np.ndarray, n_classes: int, ks: Sequence[int]
) -> dict[str, float]:
    """acc@k (NaN when n_classes < k, as CLIP_benchmark does for acc5) + balanced accuracy."""
    out: dict[str, float] = {}
    acc = topk_accuracy(scores, labels, ks)
    for k in ks:
        out[f"acc{k}"] = acc[k] if n_classes >= k else float("nan")
    predictions = scores.argmax(axis=1)
    out["mean_per_class_recall"] = mean_per_class_recall(labels, predictions, n_classes)
    return out


def classification_details(
    scores: np.ndarray, labels: np.ndarray, n_classes: int
) -> dict[str, Any]:
    """Predictions, per-class recall and confusion matrix as plain lists (for result files)."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(scores).argmax(axis=1)
    recalls = per_class_recall(labels, predictions, n_classes)
    return {
        "per_class_recall": [None if np.isnan(r) else float(r) for r in recalls],
        "confusion_matrix": confusion_matrix(labels, predictions, n_classes).tolist(),
        "support": np.bincount(labels, minlength=n_classes).tolist(),
    }


# --------------------------------------------------------------------------------------------
# Zero-shot classification


def zero_shot_scores(image_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Cosine similarity of each image to each class, ``(N, C)`` float32."""
    images = normalize(image_embeddings)
    classes = normalize(class_embeddings)
    _check_dims(images, classes, "image and class embeddings")
    return images @ classes.T


def zero_shot_classification(
    image_embeddings: np.ndarray, class_embeddings: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """Zero-shot classification: each image takes the class whose embedding is most similar.

    Args:
        image_embeddings: ``(N, D)`` image embeddings.
        class_embeddings: ``(C, D)`` class embeddings (see :func:`ensemble_class_embeddings`).
        labels: ``(N,)`` true class indices.

    Returns:
        ``{"acc1", "acc5", "mean_per_class_recall"}`` as fractions. ``acc5`` is NaN with fewer than
        5 classes, as in CLIP_benchmark (top-5 would trivially be 1).
    """
    scores = zero_shot_scores(image_embeddings, class_embeddings)
    labels = _labels(labels, len(scores), scores.shape[1])
    return _classification_scores(scores, labels, scores.shape[1], (1, 5))


# --------------------------------------------------------------------------------------------
# Retrieval


def deduplicate_captions(
    captions: Sequence[str], text_to_image: Sequence[int]
) -> tuple[list[str], list[list[int]]]:
    """SkyScript's de-duplicated protocol: each distinct caption once, matching all its images.

    RS caption sets repeat sentences (RSICD pads short caption sets by copying), so in the plain
    protocol a text query is scored against one image although several carry the same sentence.
    SkyScript kept each distinct caption once and counted a hit when *any* image that carries it
    is retrieved.

    Returns:
        ``(unique_captions, positives)``: captions in first-seen order and, for each, the sorted
        indices of the images that carry it; pass ``positives`` to :func:`retrieval`.
    """
    if len(captions) != len(text_to_image):
        raise ValueError(f"{len(captions)} captions but {len(text_to_image)} image indices")
    index: dict[str, int] = {}
    positives: list[set[int]] = []
    for caption, image in zip(captions, text_to_image, strict=True):
        i = index.setdefault(caption, len(index))
        if i == len(positives):
            positives.append(set())
        positives[i].add(int(image))
    return list(index), [sorted(p) for p in positives]


def _positive_lists(text_to_image: Any, n_texts: int, n_images: int) -> list[list[int]]:
    arr = None
    try:
        arr = np.asarray(text_to_image)
    except ValueError:  # ragged lists
        arr = None
    if arr is not None and arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        lists = [[int(i)] for i in arr]
    else:
        lists = [sorted({int(i) for i in pos}) for pos in text_to_image]
    if len(lists) != n_texts:
        raise ValueError(f"text_to_image has {len(lists)} entries for {n_texts} texts")
    for t, pos in enumerate(lists):
        if not pos:
            raise ValueError(f"text {t} has no matching image")
        if pos[0] < 0 or pos[-1] >= n_images:
            raise ValueError(f"text {t} points to image {pos[-1]} but there are {n_images} images")
    return lists


def _hit_ranks(queries: np.ndarray, items: np.ndarray, positives: list[list[int]]) -> np.ndarray:
    """Rank of the best positive item for each query (0 = first), in row chunks."""
    ranks = np.empty(len(queries), dtype=np.int64)
    step = max(1, _MAX_CELLS // max(1, len(items)))
    for start in range(0, len(queries), step):
        scores = queries[start : start + step] @ items.T
        rows = np.concatenate(
            [np.full(len(positives[q]), q - start) for q in range(start, start + len(scores))]
        )
        cols = np.concatenate([positives[q] for q in range(start, start + len(scores))])
        mask = np.zeros(scores.shape, dtype=bool)
        mask[rows, cols] = True
        best = np.where(mask, scores, -np.inf).max(axis=1)
        ranks[start : start + len(scores)] = (scores > best[:, None]).sum(axis=1)
    return ranks


def retrieval(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_to_image: Sequence[int] | Sequence[Iterable[int]],
    *,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image-to-text and text-to-image recall@k, with several captions per image.

    A query is a hit at ``k`` when at least one of its positives is among the ``k`` most similar
    candidates (the CLIP / CLIP_benchmark definition).

    Args:
        image_embeddings: ``(I, D)`` image embeddings.
        text_embeddings: ``(T, D)`` caption embeddings.
        text_to_image: For each caption, the index of its image (``(T,)`` ints), or the list of
            indices of all images it matches (see :func:`deduplicate_captions`).
        ks: The ``k`` of recall@k.

    Returns:
        ``i2t_R@k`` (image queries), ``t2i_R@k`` (text queries) for each ``k`` and ``mean_recall``
        (mean of all of them, the "mR" of RS retrieval papers). CLIP_benchmark names them
        ``text_retrieval_recall@k`` and ``image_retrieval_recall@k`` respectively.
    """
    images = normalize(image_embeddings)
    texts = normalize(text_embeddings)
    _check_dims(images, texts, "image and text embeddings")
    t2i = _positive_lists(text_to_image, len(texts), len(images))
    i2t: list[list[int]] = [[] for _ in range(len(images))]
    for t, pos in enumerate(t2i):
        for i in pos:
            i2t[i].append(t)
    orphans = [i for i, pos in enumerate(i2t) if not pos]
    if orphans:
        raise ValueError(f"{len(orphans)} images have no caption (first: image {orphans[0]})")
    text_ranks = _hit_ranks(texts, images, t2i)
    image_ranks = _hit_ranks(images, texts, i2t)
    out: dict[str, float] = {}
    for k in ks:
        out[f"i2t_R@{k}"] = float((image_ranks < k).mean())
    for k in ks:
        out[f"t2i_R@{k}"] = float((text_ranks < k).mean())
    out["mean_recall"] = float(np.mean([out[f"{d}_R@{k}"] for d in ("i2t", "t2i") for k in ks]))
    return out


# --------------------------------------------------------------------------------------------
# Classifiers on frozen embeddings


def _train_test(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    n_classes: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Normalised, checked inputs of a classifier on frozen embeddings, and the class count."""
    x_train = normalize(train_embeddings)
    x_test = normalize(test_embeddings)
    _check_dims(x_train, x_test, "train and test embeddings")
    if n_classes is None:
        n_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    y_train = _labels(train_labels, len(x_train), n_classes, "train labels")
    y_test = _labels(test_labels, len(x_test), n_classes, "test labels")
    return x_train, y_train, x_test, y_test, n_classes


def knn(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Weighted k-NN classification (RemoteCLIP's protocol, after DINO).

    Each test image takes votes from its ``k`` most similar training images, each weighted by
    ``exp(similarity / temperature)``; the class with the largest total wins.

    Returns:
        ``{"acc1", "acc5", "mean_per_class_recall"}``.
    """
    train, y_train, test, y_test, n_classes = _train_test(
        train_embeddings, train_labels, test_embeddings, test_labels, n_classes
    )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    k = min(k, len(train))
    votes = np.zeros((len(test), n_classes), dtype=np.float64)
    step = max(1, _MAX_CELLS // max(1, len(train)))
    for start in range(0, len(test), step):
        sims = test[start : start + step] @ train.T
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(sims, nearest, axis=1).astype(np.float64) / temperature)
        rows = np.repeat(np.arange(len(sims)), k) + start
        np.add.at(votes, (rows, y_train[nearest].ravel()), weights.ravel())
    return _classification_scores(votes, y_test, n_classes, (1, 5))


DEFAULT_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float, max_iter: int, seed: int):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        # Convergence warnings at extreme C are expected in a grid search; the grid decides.
        warnings.simplefilter("ignore")
        return LogisticRegression(C=c, max_iter=max_iter, random_state=seed).fit(x, y)


def _class_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Decision scores for all ``n_classes`` (classes unseen in training get -inf)."""
    scores = np.full((len(x), n_classes), -np.inf)
    decision = model.decision_function(x)
    if decision.ndim == 1:  # binary: sklearn returns the positive class' score only
        decision = np.stack([-decision, decision], axis=1)
    scores[:, model.classes_] = decision
    return scores


def _select_c(
    x: np.ndarray,
    y: np.ndarray,
    splits: list[tuple[np.ndarray, np.ndarray]],
    c_grid: Sequence[float],
    max_iter: int,
    seed: int,
) -> tuple[float, float]:
    """The C with the best mean validation accuracy over ``splits`` (smallest C on ties)."""
    best_c, best_acc = float(c_grid[0]), -1.0
    for c in sorted(c_grid):
        accs = []
        for fit_idx, val_idx in splits:
            model = _fit_logistic(x[fit_idx], y[fit_idx], c, max_iter, seed)
            accs.append(float((model.predict(x[val_idx]) == y[val_idx]).mean()))
        acc = float(np.mean(accs))
        if acc > best_acc + 1e-12:
            best_c, best_acc = float(c), acc
    return best_c, best_acc


def linear_probe(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    *,
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 1000,
    n_classes: int | None = None,
) -> dict[str, float]:
    """Logistic-regression probe on frozen embeddings (scikit-learn, L-BFGS).

    The inverse regularisation strength ``C`` is chosen on a validation split carved (stratified,
    seeded) from the *training* embeddings only; the probe is then refit on all of train with
    that ``C`` and scored once on test. The test set never influences any choice.

    Returns:
        ``{"acc1", "acc5", "mean_per_class_recall", "C", "val_acc1"}``.
    """
    from sklearn.model_selection import train_test_split

    x_train, y_train, x_test, y_test, n_classes = _train_test(
        train_embeddings, train_labels, test_embeddings, test_labels, n_classes
    )
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(np.unique(y_train)) < 2:
        raise ValueError("linear probe needs at least 2 classes in the training split")
    idx = np.arange(len(x_train))
    counts = np.bincount(y_train)
    stratify = y_train if counts[counts > 0].min() >= 2 else None
    fit_idx, val_idx = train_test_split(
        idx, test_size=val_fraction, random_state=seed, stratify=stratify
    )
    best_c, val_acc = _select_c(x_train, y_train, [(fit_idx, val_idx)], c_grid, max_iter, seed)
    model = _fit_logistic(x_train, y_train, best_c, max_iter, seed)
    out = _classification_scores(_class_scores(model, x_test, n_classes), y_test, n_classes, (1, 5))
    out["C"] = best_c
    out["val_acc1"] = val_acc
    return out


def few_shot(
    train_embeddings: np.ndarray,
    train_labels: np.ndarray,
    test_embeddings: np.ndarray,
    test_labels: np.ndarray,
    *,
    shots: Sequence[int] = (1, 4, 8, 16, 32),
    seeds: Sequence[int] = (0, 1, 2),
    c_grid: Sequence[float] = DEFAULT_C_GRID,
    one_shot_c: float = 10.0,
    max_iter: int = 1000,
    n_classes: int | None = None,
) -> dict[str, Any]:
    """Few-shot linear probes: ``k`` training images per class, several seeds, mean ± std.

    For each ``k`` and seed, ``k`` images per class are drawn from train (seeded). ``C`` is chosen
    by stratified cross-validation *inside those k-shot images* (``min(k, 5)`` folds): no image
    outside the support set, and never a test image, influences the choice (CLIP_benchmark's
    few-shot probe once selected it with validation images outside the k shots). With ``k = 1``
    there is nothing to cross-validate, so ``one_shot_c`` is used.

    Returns:
        ``{"shots": {"k": {"acc1_mean", "acc1_std", "acc1_runs", "C"}}, "<k>-shot_acc1": mean,
        "<k>-shot_acc1_std": std}``; a ``k`` larger than the smallest class is reported under
        ``"skipped"``. ``std`` is the sample standard deviation over seeds (0 for one seed).
    """
    from sklearn.model_selection import StratifiedKFold

    x_train, y_train, x_test, y_test, n_classes = _train_test(
        train_embeddings, train_labels, test_embeddings, test_labels, n_classes
    )
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise ValueError("few-shot probe needs at least 2 classes in the training split")
    smallest = int(np.bincount(y_train)[classes].min())
    out: dict[str, Any] = {"shots": {}, "skipped": {}}
    for k in shots:
        if k < 1:
            raise ValueError(f"shots must be >= 1, got {k}")
        if k > smallest:
            out["skipped"][str(k)] = f"smallest training class has {smallest} images"
            continue
        accs, cs = [], []
        for seed in seeds:
            rng = np.random.default_rng([int(seed), int(k)])
            support = np.concatenate(
                [rng.choice(np.flatnonzero(y_train == c), size=k, replace=False) for c in classes]
            )
            xs, ys = x_train[support], y_train[support]
            if k == 1:
                c_best = one_shot_c
            else:
                folds = StratifiedKFold(n_splits=min(k, 5), shuffle=True, random_state=int(seed))
                splits = list(folds.split(xs, ys))
                c_best, _ = _select_c(xs, ys, splits, c_grid, max_iter, int(seed))
            model = _fit_logistic(xs, ys, c_best, max_iter, int(seed))
            scores = _class_scores(model, x_test, n_classes)
            accs.append(topk_accuracy(scores, y_test, (1,))[1])
            cs.append(c_best)
        mean = float(np.mean(accs))
        std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
        out["shots"][str(k)] = {"acc1_mean": mean, "acc1_std": std, "acc1_runs": accs, "C": cs}
        out[f"{k}-shot_acc1"] = mean
        out[f"{k}-shot_acc1_std"] = std
    return out


# --------------------------------------------------------------------------------------------
# Counting (RemoteCount protocol)

NUMBER_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
)  # fmt: skip


def number_word(n: int) -> str:
    """English word for ``0 <= n <= 20``."""
    if not 0 <= n < len(NUMBER_WORDS):
        raise ValueError(f"no number word for {n} (0..{len(NUMBER_WORDS) - 1})")
    return NUMBER_WORDS[n]


_BE_VERBS = {"is": "are", "are": "is", "was": "were", "were": "was"}
_SINGULAR_VERBS = frozenset({"is", "was"})
# Words allowed between the count and the counted noun ("3 small white cars"): up to three,
# none of them a function word or number, which would mean the noun belongs to another phrase
# ("3 planes near two cars" does not count cars).
_MAX_WORDS_BEFORE_NOUN = 3
_NOT_MODIFIERS = (
    "a|an|the|of|and|or|with|without|near|next|to|beside|besides|by|on|in|at|from|along|around|"
    "between|behind|above|below|under|over|is|are|was|were|\\d+|" + "|".join(NUMBER_WORDS)
)


def _same_case(word: str, like: str) -> str:
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


def _noun_forms(category: str) -> list[tuple[str, str]]:
    """``(singular, plural)`` pairs to look for: the category, then its head (last) word."""
    names = list(dict.fromkeys([" ".join(category.lower().split()), normalise_class(category)]))
    heads = [n.rpartition(" ")[2] for n in names if " " in n]
    return [(n, pluralise(n)) for n in dict.fromkeys(names + heads) if n]


def _find_noun(tail: str, category: str) -> tuple[int, int, str] | None:
    """Span of the counted noun in the text after the count, and its singular form."""
    for singular, plural in _noun_forms(category):
        forms = sorted({singular, plural}, key=len, reverse=True)
        alternatives = "|".join(r"\s+".join(map(re.escape, f.split())) for f in forms)
        modifier = rf"(?!(?:{_NOT_MODIFIERS})\b)[\w-]+\s+"
        pattern = rf"^\s+(?:{modifier}){{0,{_MAX_WORDS_BEFORE_NOUN}}}?({alternatives})\b"
        match = re.match(pattern, tail, re.IGNORECASE)
        if match is not None:
            return match.start(1), match.end(1), singular
    return None


def _agree_verb(text: str, pattern: str, singular: bool) -> str:
    """Make the be-verb matched by ``pattern`` (group 1) agree in number."""
    match = re.search(pattern, text, re.IGNORECASE)
    if match is None:
        return text
    verb = match.group(1)
    is_singular = verb.lower() in _SINGULAR_VERBS
    if is_singular == singular:
        return text
    new = _same_case(_BE_VERBS[verb.lower()], verb)
    return text[: match.start(1)] + new + text[match.end(1) :]


def counting_prompts(
    caption: str,
    count: int,
    *,
    category: str | None = None,
    numbers: Sequence[int] = range(1, 11),
    style: str = "digits",
) -> list[str]:
    """The caption with its count replaced by each of ``numbers`` (RemoteCount protocol).

    The count is found as a whole word, written in digits (``3``) or words (``three``, any case);
    the first occurrence is replaced. ``style`` ("digits" or "words") sets how the candidates are
    written.

    With ``category`` (the singular noun counted, as ``terrascribe build counting`` writes it in
    ``counting.csv``), the noun after the count is re-inflected for each candidate, irregular
    plurals included (``"one tree"``, ``"seven trees"``, ``"two people"``), and a be-verb right
    before the count or right after the noun agrees with it (``"there is one car"``, ``"two
    planes are parked"``). Up to three words may stand between the count and the noun
    (``"3 small white cars"``); if the category is not found there, its head word is tried
    (``"vehicles"`` for ``small vehicle``). Without ``category`` only the number changes.

    Raises:
        ValueError: If the caption does not state ``count``, or does not name ``category``
            right after it.
    """
    if style not in ("digits", "words"):
        raise ValueError(f"style must be 'digits' or 'words', got {style!r}")
    pattern = re.compile(rf"\b(?:{count}|{number_word(count)})\b", re.IGNORECASE)
    match = pattern.search(caption)
    if match is None:
        raise ValueError(f"caption does not state the count {count}: {caption!r}")
    head, tail = caption[: match.start()], caption[match.end() :]
    noun = _find_noun(tail, category) if category else None
    if category and noun is None:
        raise ValueError(
            f"caption does not name the category {category!r} right after the count {count}: "
            f"{caption!r}"
        )
    prompts = []
    for n in numbers:
        word = str(n) if style == "digits" else number_word(n)
        if style == "words" and match.group(0)[0].isupper():
            word = word.capitalize()
        new_head, new_tail = head, tail
        if noun is not None:
            start, end, singular = noun
            original = tail[start:end]
            form = _same_case(singular if n == 1 else pluralise(singular), original)
            after = _agree_verb(tail[end:], r"^\s+(is|are|was|were)\b", n == 1)
            new_tail = tail[:start] + form + after
            new_head = _agree_verb(head, r"\b(is|are|was|were)\s+$", n == 1)
        prompts.append(new_head + word + new_tail)
    return prompts


def counting(
    image_embeddings: np.ndarray,
    candidate_embeddings: np.ndarray,
    counts: np.ndarray,
    *,
    numbers: Sequence[int] = range(1, 11),
) -> dict[str, Any]:
    """Counting by caption ranking (RemoteCount): pick the caption with the most similar count.

    Args:
        image_embeddings: ``(N, D)`` image embeddings.
        candidate_embeddings: ``(N, K, D)``: for each image, its caption with the count replaced by
            each of ``numbers`` (see :func:`counting_prompts`).
        counts: ``(N,)`` true counts (values of ``numbers``).
        numbers: The candidate counts, in the order of the candidates.

    Returns:
        ``acc1 .. accK`` (top-k accuracy), ``mean_per_class_recall``, ``confusion_matrix`` (rows:
        true count, columns: predicted count, both in ``numbers`` order) and ``numbers``.
    """
    images = normalize(image_embeddings)
    cands = np.asarray(candidate_embeddings, dtype=np.float32)
    numbers = [int(n) for n in numbers]
    if cands.ndim != 3 or cands.shape[0] != len(images) or cands.shape[1] != len(numbers):
        raise ValueError(
            f"candidate embeddings must be (N={len(images)}, K={len(numbers)}, D), "
            f"got shape {cands.shape}"
        )
    if cands.shape[2] != images.shape[1]:
        raise ValueError(f"embedding sizes differ: {images.shape[1]} vs {cands.shape[2]}")
    cands = cands / np.maximum(np.linalg.norm(cands, axis=2, keepdims=True), np.float32(1e-12))
    position = {n: i for i, n in enumerate(numbers)}
    try:
        targets = np.array([position[int(c)] for c in np.asarray(counts)], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"count {err.args[0]} is not among the candidates {numbers}") from None
    scores = np.einsum("nd,nkd->nk", images, cands)
    acc = topk_accuracy(scores, targets, range(1, len(numbers) + 1))
    out: dict[str, Any] = {f"acc{k}": v for k, v in acc.items()}
    predictions = scores.argmax(axis=1)
    out["mean_per_class_recall"] = mean_per_class_recall(targets, predictions, len(numbers))
    out["confusion_matrix"] = confusion_matrix(targets, predictions, len(numbers)).tolist()
    out["numbers"] = numbers
    return out


# --------------------------------------------------------------------------------------------
# Caption metrics (generated captions against references)


def java_available() -> bool:
    """Whether a ``java`` executable is on PATH (METEOR and the PTB tokenizer need it)."""
    return shutil.which("java") is not None


def _simple_tokenize(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def caption_metrics(
    references: Sequence[Sequence[str]] | Mapping[Any, Sequence[str]],
    candidates: Sequence[str] | Mapping[Any, str],
) -> dict[str, float]:
    """COCO caption metrics via pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr.

    Captions are tokenised with the Stanford PTB tokenizer as in the COCO evaluation when Java is
    available; without Java, a lower-case alphanumeric tokenizer is used and METEOR (a Java
    program) is skipped with a warning (its key is then absent). The METEOR process is started
    once per Python process and reused by later calls (its start-up, loading a paraphrase table,
    takes ~10 s); it is stopped at exit.

    Args:
        references: For each image, its reference captions (list, or mapping id -> list).
        candidates: For each image, the generated caption (same order or same ids).

    Returns:
        ``{"BLEU-1", ..., "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}``.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError:  # pragma: no cover - depends on the install
        raise ImportError(
            "caption metrics need pycocoevalcap: pip install 'terrascribe[eval]'"
        ) from None
    refs = dict(references) if isinstance(references, Mapping) else dict(enumerate(references))
    cands = dict(candidates) if isinstance(candidates, Mapping) else dict(enumerate(candidates))
    if set(refs) != set(cands):
        raise ValueError(
            f"references and candidates cover different images ({len(refs)} vs {len(cands)})"
        )
    if not refs:
        raise ValueError("no captions to score")
    for key, ref in refs.items():
        if isinstance(ref, str) or not ref:
            raise ValueError(f"references of {key!r} must be a non-empty list of strings")
    java = java_available()
    if java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        # One tokenizer run (one JVM start) for references and candidates together.
        both = {("ref", k): [{"caption": c} for c in v] for k, v in refs.items()}
        both.update({("cand", k): [{"caption": cands[k]}] for k in refs})
        tokens = PTBTokenizer().tokenize(both)
        gts = {k: tokens[("ref", k)] for k in refs}
        res = {k: tokens[("cand", k)] for k in refs}
    else:
        gts = {k: [_simple_tokenize(c) for c in v] for k, v in refs.items()}
        res = {k: [_simple_tokenize(cands[k])] for k in refs}
    out: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for i, value in enumerate(bleu, start=1):
        out[f"BLEU-{i}"] = float(value)
    if java:
        out["METEOR"] = _meteor_score(gts, res)
    else:
        warnings.warn("java not found: METEOR skipped (install a JRE to compute it)", stacklevel=2)
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out


# One METEOR Java process per Python process, started on first use: loading its paraphrase
# table takes ~10 s, so scoring several models or checkpoints must not pay it every time.
_METEOR: Any = None
_METEOR_LOCK = threading.Lock()


def _meteor_score(gts: dict, res: dict) -> float:
    global _METEOR
    with _METEOR_LOCK:
        if _METEOR is None or _METEOR.meteor_p.poll() is not None:
            from pycocoevalcap.meteor.meteor import Meteor

            _METEOR = Meteor()
            atexit.register(_close_meteor, _METEOR)
        try:
            return float(_METEOR.compute_score(gts, res)[0])
        except BaseException:
            # a half-read answer would desynchronise the next call: start afresh next time
            _close_meteor(_METEOR)
            _METEOR = None
            raise


def _close_meteor(meteor: Any) -> None:
    """Stop METEOR's Java subprocess (pycocoevalcap only does it at garbage collection)."""
    proc = getattr(meteor, "meteor_p", None)
    if proc is not None and proc.poll() is None:
        # not under meteor.lock: a failed compute_score may have left it held
        proc.stdin.close()
        proc.kill()
        proc.wait()
    lock = getattr(meteor, "lock", None)
    if lock is not None and lock.locked():
        lock.release()  # else pycocoevalcap's __del__ would wait on it forever
