"""``terrascribe build llm`` (GAIA-style LLM captions) and ``terrascribe build collect``."""

from __future__ import annotations

from pathlib import Path

import typer

EXIT_INCOMPLETE = 3


def llm(
    input: Path = typer.Option(..., "--input", "-i", help="Item list: JSONL, CSV or Parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder."),
    endpoint: str | None = typer.Option(
        None,
        help="OpenAI-compatible API base URL (e.g. http://127.0.0.1:8000/v1 for vLLM, "
        "http://127.0.0.1:11434/v1 for Ollama). Without it, captions come from the items' "
        "metadata (offline template captioner).",
    ),
    model: str | None = typer.Option(None, help="Multimodal chat model for the captions."),
    summary_model: str | None = typer.Option(
        None, help="Model that condenses articles (default: --model)."
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", help="Environment variable holding the API key (never written)."
    ),
    prompt: str = typer.Option("gaia-v1", help="Prompt template name or JSON file."),
    concurrency: int = typer.Option(8, min=1, help="Requests in flight at once."),
    max_cost: float | None = typer.Option(
        None, help="Budget in USD for this run; stops cleanly when spent (re-run to finish)."
    ),
    prices: str | None = typer.Option(
        None,
        help="Prices in USD per 1M tokens: 'MODEL=IN/OUT,...' or a JSON file "
        '{"MODEL": {"input": IN, "output": OUT}}.',
    ),
    cache_dir: Path | None = typer.Option(None, help="Result/download cache (default OUT/.cache)."),
    shard_size: int = typer.Option(1000, min=1, help="Items per shard."),
    drop_flagged: bool = typer.Option(
        False, help="Skip items whose captions contain URLs or echo instructions."
    ),
    fix_attempts: int = typer.Option(
        2, min=0, help="Feedback rounds for an invalid reply before the item fails."
    ),
    temperature: float = typer.Option(0.2, help="Sampling temperature."),
    summary_min_chars: int = typer.Option(
        600, min=0, help="Articles at least this long are summarised first."
    ),
    timeout: float = typer.Option(120.0, help="Timeout of one request, in seconds."),
    max_retries: int = typer.Option(6, min=0, help="Retries on 429/5xx/timeouts."),
    response_format: str = typer.Option(
        "json_schema", help="json_schema (structured output), json_object, or none."
    ),
    user_agent: str | None = typer.Option(None, help="User-Agent for image downloads."),
    delay: float = typer.Option(
        1.0, min=0.0, help="Seconds between image downloads from one host."
    ),
    workers: int = typer.Option(1, min=1, help="Processes writing shards."),
    seed: int = typer.Option(0, help="Seed (sent to the endpoint, recorded)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Caption web images with an LLM (GAIA method) and write a dataset; resumable."""
    from rich.console import Console

    from terrascribe.build.llm import BuildIncomplete, build_llm_dataset
    from terrascribe.sources.web import DEFAULT_USER_AGENT, ItemsError
    from terrascribe.text.llm import LLMError, PromptError

    console = Console(stderr=True)
    try:
        info = build_llm_dataset(
            input,
            out,
            endpoint=endpoint,
            model=model,
            summary_model=summary_model,
            api_key_env=api_key_env,
            prompt=prompt,
            concurrency=concurrency,
            max_cost=max_cost,
            prices=prices,
            cache_dir=cache_dir,
            shard_size=shard_size,
            drop_flagged=drop_flagged,
            fix_attempts=fix_attempts,
            temperature=temperature,
            summary_min_chars=summary_min_chars,
            timeout_s=timeout,
            max_retries=max_retries,
            response_format=response_format,
            user_agent=user_agent or DEFAULT_USER_AGENT,
            min_delay_s=delay,
            workers=workers,
            seed=seed,
            progress=progress,
        )
    except BuildIncomplete as err:
        console.print(f"[yellow]incomplete:[/] {err}")
        raise typer.Exit(EXIT_INCOMPLETE) from None
    except (ItemsError, LLMError, PromptError, ValueError) as err:
        console.print(f"[red]error:[/] {err}")
        raise typer.Exit(2) from None
    counts = info["counts"]
    report = info.get("report", {})
    usage = report.get("usage", {})
    console.print(
        f"wrote {counts['samples']} samples in {counts['shards']} shard(s) to {out}; "
        f"skipped {counts['skipped']} {counts['skip_reasons'] or ''}"
    )
    if usage:
        console.print(
            f"requests {usage['requests']}, tokens {usage['prompt_tokens']} in / "
            f"{usage['completion_tokens']} out, cost USD {usage['cost_usd']:.4f} this run, "
            f"cache hits {report.get('cache_hits', 0)}, flagged {report.get('flagged', 0)}"
        )


def collect(
    feed: list[str] = typer.Option([], "--feed", help="RSS/Atom feed URL (repeatable)."),
    pages: Path | None = typer.Option(None, help="Text file with one page URL per line."),
    out: Path = typer.Option(..., "--out", "-o", help="Item list to write (JSONL)."),
    download_images: Path | None = typer.Option(
        None, help="Download the images into this folder (hash-named) and refer to the files."
    ),
    cache_dir: Path = typer.Option(
        Path(".terrascribe-web-cache"), help="On-disk cache of fetched pages and images."
    ),
    user_agent: str | None = typer.Option(
        None, help="User-Agent (add a contact address; robots.txt rules match its first word)."
    ),
    delay: float = typer.Option(1.0, min=0.0, help="Seconds between requests to one host."),
    max_pages: int | None = typer.Option(None, min=1, help="Stop after this many pages."),
    max_images_per_page: int = typer.Option(5, min=1, help="Images kept per page."),
    min_image_side: int = typer.Option(64, min=0, help="Drop smaller images (icons)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Collect items (image + article text) from feeds or pages, obeying robots.txt."""
    import os

    from rich.console import Console

    from terrascribe.sources.web import DEFAULT_USER_AGENT, Fetcher, WebItem, collect, write_items

    console = Console(stderr=True)
    urls: list[str] = []
    if pages is not None:
        try:
            lines = pages.read_text(encoding="utf-8").splitlines()
        except OSError as err:
            console.print(f"[red]error:[/] {pages}: cannot read ({err.strerror or err})")
            raise typer.Exit(2) from None
        urls = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not feed and not urls:
        console.print("[red]error:[/] give --feed URL and/or --pages FILE")
        raise typer.Exit(2)
    with Fetcher(
        cache_dir=cache_dir, user_agent=user_agent or DEFAULT_USER_AGENT, min_delay_s=delay
    ) as fetcher:
        result = collect(
            feeds=feed,
            pages=urls,
            fetcher=fetcher,
            max_pages=max_pages,
            max_images_per_page=max_images_per_page,
            min_image_side=min_image_side,
            download_dir=download_images,
            progress=progress,
        )
    items = result.items
    if download_images is not None:
        # Paths relative to the item list, so the list and its images can move together.
        items = [
            WebItem.model_validate(
                {**it.to_json(), "image": os.path.relpath(it.image, out.resolve().parent)}
            )
            for it in items
        ]
    out.parent.mkdir(parents=True, exist_ok=True)
    n = write_items(out, items)
    console.print(f"wrote {n} items to {out}; skipped {len(result.skips)}")
    for skip in result.skips[:20]:
        console.print(f"  skipped {skip.item}: {skip.reason} ({skip.detail})")


def register(app: typer.Typer) -> None:
    """Add ``llm`` and ``collect`` to the ``build`` group."""
    app.command("llm")(llm)
    app.command("collect")(collect)
