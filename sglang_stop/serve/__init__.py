"""`sglang-stop serve`: an OpenAI-compatible HTTP server whose every request runs the pruned
parallel-reasoning program (N paths, score, prune, continue, vote) on one shared backend.

Layers: ``schemas`` (request/response models) -> ``engine`` (config per request, admission,
per-request cancel, the run) -> ``app`` (FastAPI routes, SSE) -> ``cli`` (the click command).
"""
