"""LLM captions for remote-sensing images with their article text (the GAIA method).

Two steps, as in GAIA: condense the article, then ask a multimodal model for five distinct,
grounded captions plus structured metadata, with the summary as quoted context. Any
OpenAI-compatible chat endpoint with image input works (hosted APIs, vLLM, Ollama, LM Studio):
the ``openai`` package is pointed at it with ``base_url``.

What makes it a pipeline rather than two API calls:

* replies are validated against a pydantic schema (:class:`CaptionSet`); invalid JSON, schema
  violations and repeated captions are sent back to the model with the error, then recorded as
  failed;
* bounded concurrency (asyncio), exponential back-off on 429/5xx/timeouts honouring
  ``Retry-After``;
* an on-disk cache keyed by endpoint, model, prompt version, image hash and text hash, so a re-run
  costs nothing and an interrupted run resumes;
* token accounting with configurable prices and a budget that stops cleanly;
* scraped text is quoted between unforgeable markers and the system prompt says to ignore
  instructions inside it; captions echoing instructions or URLs are flagged.

:class:`TemplateCaptioner` is the offline fallback: captions from the item's metadata alone.

API keys are read from the environment only and never written anywhere. No torch here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from terrascribe.records import normalise_captions
from terrascribe.shards import atomic_write_text
from terrascribe.sources.web import backoff_delay, format_validation, parse_retry_after

PROMPTS_DIR = Path(__file__).parent / "data" / "llm_prompts"
DEFAULT_PROMPT = "gaia-v1"
N_CAPTIONS = 5
MODALITIES = (
    "optical",
    "multispectral",
    "hyperspectral",
    "sar",
    "thermal",
    "lidar",
    "night lights",
    "unknown",
)
RESOLUTION_CLASSES = ("very high", "high", "medium", "low", "unknown")
OFFLINE_CAPTIONER = "offline-template"
LLM_CAPTIONER = "llm"


class LLMError(RuntimeError):
    """The endpoint cannot be used at all (bad key, unknown model): the run stops."""


class PromptError(ValueError):
    """A prompt template file is missing or malformed."""


# --------------------------------------------------------------------------------------------
# Prompt templates (data files)


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt set loaded from ``data/llm_prompts/NAME.json``.

    Each text field is a list of lines in the file, joined with newlines; placeholders use
    :class:`string.Template` syntax (``$article``), so braces in prompts need no escaping and
    substituted text is never expanded again.
    """

    name: str
    version: str
    summary_system: str
    summary_user: str
    caption_system: str
    caption_user: str
    feedback: str
    sha256: str

    @property
    def id(self) -> str:
        """``name@version``, recorded with every caption."""
        return f"{self.name}@{self.version}"

    @classmethod
    def load(cls, name_or_path: str | Path = DEFAULT_PROMPT) -> PromptTemplate:
        """Load a bundled template by name (``"gaia-v1"``) or a JSON file by path."""
        path = Path(name_or_path)
        if not path.suffix:
            path = PROMPTS_DIR / f"{name_or_path}.json"
        if not path.is_file():
            bundled = sorted(p.stem for p in PROMPTS_DIR.glob("*.json"))
            raise PromptError(f"{path}: no such prompt template (bundled: {bundled})")
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
            texts = {
                k: "\n".join(data[k]) if isinstance(data[k], list) else str(data[k])
                for k in _PROMPT_FIELDS
            }
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                sha256=hashlib.sha256(raw).hexdigest(),
                **texts,
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PromptError(f"{path}: malformed prompt template ({err!r})") from None


_PROMPT_FIELDS = ("summary_system", "summary_user", "caption_system", "caption_user", "feedback")


def _render(template: str, **values: Any) -> str:
    return string.Template(template).safe_substitute(
        n_captions=N_CAPTIONS,
        modalities=", ".join(MODALITIES),
        resolution_classes=", ".join(RESOLUTION_CLASSES),
        **values,
    )


def quote_block(text: str) -> tuple[str, str, str]:
    """Markers and body for quoting untrusted ``text`` in a prompt.

    The markers carry a hash of the text, so the text cannot contain (and so cannot close) its
    own end marker.

    Returns:
        ``(open_marker, body, close_marker)``.
    """
    tag = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"<<<QUOTED-{tag}>>>", text, f"<<<END-QUOTED-{tag}>>>"


# --------------------------------------------------------------------------------------------
# Reply schema


def _caption_norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


class CaptionSet(BaseModel):
    """The structured reply: five distinct captions and metadata about the image."""

    model_config = ConfigDict(extra="ignore")

    captions: list[str] = Field(min_length=N_CAPTIONS, max_length=N_CAPTIONS)
    tags: list[str] = Field(default_factory=list, max_length=30)
    location: str | None = None
    modality: str = "unknown"
    satellite: str | None = None
    sensor: str | None = None
    resolution_class: str = "unknown"

    @field_validator("captions")
    @classmethod
    def _distinct(cls, captions: list[str]) -> list[str]:
        cleaned = [" ".join(str(c).split()) for c in captions]
        for i, c in enumerate(cleaned):
            if len(c) < 10:
                raise ValueError(f"caption {i + 1} is empty or too short: {c!r}")
        norms = Counter(_caption_norm(c) for c in cleaned)
        repeated = [n for n, k in norms.items() if k > 1]
        if repeated:
            raise ValueError(f"captions must all be different; repeated: {repeated[0]!r}")
        return cleaned

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(t.strip().lower() for t in tags if str(t).strip()))

    @field_validator("location", "satellite", "sensor", mode="before")
    @classmethod
    def _none_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "null", "none", "unknown"):
            return None
        return value

    @field_validator("modality", "resolution_class", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return "unknown" if value is None else str(value).strip().lower()

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str) -> str:
        if value not in MODALITIES:
            raise ValueError(f"modality must be one of {list(MODALITIES)}, got {value!r}")
        return value

    @field_validator("resolution_class")
    @classmethod
    def _resolution(cls, value: str) -> str:
        if value not in RESOLUTION_CLASSES:
            raise ValueError(
                f"resolution_class must be one of {list(RESOLUTION_CLASSES)}, got {value!r}"
            )
        return value


def caption_json_schema() -> dict[str, Any]:
    """JSON schema of :class:`CaptionSet` for ``response_format`` (every field required)."""
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [
            "captions",
            "tags",
            "location",
            "modality",
            "satellite",
            "sensor",
            "resolution_class",
        ],
        "properties": {
            "captions": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": N_CAPTIONS,
                "maxItems": N_CAPTIONS,
            },
            "tags": {"type": "array", "items": {"type": "string"}},
            "location": nullable,
            "modality": {"type": "string", "enum": list(MODALITIES)},
            "satellite": nullable,
            "sensor": nullable,
            "resolution_class": {"type": "string", "enum": list(RESOLUTION_CLASSES)},
        },
    }


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_reply(content: str | None) -> CaptionSet:
    """Parse and validate a model reply.

    Raises:
        ValueError: With a short message suitable as feedback to the model.
    """
    if not content or not content.strip():
        raise ValueError("the reply was empty")
    text = _FENCE.sub("", content.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"the reply is not valid JSON ({err.msg} at position {err.pos})") from None
    if not isinstance(data, dict):
        raise ValueError(f"the reply must be a JSON object, got {type(data).__name__}")
    try:
        return CaptionSet.model_validate(data)
    except ValidationError as err:
        raise ValueError(
            f"the reply breaks the schema: {format_validation(err, 'reply')}"
        ) from None


# --------------------------------------------------------------------------------------------
# Safety flags

_URL = re.compile(r"https?://|www\.|\b[\w-]+\.(?:com|org|net|io|gov|edu|info|ly)\b", re.I)
_INSTRUCTION = re.compile(
    r"\b(?:ignore|disregard|forget)\b.{0,30}\b(?:instructions?|rules|prompt|above|previous)\b"
    r"|\bsystem prompt\b|\bas an ai\b|\blanguage model\b|\binstructions?\b|\bprompt\b",
    re.I | re.S,
)


def safety_flags(captions: Sequence[str]) -> list[str]:
    """Flags for captions that contain URLs or echo instructions (``["instruction", "url"]``)."""
    flags = set()
    for c in captions:
        if _URL.search(c):
            flags.add("url")
        if _INSTRUCTION.search(c):
            flags.add("instruction")
    return sorted(flags)


# --------------------------------------------------------------------------------------------
# Prices and budget


@dataclass(frozen=True)
class Price:
    """USD per million input (prompt) and output (completion) tokens."""

    input_per_mtok: float
    output_per_mtok: float


def parse_prices(spec: str | Path | Mapping[str, Any] | None) -> dict[str, Price]:
    """Prices from ``"model=IN/OUT,model2=IN/OUT"`` (USD per 1M tokens), a JSON file, or a dict.

    The JSON form is ``{"model": {"input": 2.5, "output": 10}}``.

    Raises:
        ValueError: If the specification is malformed.
    """
    if spec is None:
        return {}
    if isinstance(spec, Mapping):
        data = spec
    elif Path(str(spec)).suffix == ".json" and Path(str(spec)).is_file():
        try:
            data = json.loads(Path(str(spec)).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{spec}: invalid prices JSON ({err.msg})") from None
    else:
        data = {}
        for part in filter(None, (p.strip() for p in str(spec).split(","))):
            model, _, pair = part.rpartition("=")
            inp, _, out = pair.partition("/")
            try:
                data[model.strip()] = {"input": float(inp), "output": float(out)}
            except ValueError:
                raise ValueError(
                    f"bad price {part!r}: use MODEL=INPUT/OUTPUT in USD per million tokens"
                ) from None
            if not model.strip():
                raise ValueError(f"bad price {part!r}: the model name is missing")
    prices = {}
    for model, value in data.items():
        if isinstance(value, Price):
            prices[model] = value
            continue
        try:
            prices[model] = Price(float(value["input"]), float(value["output"]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"bad price for {model!r}: need input and output numbers") from None
    return prices


@dataclass
class Usage:
    """Tokens and cost of the requests made in this run (cache hits cost nothing)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_tokens: int = 0
    cost_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form."""
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6)}


class Budget:
    """Counts tokens and cost; ``exhausted`` once spending reaches ``max_cost``."""

    def __init__(self, prices: Mapping[str, Price], max_cost: float | None = None) -> None:
        self.prices = dict(prices)
        self.max_cost = max_cost
        self.usage = Usage()
        self._in_flight = 0
        self._items_done = 0
        self._items_cost = 0.0
        self._changed: asyncio.Condition | None = None  # made inside the running event loop

    def require_prices(self, *models: str) -> None:
        """With a budget, every model used needs a price."""
        if self.max_cost is None:
            return
        missing = [m for m in models if m not in self.prices]
        if missing:
            raise ValueError(
                f"a budget (max_cost) needs prices for {missing}: pass prices like "
                f"'{missing[0]}=2.5/10' (USD per million input/output tokens)"
            )

    def add(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """Record one request; returns its cost."""
        price = self.prices.get(model)
        cost = 0.0
        if price is not None:
            cost = (
                prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok
            ) / 1e6
        self.usage.requests += 1
        self.usage.prompt_tokens += prompt_tokens
        self.usage.completion_tokens += completion_tokens
        self.usage.cost_usd += cost
        return cost

    @property
    def exhausted(self) -> bool:
        """Whether the spending has reached ``max_cost``."""
        return self.max_cost is not None and self.usage.cost_usd >= self.max_cost

    def _decide(self) -> bool | None:
        """True: room for one more item; False: budget spent; None: wait for items in flight."""
        if self.max_cost is None:
            return True
        if self.exhausted:
            return False
        if not self._items_done:
            # Nothing is known of the cost per item yet: one at a time until something is.
            return True if self._in_flight == 0 else None
        mean = self._items_cost / self._items_done
        if self.usage.cost_usd + (self._in_flight + 1) * mean <= self.max_cost + 1e-12:
            return True
        return False if self._in_flight == 0 else None

    async def acquire(self) -> bool:
        """Reserve room for one more item; ``False`` once the budget would be overrun.

        Items in flight are counted at the mean cost of the items finished so far, so spending
        stops at the budget rather than ``concurrency`` items past it.
        """
        if self._changed is None:
            self._changed = asyncio.Condition()
        async with self._changed:
            while (decision := self._decide()) is None:
                await self._changed.wait()
            if decision:
                self._in_flight += 1
            return decision

    async def release(self, item_cost: float | None) -> None:
        """Release one item's reservation; ``item_cost`` (if known) updates the running mean."""
        self._in_flight -= 1
        if item_cost is not None:
            self._items_done += 1
            self._items_cost += item_cost
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()


# --------------------------------------------------------------------------------------------
# Inputs and outcomes


@dataclass(frozen=True)
class CaptionInput:
    """What the captioners need to know about one item.

    ``image`` is encoded bytes, or a callable that returns them (run in a thread, so images are
    loaded only while their item is being worked on).
    """

    key: str
    image: bytes | Callable[[], bytes] | None = None
    title: str | None = None
    text: str | None = None
    alt_text: str | None = None
    credits: str | None = None
    place: str | None = None
    date: str | None = None

    def text_fields(self) -> dict[str, str]:
        """The textual inputs that reach the prompt, without empty ones."""
        fields = {
            "title": self.title,
            "text": self.text,
            "alt_text": self.alt_text,
            "credits": self.credits,
            "place": self.place,
            "date": self.date,
        }
        return {k: v for k, v in fields.items() if v}


Status = Literal["ok", "failed", "skipped", "pending"]


@dataclass
class CaptionOutcome:
    """The result for one item.

    Attributes:
        key: The item's key.
        status: ``ok``; ``failed`` (no valid reply after the feedback rounds; final, cached);
            ``skipped`` (bad input such as an unreadable image; final); ``pending`` (transient
            failure or budget stop: a re-run tries again).
        result: The validated :class:`CaptionSet` as a dict, when ``ok``.
        summary: The condensed article used as context.
        flags: Safety flags of the captions.
        reason, detail: Why it is not ``ok`` (a short stable category, then specifics).
        captioner: :data:`LLM_CAPTIONER` or :data:`OFFLINE_CAPTIONER`.
        model, prompt: Who wrote it, with which prompt version.
        attempts: Caption requests that got a reply (1 + feedback rounds).
        prompt_tokens, completion_tokens, cost_usd: What it cost when it was made.
        cached: Whether this run read it from the cache (and so paid nothing).
    """

    key: str
    status: Status
    result: dict[str, Any] | None = None
    summary: str | None = None
    flags: list[str] = field(default_factory=list)
    reason: str | None = None
    detail: str | None = None
    captioner: str = LLM_CAPTIONER
    model: str | None = None
    prompt: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (what the cache stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CaptionOutcome:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------------------------
# Offline captioner


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class TemplateCaptioner:
    """Captions from an item's metadata alone (title, alt text, place, date): no network.

    Deterministic: the same item always gives the same captions. The result is labelled
    ``captioner = "offline-template"`` so nobody mistakes it for a description of the pixels.
    """

    name = OFFLINE_CAPTIONER

    def caption(self, item: CaptionInput) -> CaptionOutcome:
        """Make up to five distinct captions; ``failed`` if the item has no usable text."""
        where = item.place or ""
        candidates: list[str] = []
        if item.alt_text:
            candidates.append(item.alt_text[:300])
        if item.title:
            candidates.append(item.title[:300])
        if where:
            when = f", acquired on {item.date}" if item.date else ""
            candidates.append(f"Remote sensing image of {where}{when}.")
        if item.text:
            first = _SENTENCE.split(item.text.strip(), maxsplit=1)[0]
            if 20 <= len(first) <= 300:
                candidates.append(first)
        if item.title and where and where.casefold() not in item.title.casefold():
            candidates.append(f"{item.title[:200]}, {where}.")
        captions = normalise_captions(candidates)[:N_CAPTIONS]
        if not captions:
            return CaptionOutcome(
                key=item.key,
                status="failed",
                reason="no text",
                detail="the item has no title, alt text, place or page text to caption from",
                captioner=self.name,
            )
        result = {
            "captions": captions,
            "tags": [],
            "location": item.place,
            "modality": "unknown",
            "satellite": None,
            "sensor": None,
            "resolution_class": "unknown",
        }
        return CaptionOutcome(
            key=item.key,
            status="ok",
            result=result,
            flags=safety_flags(captions),
            captioner=self.name,
        )


# --------------------------------------------------------------------------------------------
# LLM captioner


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (where keys sometimes hide)."""
    p = urlsplit(url)
    host = p.hostname or ""
    if p.port:
        host = f"{host}:{p.port}"
    return urlunsplit((p.scheme, host, p.path.rstrip("/"), "", ""))


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def _image_data_url(image: bytes, max_side: int) -> str:
    """The image as a JPEG data URL, downscaled so its longer side is at most ``max_side``."""
    from terrascribe.images import decode_rgb, encode_jpeg

    img = decode_rgb(image)
    if max(img.size) > max_side:
        img.thumbnail((max_side, max_side))
    return "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(img, quality=90)).decode()


class _Retryable(Exception):
    """The endpoint stayed unavailable through every retry: the item is left pending."""


class _Rejected(Exception):
    """The endpoint refused this one request (400, 413, 422): the item fails, the run goes on."""


@dataclass(frozen=True)
class _Reply:
    content: str | None
    prompt_tokens: int
    completion_tokens: int
    cost: float


class LLMCaptioner:
    """GAIA-style captioner over any OpenAI-compatible chat endpoint with image input.

    Args:
        endpoint: Base URL of the API (``https://api.openai.com/v1``,
            ``http://127.0.0.1:8000/v1`` for vLLM, ``http://127.0.0.1:11434/v1`` for Ollama).
        model: Multimodal chat model that writes the captions.
        summary_model: Model that condenses articles (GAIA used a smaller one); default ``model``.
        api_key_env: Environment variable holding the API key. Unset is fine for local servers.
        prompt: Bundled prompt name or path to a prompt JSON file.
        cache_dir: Folder of the result cache; ``None`` disables it (not recommended).
        concurrency: Items in flight at once.
        timeout_s: Timeout of one request.
        max_retries: Retries of one request on 429, 5xx, timeouts and connection errors.
        backoff_base_s, backoff_max_s: Exponential back-off (``Retry-After`` wins).
        fix_attempts: Feedback rounds after an invalid reply before the item is ``failed``.
        temperature, max_tokens, seed: Sampling parameters sent with each request.
        response_format: ``"json_schema"`` (structured output), ``"json_object"`` or ``"none"``
            for servers that support neither; replies are validated in every case.
        summary_min_chars: Articles shorter than this are used as context directly.
        max_image_side: Images are downscaled to this many pixels on the longer side.
        prices: Prices per model (see :func:`parse_prices`).
        max_cost: Stop starting new items once this many USD are spent in this run.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        summary_model: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        prompt: str | Path = DEFAULT_PROMPT,
        cache_dir: str | Path | None = None,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 120.0,
        fix_attempts: int = 2,
        temperature: float = 0.2,
        max_tokens: int = 1024,
        seed: int = 0,
        response_format: Literal["json_schema", "json_object", "none"] = "json_schema",
        summary_min_chars: int = 600,
        max_image_side: int = 1024,
        prices: Mapping[str, Price] | None = None,
        max_cost: float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if response_format not in ("json_schema", "json_object", "none"):
            raise ValueError(f"unknown response_format {response_format!r}")
        self.endpoint = endpoint
        self.model = model
        self.summary_model = summary_model or model
        self.api_key_env = api_key_env
        self.prompt = PromptTemplate.load(prompt)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.fix_attempts = fix_attempts
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.seed = seed
        self.response_format = response_format
        self.summary_min_chars = summary_min_chars
        self.max_image_side = max_image_side
        self.budget = Budget(prices or {}, max_cost)
        self.budget.require_prices(self.model, self.summary_model)
        self.cache_hits = 0
        self._rng = random.Random(seed)
        self._summaries: dict[str, asyncio.Future[tuple[str, float, int, int]]] = {}

    # -- identity ---------------------------------------------------------------------------

    def params(self) -> dict[str, Any]:
        """Everything that shapes the captions (recorded in dataset.json; no secrets)."""
        return {
            "captioner": LLM_CAPTIONER,
            "endpoint": redact_url(self.endpoint),
            "model": self.model,
            "summary_model": self.summary_model,
            "prompt": self.prompt.id,
            "prompt_sha256": self.prompt.sha256,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "response_format": self.response_format,
            "summary_min_chars": self.summary_min_chars,
            "max_image_side": self.max_image_side,
            "fix_attempts": self.fix_attempts,
        }

    def cache_key(self, image_sha: str, text_sha: str) -> str:
        """Key of one item's result: endpoint, models, prompt version and parameters, inputs."""
        return _sha(
            json.dumps({**self.params(), "image": image_sha, "text": text_sha}, sort_keys=True)
        )

    def _cache_path(self, kind: str, key: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / kind / key[:2] / f"{key}.json"

    def _cache_get(self, kind: str, key: str) -> dict[str, Any] | None:
        path = self._cache_path(kind, key)
        if path is None or not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is recomputed

    def _cache_put(self, kind: str, key: str, value: Mapping[str, Any]) -> None:
        path = self._cache_path(kind, key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(value, sort_keys=True, ensure_ascii=False))

    # -- requests ---------------------------------------------------------------------------

    def _client(self) -> Any:
        import openai

        # A placeholder key for local servers (vLLM, Ollama) that ignore it; hosted APIs answer
        # 401, which stops the run with a message naming the variable (never the key).
        key = os.environ.get(self.api_key_env) or "no-key"
        return openai.AsyncOpenAI(
            base_url=self.endpoint, api_key=key, max_retries=0, timeout=self.timeout_s
        )

    def _response_format(self) -> dict[str, Any] | None:
        if self.response_format == "json_schema":
            return {
                "type": "json_schema",
                "json_schema": {"name": "rs_captions", "schema": caption_json_schema()},
            }
        if self.response_format == "json_object":
            return {"type": "json_object"}
        return None

    async def _chat(
        self, client: Any, model: str, messages: list[dict[str, Any]], *, structured: bool
    ) -> _Reply:
        import openai
        from openai.types.chat import ChatCompletion

        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }
        if structured and (fmt := self._response_format()) is not None:
            kwargs["response_format"] = fmt
        for attempt in range(self.max_retries + 1):
            try:
                # The body is plain JSON built here, so it is posted as is: the SDK's typed
                # parameter transform costs a third of the CPU per request at high concurrency.
                response = await client.post(
                    "/chat/completions", body=kwargs, cast_to=ChatCompletion
                )
                break
            except (openai.AuthenticationError, openai.PermissionDeniedError) as err:
                raise LLMError(
                    f"{redact_url(self.endpoint)} refused the API key (HTTP {err.status_code}): "
                    f"set a valid key in the environment variable {self.api_key_env}"
                ) from None
            except openai.NotFoundError:
                raise LLMError(
                    f"{redact_url(self.endpoint)}: model {model!r} or the chat completions route "
                    "was not found (HTTP 404)"
                ) from None
            except openai.APITimeoutError:
                problem, retry_after = "timed out", None
            except openai.APIConnectionError as err:
                problem, retry_after = f"connection failed ({err.__class__.__name__})", None
            except openai.APIStatusError as err:
                if err.status_code in (408, 409, 425, 429) or err.status_code >= 500:
                    problem = f"HTTP {err.status_code}"
                    retry_after = parse_retry_after(err.response.headers)
                else:
                    raise _Rejected(f"HTTP {err.status_code}: {str(err)[:300]}") from None
            if attempt == self.max_retries:
                raise _Retryable(f"{problem} after {self.max_retries + 1} attempt(s)")
            await asyncio.sleep(
                backoff_delay(
                    attempt,
                    base_s=self.backoff_base_s,
                    max_s=self.backoff_max_s,
                    retry_after_s=retry_after,
                    rng=self._rng,
                )
            )
        content = response.choices[0].message.content if response.choices else None
        usage = getattr(response, "usage", None)
        if usage is not None and usage.prompt_tokens is not None:
            pt, ct = int(usage.prompt_tokens), int(usage.completion_tokens or 0)
        else:
            # No usage reported (some local servers): estimate so the budget still works.
            pt = sum(len(json.dumps(m)) for m in messages) // 4
            ct = len(content or "") // 4
            self.budget.usage.estimated_tokens += pt + ct
        cost = self.budget.add(model, pt, ct)
        return _Reply(content, pt, ct, cost)

    async def _summary(self, client: Any, text: str) -> tuple[str, float, int, int]:
        """Condensed article (cached by text; concurrent items with the same text share it)."""
        if len(text) < self.summary_min_chars:
            return text, 0.0, 0, 0
        key = _sha(
            json.dumps(
                {
                    "endpoint": redact_url(self.endpoint),
                    "model": self.summary_model,
                    "prompt": self.prompt.id,
                    "prompt_sha256": self.prompt.sha256,
                    "temperature": self.temperature,
                    "text": _sha(text),
                },
                sort_keys=True,
            )
        )
        if key in self._summaries:
            summary, *_ = await asyncio.shield(self._summaries[key])
            return summary, 0.0, 0, 0
        future: asyncio.Future[tuple[str, float, int, int]] = (
            asyncio.get_running_loop().create_future()
        )
        self._summaries[key] = future
        try:
            cached = self._cache_get("summaries", key)
            if cached is not None:
                value = (cached["summary"], 0.0, 0, 0)
            else:
                fence_open, body, fence_close = quote_block(text)
                messages = [
                    {"role": "system", "content": _render(self.prompt.summary_system)},
                    {
                        "role": "user",
                        "content": _render(
                            self.prompt.summary_user,
                            fence_open=fence_open,
                            article=body,
                            fence_close=fence_close,
                        ),
                    },
                ]
                reply = await self._chat(client, self.summary_model, messages, structured=False)
                summary = (reply.content or "").strip() or text[: self.summary_min_chars]
                self._cache_put("summaries", key, {"summary": summary})
                value = (summary, reply.cost, reply.prompt_tokens, reply.completion_tokens)
            future.set_result(value)
            return value
        except BaseException as err:
            self._summaries.pop(key, None)
            future.set_exception(err)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise

    def _context(self, item: CaptionInput, summary: str) -> str:
        lines = []
        for label, value in (
            ("Title", item.title),
            ("Image alt text", item.alt_text),
            ("Place stated by the source", item.place),
            ("Acquisition date stated by the source", item.date),
            ("Article summary", summary),
        ):
            if value:
                lines.append(f"{label}: {value}")
        return "\n".join(lines) or "(no context was provided)"

    async def _prepare(self, item: CaptionInput) -> CaptionOutcome | tuple[str, str]:
        """Load the image and look up the cache: a final outcome, or ``(cache key, data URL)``."""
        base = {"key": item.key, "model": self.model, "prompt": self.prompt.id}
        try:
            image = item.image
            if callable(image):
                image = await asyncio.to_thread(image)
            if not image:
                raise ValueError("no image data")
        except Exception as err:
            return CaptionOutcome(
                **base, status="skipped", reason="image unavailable", detail=str(err)
            )
        text_sha = _sha(json.dumps(item.text_fields(), sort_keys=True))
        key = self.cache_key(_sha(image), text_sha)
        cached = self._cache_get("results", key)
        if cached is not None:
            self.cache_hits += 1
            outcome = CaptionOutcome.from_dict(cached)
            outcome.key, outcome.cached = item.key, True
            return outcome
        try:
            data_url = await asyncio.to_thread(_image_data_url, image, self.max_image_side)
        except Exception as err:
            return CaptionOutcome(
                **base, status="skipped", reason="image unavailable", detail=str(err)
            )
        return key, data_url

    async def _caption_one(
        self, client: Any, item: CaptionInput, prepared: CaptionOutcome | tuple[str, str]
    ) -> CaptionOutcome:
        if isinstance(prepared, CaptionOutcome):
            return prepared
        key, data_url = prepared
        base = {"key": item.key, "model": self.model, "prompt": self.prompt.id}
        if not await self.budget.acquire():
            return CaptionOutcome(**base, status="pending", reason="budget exhausted")
        try:
            outcome = await self._caption_uncached(client, item, data_url, base)
        except _Retryable as err:
            await self.budget.release(None)
            return CaptionOutcome(
                **base, status="pending", reason="endpoint unavailable", detail=str(err)
            )
        except _Rejected as err:
            await self.budget.release(None)
            # Not cached: a rejection usually comes from the configuration (model without image
            # input, image too large), which the user fixes before the next run.
            return CaptionOutcome(
                **base, status="failed", reason="request rejected", detail=str(err)
            )
        except BaseException:
            await self.budget.release(None)
            raise
        await self.budget.release(outcome.cost_usd)
        self._cache_put("results", key, outcome.to_dict())
        return outcome

    async def _caption_uncached(
        self, client: Any, item: CaptionInput, data_url: str, base: dict[str, Any]
    ) -> CaptionOutcome:
        tokens = [0, 0]
        cost = 0.0
        summary = ""
        if item.text:
            summary, cost, pt, ct = await self._summary(client, item.text)
            tokens = [pt, ct]
        fence_open, context, fence_close = quote_block(self._context(item, summary))
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": _render(self.prompt.caption_system)},
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": _render(
                            self.prompt.caption_user,
                            fence_open=fence_open,
                            context=context,
                            fence_close=fence_close,
                        ),
                    },
                    {"type": "image_url", "image_url": {"url": data_url}},
                ],
            },
        ]
        error = ""
        attempts = 0
        for _ in range(self.fix_attempts + 1):
            reply = await self._chat(client, self.model, messages, structured=True)
            attempts += 1
            tokens[0] += reply.prompt_tokens
            tokens[1] += reply.completion_tokens
            cost += reply.cost
            try:
                result = parse_reply(reply.content)
            except ValueError as err:
                error = str(err)
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply.content or ""},
                    {"role": "user", "content": _render(self.prompt.feedback, error=error)},
                ]
                continue
            return CaptionOutcome(
                **base,
                status="ok",
                result=result.model_dump(),
                summary=summary or None,
                flags=safety_flags(result.captions),
                attempts=attempts,
                prompt_tokens=tokens[0],
                completion_tokens=tokens[1],
                cost_usd=cost,
            )
        return CaptionOutcome(
            **base, status="failed", reason="invalid reply", detail=error[:500],
            summary=summary or None, attempts=attempts, prompt_tokens=tokens[0],
            completion_tokens=tokens[1], cost_usd=cost,
        )  # fmt: skip

    async def acaption(
        self,
        items: Iterable[CaptionInput],
        *,
        on_outcome: Callable[[CaptionOutcome], None] | None = None,
    ) -> list[CaptionOutcome]:
        """Caption ``items`` with at most ``concurrency`` in flight; outcomes in input order.

        Once the budget is spent, items not yet started come back ``pending``.

        Raises:
            LLMError: If the endpoint refuses the key or does not know the model.
        """
        items = list(items)
        outcomes: list[CaptionOutcome | None] = [None] * len(items)
        queue = iter(enumerate(items))
        client = self._client()
        # Futures and conditions belong to one event loop; each call may run in a new one.
        self._summaries = {}
        self.budget._changed = None

        Prepared = tuple["asyncio.Task[CaptionOutcome | tuple[str, str]]", int, CaptionInput]

        def take_next() -> Prepared | None:
            # One shared iterator: each item is taken once. Preparing (image loading, cache
            # lookup, encoding) starts at once, so it overlaps the request in flight.
            for i, item in queue:
                return asyncio.create_task(self._prepare(item)), i, item
            return None

        async def worker() -> None:
            pending = take_next()
            while pending is not None:
                prepared, i, item = pending
                ready = await prepared
                pending = take_next()
                outcome = await self._caption_one(client, item, ready)
                outcomes[i] = outcome
                if on_outcome is not None:
                    on_outcome(outcome)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(items)) or 1)))
        finally:
            await client.close()
        return [o for o in outcomes if o is not None]

    def caption(
        self, items: Iterable[CaptionInput], *, progress: bool = True
    ) -> list[CaptionOutcome]:
        """Synchronous :meth:`acaption` with a progress bar.

        Runs its own event loop; inside a running one (a notebook), ``await acaption(...)``.
        """
        from terrascribe.progress import progress_bar

        items = list(items)
        with progress_bar(len(items), f"caption with {self.model}", enabled=progress) as advance:
            return asyncio.run(self.acaption(items, on_outcome=lambda _: advance()))
