"""Build a dataset from web items with LLM captions (GAIA) or offline template captions.

Two phases, so that an interrupted or budget-limited run loses nothing:

1. *Caption* (only with an endpoint): every item goes through :class:`LLMCaptioner`, whose results
   land in an on-disk cache as they arrive (atomic writes). This is where the time and money go.
2. *Write*: items are split into fixed chunks; chunk ``i`` becomes shard ``i`` through
   :func:`terrascribe.shards.write_dataset`. A chunk is written only when every one of its items
   has a final outcome (captioned, failed, or skipped for bad input); chunks with items still
   pending (budget spent, endpoint down) are left for the next run.

Running the same command again captions what is missing (cache hits cost nothing), writes the
remaining shards and finalises the dataset. Without an endpoint, captions come from the items'
metadata alone (``extra["captioner"] == "offline-template"``), so the command runs offline.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from terrascribe.images import ImageError
from terrascribe.records import Bounds, Sample, Skip
from terrascribe.shards import DatasetError, batched, write_dataset
from terrascribe.sources.web import (
    DEFAULT_USER_AGENT,
    Fetcher,
    FetchError,
    RobotsDisallowed,
    WebItem,
    fetch_image,
    read_items,
)
from terrascribe.text.llm import (
    OFFLINE_CAPTIONER,
    CaptionInput,
    CaptionOutcome,
    LLMCaptioner,
    TemplateCaptioner,
    parse_prices,
)

BUILDER = "llm"


class ImageUnavailable(ImageError):
    """An item's image file cannot be read."""


class BuildIncomplete(DatasetError):
    """Some items are not captioned yet (budget spent or endpoint down); re-run to finish.

    Attributes:
        pending: Number of items still to caption.
        reasons: Count of pending items by reason.
    """

    def __init__(self, message: str, pending: int, reasons: Mapping[str, int]) -> None:
        super().__init__(message)
        self.pending = pending
        self.reasons = dict(reasons)


def load_item_image(ref: str, base_dir: str | Path, fetcher: Fetcher) -> bytes:
    """Bytes of an item's image: a local file (relative to ``base_dir``) or a polite download.

    Args:
        ref: The item's ``image`` field.
        base_dir: Folder that relative paths are relative to (the item list's folder).
        fetcher: Client for URLs (robots.txt, per-host delay, cache, size and type checks).

    Raises:
        FetchError: If a download fails or is refused.
        ImageUnavailable: If the file cannot be read. (Decoding is checked by the consumers:
            the captioner before sending, the dataset writer before writing.)
    """
    if "://" in ref:
        return fetch_image(fetcher, ref)
    path = Path(ref)
    if not path.is_absolute():
        path = Path(base_dir) / path
    try:
        return path.read_bytes()
    except OSError as err:
        raise ImageUnavailable(f"{path}: cannot read image ({err.strerror or err})") from None


def _caption_input(item: WebItem, image: Any = None) -> CaptionInput:
    return CaptionInput(
        key=item.key,
        image=image,
        title=item.title,
        text=item.text,
        alt_text=item.alt_text,
        credits=item.credits,
        place=item.place,
        date=item.date,
    )


def _skip_reason(err: Exception) -> str:
    if isinstance(err, RobotsDisallowed):
        return "robots.txt disallows"
    if isinstance(err, FetchError):
        return "image download failed"
    if isinstance(err, ImageUnavailable):
        return "image unavailable"
    return "corrupt image"


def make_samples(
    job: Sequence[tuple[dict[str, Any], dict[str, Any] | None]],
    *,
    base_dir: str,
    fetch: Mapping[str, Any],
    drop_flagged: bool = False,
) -> Iterator[Sample | Skip]:
    """Turn one chunk of ``(item, outcome)`` pairs into samples and skips (one shard).

    ``outcome`` is ``None`` for the offline captioner, which runs here. Picklable (module level),
    so shards can be written by worker processes.

    Raises:
        BuildIncomplete: If an outcome is still pending (the shard is then not written).
    """
    offline = TemplateCaptioner()
    fetcher = Fetcher(**fetch)  # one per shard: one robots.txt read and schedule per host
    try:
        yield from _samples(job, offline, base_dir, fetcher, drop_flagged)
    finally:
        fetcher.close()


def _samples(
    job: Sequence[tuple[dict[str, Any], dict[str, Any] | None]],
    offline: TemplateCaptioner,
    base_dir: str,
    fetcher: Fetcher,
    drop_flagged: bool,
) -> Iterator[Sample | Skip]:
    for item_data, outcome_data in job:
        item = WebItem.model_validate(item_data)
        if outcome_data is None:
            outcome = offline.caption(_caption_input(item))
        else:
            outcome = CaptionOutcome.from_dict(outcome_data)
        if outcome.status == "pending":
            raise BuildIncomplete(f"{item.key}: not captioned yet ({outcome.reason})", 1, {})
        if outcome.status != "ok":
            yield Skip(item.key, outcome.reason or outcome.status, outcome.detail or "")
            continue
        if drop_flagged and outcome.flags:
            yield Skip(item.key, "flagged caption", ", ".join(outcome.flags))
            continue
        try:
            image = load_item_image(item.image, base_dir, fetcher)
        except (FetchError, ImageError) as err:
            yield Skip(item.key, _skip_reason(err), str(err))
            continue
        yield _sample(item, outcome, image)


def _sample(item: WebItem, outcome: CaptionOutcome, image: bytes) -> Sample:
    result = outcome.result or {}
    extra: dict[str, Any] = {
        "captioner": outcome.captioner,
        "flags": list(outcome.flags),
        "tags": result.get("tags", []),
        "location_text": result.get("location"),
        "modality": result.get("modality"),
        "satellite": result.get("satellite"),
        "sensor": result.get("sensor"),
        "resolution_class": result.get("resolution_class"),
    }
    if outcome.captioner != OFFLINE_CAPTIONER:
        extra.update(model=outcome.model, prompt=outcome.prompt, summary=outcome.summary)
    for name in ("page_url", "title", "credits", "place", "published"):
        value = getattr(item, name)
        if value is not None:
            extra[name] = value
    bounds = (
        Bounds(item.lon, item.lat, item.lon, item.lat, crs="EPSG:4326")
        if item.lon is not None and item.lat is not None
        else None
    )
    return Sample(
        key=item.key,
        image=image,
        captions=list(result["captions"]),
        source="llm",
        source_ids=[s for s in (item.image, item.page_url) if s],
        bounds=bounds,
        capture_date=item.date,
        sensor=result.get("sensor") or result.get("satellite"),
        licence=item.licence,
        extra=extra,
    )


def _dedupe(items: Sequence[WebItem]) -> tuple[list[WebItem], list[WebItem]]:
    seen: set[str] = set()
    unique, dupes = [], []
    for item in items:
        (dupes if item.key in seen else unique).append(item)
        seen.add(item.key)
    return unique, dupes


def build_llm_dataset(
    items: str | Path | Sequence[WebItem],
    out: str | Path,
    *,
    endpoint: str | None = None,
    model: str | None = None,
    summary_model: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    prompt: str | Path = "gaia-v1",
    concurrency: int = 8,
    max_cost: float | None = None,
    prices: str | Path | Mapping[str, Any] | None = None,
    cache_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    shard_size: int = 1000,
    drop_flagged: bool = False,
    timeout_s: float = 120.0,
    max_retries: int = 6,
    backoff_base_s: float = 1.0,
    backoff_max_s: float = 120.0,
    fix_attempts: int = 2,
    temperature: float = 0.2,
    summary_min_chars: int = 600,
    response_format: str = "json_schema",
    user_agent: str = DEFAULT_USER_AGENT,
    min_delay_s: float = 1.0,
    workers: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Caption web items and write them as a terrascribe dataset (resumable).

    Args:
        items: An item list file (JSONL/CSV/Parquet, see :func:`read_items`) or items.
        out: Dataset folder.
        endpoint: Base URL of an OpenAI-compatible API; ``None`` uses the offline template
            captioner (no network for captions).
        model: Multimodal chat model (required with ``endpoint``).
        summary_model: Model that condenses articles; default ``model``.
        api_key_env: Environment variable with the API key (the key is never written anywhere).
        prompt: Prompt template name or file.
        concurrency: LLM items in flight at once.
        max_cost: Budget in USD for this run; when spent, the run stops cleanly and raises
            :class:`BuildIncomplete` (re-run with a larger budget to finish).
        prices: Prices per model (``"model=IN/OUT,..."`` USD per 1M tokens, a JSON file or dict).
        cache_dir: Result and download cache; default ``OUT/.cache``.
        base_dir: Folder for relative image paths; default the item list's folder.
        shard_size: Items per shard.
        drop_flagged: Skip items whose captions contain URLs or echo instructions (they are
            always flagged in ``extra["flags"]``).
        timeout_s, max_retries, backoff_base_s, backoff_max_s: Request policy of the LLM calls.
        fix_attempts: Feedback rounds for invalid replies.
        temperature: Sampling temperature.
        summary_min_chars: Articles at least this long are summarised first.
        response_format: ``json_schema``, ``json_object`` or ``none``.
        user_agent, min_delay_s: Identity and per-host delay for image downloads.
        workers: Processes writing shards.
        seed: Seed (sent to the endpoint; recorded).
        progress: Show progress bars.

    Returns:
        The content of ``dataset.json``.

    Raises:
        ItemsError: If the item list is invalid.
        LLMError: If the endpoint refuses the key or does not know the model.
        BuildIncomplete: If items remain uncaptioned; the shards that could be written are kept.
    """
    out = Path(out)
    if isinstance(items, str | Path):
        base_dir = Path(base_dir) if base_dir is not None else Path(items).resolve().parent
        inputs: list[Any] = [items]
        items = read_items(items)
    else:
        base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        inputs = []
    if endpoint is not None and not model:
        raise ValueError("an endpoint needs a model name (--model)")
    cache = Path(cache_dir) if cache_dir is not None else out / ".cache"
    fetch = {
        "cache_dir": str(cache / "http"),
        "user_agent": user_agent,
        "min_delay_s": min_delay_s,
        "seed": seed,
    }
    unique, dupes = _dedupe(items)

    outcomes: dict[str, dict[str, Any]] = {}
    report: dict[str, Any] = {"items": len(unique), "duplicate_items": len(dupes)}
    if endpoint is not None:
        captioner = LLMCaptioner(
            endpoint,
            model or "",
            summary_model=summary_model,
            api_key_env=api_key_env,
            prompt=prompt,
            cache_dir=cache / "llm",
            concurrency=concurrency,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_base_s=backoff_base_s,
            backoff_max_s=backoff_max_s,
            fix_attempts=fix_attempts,
            temperature=temperature,
            summary_min_chars=summary_min_chars,
            seed=seed,
            response_format=response_format,  # type: ignore[arg-type]
            prices=parse_prices(prices),
            max_cost=max_cost,
        )
        params = captioner.params()
        with Fetcher(**fetch) as fetcher:  # shared by the loader threads: one schedule per host
            results = captioner.caption(
                [
                    _caption_input(
                        it, functools.partial(load_item_image, it.image, base_dir, fetcher)
                    )
                    for it in unique
                ],
                progress=progress,
            )
        outcomes = {o.key: o.to_dict() for o in results}
        report.update(_llm_report(results, captioner))
    else:
        params = {"captioner": OFFLINE_CAPTIONER}
    params.update(shard_size=shard_size, drop_flagged=drop_flagged)

    jobs = _jobs(unique, dupes, outcomes, shard_size)
    pending = Counter(o["reason"] for o in outcomes.values() if o["status"] == "pending")
    try:
        info = write_dataset(
            out,
            jobs,
            functools.partial(
                make_samples, base_dir=str(base_dir), fetch=fetch, drop_flagged=drop_flagged
            ),
            builder=BUILDER,
            params=params,
            seed=seed,
            inputs=inputs,
            workers=workers,
            report=report,
            progress=progress,
        )
    except DatasetError as err:
        if not pending:
            raise
        n = sum(pending.values())
        spent = report.get("usage", {}).get("cost_usd", 0.0)
        raise BuildIncomplete(
            f"{n} of {len(unique)} items are not captioned yet "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(pending.items()))}); "
            f"spent USD {spent:.4f} this run. The complete shards are written and every caption "
            f"is cached in {cache}: run the same command again (with a larger --max-cost if the "
            "budget ran out) to finish.",
            n,
            pending,
        ) from err
    return info


def _jobs(
    unique: Sequence[WebItem],
    dupes: Sequence[WebItem],
    outcomes: Mapping[str, dict[str, Any]],
    shard_size: int,
) -> list[list[tuple[dict[str, Any], dict[str, Any] | None]]]:
    """Chunks of ``(item, outcome)`` pairs, one per shard (no outcome: caption offline).

    A duplicate comes at the end of its first occurrence's chunk with a ``skipped`` outcome,
    so it is recorded as a skip in that shard.
    """
    jobs: list[list[tuple[dict[str, Any], dict[str, Any] | None]]] = []
    chunk_of: dict[str, int] = {}
    for i, chunk in enumerate(batched(unique, shard_size)):
        jobs.append([(it.to_json(), outcomes.get(it.key)) for it in chunk])
        chunk_of.update(dict.fromkeys((it.key for it in chunk), i))
    for dupe in sorted(dupes, key=lambda d: d.key):
        skipped = CaptionOutcome(
            dupe.key, "skipped", reason="duplicate item", detail="an earlier item has the same key"
        )
        jobs[chunk_of[dupe.key]].append((dupe.to_json(), skipped.to_dict()))
    return jobs


def _llm_report(results: Sequence[CaptionOutcome], captioner: LLMCaptioner) -> dict[str, Any]:
    status = Counter(o.status for o in results)
    return {
        "status": dict(sorted(status.items())),
        "cache_hits": captioner.cache_hits,
        "flagged": sum(1 for o in results if o.flags),
        "usage": captioner.budget.usage.to_dict(),
        "cost_usd_all_runs": round(sum(o.cost_usd for o in results), 6),
        "failed_reasons": dict(
            sorted(Counter(o.reason for o in results if o.status == "failed").items())
        ),
    }
