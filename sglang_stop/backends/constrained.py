"""Grammar-constrained sampling for the in-process backend, with xgrammar (what SGLang's server uses).

Each constrained request owns a ``GrammarMatcher``; per decode step the scheduler asks every
constrained row for its token bitmask and applies it to that row's logits only, so rows with
different constraints (and free rows) still decode in one batch. ``dtype`` maps to a regex exactly
as SGLang's ``RuntimeEndpoint`` does, so a program behaves the same here and against a server.
"""

from __future__ import annotations

import json
import threading
import warnings
from typing import Any

import torch
from sglang.lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

_DTYPE_REGEX = {"int": REGEX_INT, "float": REGEX_FLOAT, "str": REGEX_STR, "bool": REGEX_BOOL}
_DTYPE_STOPS = {"int": [" ", "\n"], "float": [" ", "\n"]}


def resolve_dtype(sp: SglSamplingParams) -> None:
    """``sp.dtype`` -> ``sp.regex`` (and the stop strings), as ``RuntimeEndpoint._handle_dtype_to_regex``."""
    if sp.dtype is None:
        return
    name = sp.dtype if isinstance(sp.dtype, str) else getattr(sp.dtype, "__name__", str(sp.dtype))
    if name not in _DTYPE_REGEX:
        raise ValueError(f"dtype: {sp.dtype!r} is not one of int, float, str, bool")
    if sp.regex is not None:
        warnings.warn(f"Both dtype and regex are set. Only dtype will be used. dtype: {sp.dtype}, regex: {sp.regex}")
    stop = [sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])
    sp.stop = stop + _DTYPE_STOPS.get(name, [])
    sp.regex = _DTYPE_REGEX[name]


def tokenizer_info(tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> Any:
    """xgrammar's view of the vocabulary. Raw (e.g. character-level) vocabularies are rebuilt from the
    decoded tokens with special tokens blanked, or xgrammar would let ``<s>`` spell literal text."""
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))
    if info.vocab_type != xgr.VocabType.RAW:
        return info
    special = set(tokenizer.all_special_ids)
    vocab = ["" if i in special else tokenizer.decode([i]) for i in range(len(tokenizer))]
    return xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=sorted(stop_ids))


class Grammars:
    """Compiles (and caches) grammars for one tokenizer; xgrammar is imported on first use."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int], json_whitespace: int | None = None):
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, stop_ids
        self.json_whitespace = json_whitespace  # None: any whitespace (the server's default); 0: none
        self._compiler: Any = None
        self._lock = threading.Lock()
        self._stop_only: torch.Tensor | None = None

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr

                info = tokenizer_info(self.tokenizer, self.vocab_size, self.stop_ids)
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
                self._stop_only = xgr.allocate_token_bitmask(1, self.vocab_size)
                self._stop_only.zero_()
                for t in self.stop_ids:
                    self._stop_only[0, t // 32] |= 1 << (t % 32)
            return self._compiler

    def constraint(self, regex: str | None, json_schema: str | dict | None) -> RowConstraint | None:
        """A fresh matcher for one request (compile errors surface as ValueError naming the field)."""
        if regex is None and json_schema is None:
            return None
        compiler = self._get_compiler()
        try:
            if json_schema is not None:
                schema = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
                ws = self.json_whitespace
                grammar = compiler.compile_json_schema(
                    schema, any_whitespace=ws != 0, max_whitespace_cnt=ws if ws else None
                )
            else:
                grammar = compiler.compile_regex(regex)
        except Exception as e:  # xgrammar raises RuntimeError/ValueError with the parser's message
            field = "json_schema" if json_schema is not None else "regex"
            raise ValueError(f"{field}: cannot compile: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        import xgrammar as xgr

        assert self._stop_only is not None
        return RowConstraint(xgr.GrammarMatcher(grammar), self.vocab_size, self._stop_only)


class RowConstraint:
    """One request's grammar state: the next-token bitmask is filled once per accepted token."""

    def __init__(self, matcher: Any, vocab_size: int, stop_only: torch.Tensor):
        import xgrammar as xgr

        self.matcher = matcher
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self._stop_only = stop_only
        self._filled = False

    def mask(self) -> torch.Tensor:
        """The [1, ceil(V/32)] int32 bitmask of tokens the grammar allows next."""
        if not self._filled:
            self.matcher.fill_next_token_bitmask(self.bitmask)
            self._filled = True
        return self.bitmask

    def accept(self, tok: int) -> None:
        if not self.matcher.accept_token(tok):
            raise RuntimeError(f"grammar rejected token {tok} that its own mask allowed")
        self._filled = False

    def only_stop_left(self) -> bool:
        """The grammar is complete and allows nothing but a stop token: finish without sampling it."""
        return self.matcher.is_terminated() or bool(torch.equal(self.mask(), self._stop_only))


def apply_masks(logits: torch.Tensor, masks: dict[int, torch.Tensor]) -> None:
    """Set disallowed logits to -inf in place, only in the rows that carry a constraint."""
    if not masks:
        return
    import xgrammar as xgr

    rows = sorted(masks)
    bm = torch.cat([masks[i] for i in rows])
    full = torch.full((logits.shape[0], bm.shape[1]), -1, dtype=bm.dtype)
    full[rows] = bm
    xgr.apply_token_bitmask_inplace(logits, full.to(logits.device), vocab_size=logits.shape[-1], indices=rows)
