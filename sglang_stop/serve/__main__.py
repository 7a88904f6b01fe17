"""``python -m sglang_stop.serve`` = ``sglang-stop serve``."""

from sglang_stop.serve.cli import main

main()
