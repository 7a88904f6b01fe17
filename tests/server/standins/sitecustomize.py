"""STAND-IN patch for the CPU test server (test harness only): makes ``pin_memory`` a no-op when no CUDA
device exists. sglang's LoRA layers ask for pinned host buffers, which torch refuses without CUDA; on a
CPU-only server pinned and ordinary memory are the same thing. Loaded via PYTHONPATH by tests/server.
"""

from __future__ import annotations

try:
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.pin_memory = lambda self, *a, **k: self  # type: ignore[method-assign]
        torch.Tensor.is_pinned = lambda self, *a, **k: False  # type: ignore[method-assign]
        _empty, _zeros, _tensor = torch.empty, torch.zeros, torch.tensor

        def _drop_pin(fn):
            def wrapped(*args, **kwargs):
                kwargs.pop("pin_memory", None)
                return fn(*args, **kwargs)

            return wrapped

        torch.empty = _drop_pin(_empty)
        torch.zeros = _drop_pin(_zeros)
        torch.tensor = _drop_pin(_tensor)
except Exception:  # never break interpreter start-up
    pass
