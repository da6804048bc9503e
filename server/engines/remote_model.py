"""What the fleet serves: the model name requests name, the tokenizer, ``ModelInfo``.

The tokenizer is loaded here, in the front end, not reached through vLLM's
``/tokenize`` and ``/detokenize``: strategies call ``encode`` / ``decode``
synchronously and often (a phrase to append, a candidate's text, every
logprob's token), and the prompt renderer applies the chat template; a network
round trip for each would put the fleet's latency inside the event loop. It is
loaded with vLLM's own loader (``vllm.tokenizers.get_tokenizer``, what ``vllm
serve`` uses), and checked once against every reachable upstream's
``/tokenize``, so ids in and out mean the same on both sides.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from strategies.engine import ModelInfo, Tokenizer

log = logging.getLogger("ponder.remote")
# Text whose ids a tokenizer mismatch would change: words, digits, spacing,
# think tags, accents and CJK (byte-level merges).
PROBE = "Hello, world! 12 + 30 = 42.\n\n<think>Ünïcödé 中文 naïve</think>\t  end"


@dataclass(frozen=True)
class Served:
    """One upstream's base model, from ``GET /v1/models`` (vLLM's ``ModelCard``:
    ``id``, ``root``, ``max_model_len``, ``parent`` set on LoRA adapters;
    vllm/entrypoints/serve/engine/protocol.py)."""

    model: str
    root: str | None
    max_model_len: int


def served_model(body: Any) -> Served:
    cards = [c for c in body["data"] if c.get("parent") is None]
    if not cards:
        raise ValueError("it serves no base model")
    card = cards[0]
    if not card.get("max_model_len"):
        raise ValueError(f"its model {card['id']!r} has no max_model_len")
    return Served(card["id"], card.get("root"), int(card["max_model_len"]))


def discover(client: httpx.Client, urls: Iterable[str]) -> tuple[Served, dict[str, Served], dict[str, str]]:
    """The fleet's model (the reachable upstreams must serve the same one), each
    reachable upstream's card, and why the others could not be asked."""
    found: dict[str, Served] = {}
    failed: dict[str, str] = {}
    for url in urls:
        try:
            r = client.get(f"{url}/v1/models")
            r.raise_for_status()
            found[url] = served_model(r.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            failed[url] = f"{type(exc).__name__}: {exc}"
    if not found:
        raise RuntimeError(f"no upstream answered GET /v1/models: {failed}")
    names = {s.model for s in found.values()}
    if len(names) > 1:
        raise ValueError(f"the upstreams serve different models: {dict((u, s.model) for u, s in found.items())}")
    first = next(iter(found.values()))
    fleet = Served(first.model, first.root, min(s.max_model_len for s in found.values()))
    return fleet, found, failed


def tokenizer_sources(configured: str, root: str | None, prepare: Callable[[], str]) -> Iterable[str]:
    """Where to load the tokenizer from, in order: the configured source; else
    the upstream's own model (its ``root``, a folder or a Hugging Face id), then
    ponder's ``[model]`` (prepared locally, as the in-process engine would)."""
    if configured:
        yield configured
        return
    if root:
        yield root
    yield prepare()


def load_tokenizer(sources: Iterable[str], load: Callable[[str], Any]) -> tuple[Any, str]:
    errors = []
    for source in sources:
        try:
            return load(source), source
        except Exception as exc:  # what a tokenizer loader raises is not one type (OSError, ValueError...)
            log.info("no tokenizer from %s: %s", source, exc)
            errors.append(f"{source}: {type(exc).__name__}: {exc}")
    raise RuntimeError(f"no tokenizer could be loaded: {errors}")


def vllm_tokenizer(source: str) -> Any:
    from vllm.tokenizers import get_tokenizer

    return get_tokenizer(source)


def check_tokenizer(client: httpx.Client, url: str, model: str, tokenizer: Tokenizer) -> None:
    """The local tokenizer encodes ``PROBE`` as the upstream does (vLLM's
    ``POST /tokenize``: ``TokenizeCompletionRequest`` -> ``TokenizeResponse.tokens``,
    vllm/entrypoints/serve/tokenize/protocol.py). An upstream without the
    endpoint (a router in front) is trusted, with a warning."""
    r = client.post(f"{url}/tokenize", json={"model": model, "prompt": PROBE, "add_special_tokens": False})
    if r.status_code in (404, 405):
        log.warning("upstream %s has no /tokenize: the local tokenizer is not checked against it", url)
        return
    r.raise_for_status()
    theirs = r.json()["tokens"]
    ours = tokenizer.encode(PROBE, add_special_tokens=False)  # type: ignore[call-arg]
    if list(ours) != list(theirs):
        raise ValueError(f"the local tokenizer does not match upstream {url}: {list(ours)[:12]}... "
                         f"against {list(theirs)[:12]}... (set remote.tokenizer to the model the upstreams serve)")


def model_facts(source: str, tokenizer: Any) -> tuple[tuple[int, ...], int | None]:
    """End-of-sequence ids (the tokenizer's and the generation config's, as the
    in-process engine reads them) and the logits' width, from the model's config
    when ``source`` has one."""
    eos: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        eos.add(tokenizer.eos_token_id)
    vocab: int | None = None
    try:
        from transformers import AutoConfig, GenerationConfig
    except ImportError:  # pragma: no cover - transformers is a dependency
        return tuple(sorted(eos)), None
    try:
        extra = GenerationConfig.from_pretrained(source).eos_token_id
        eos.update([extra] if isinstance(extra, int) else extra or [])
    except (OSError, ValueError):
        pass
    try:
        vocab = getattr(AutoConfig.from_pretrained(source).get_text_config(), "vocab_size", None)
    except (OSError, ValueError, KeyError):
        pass
    return tuple(sorted(eos)), vocab


def model_info(served: Served, eos: Sequence[int], vocab: int | None, kv_block_size: int,
               think_open: str, think_close: str, native_thinking: bool) -> ModelInfo:
    return ModelInfo(max_model_len=served.max_model_len, eos_token_ids=tuple(eos), think_open=think_open,
                     think_close=think_close, native_thinking=native_thinking, kv_block_size=kv_block_size,
                     vocab_size=vocab)

