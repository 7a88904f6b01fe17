"""Shared fixtures: a tiny random Llama with a character tokenizer, built offline in the test."""

from __future__ import annotations

import pytest
import torch


def make_char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    chars = list("0123456789+-=;QA .abcdefghijklmnopqrstuvwxyz")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def make_tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg).eval()
    from sglang_stop.attention import use_gqa_sdpa

    use_gqa_sdpa(model)  # what load_model does: the GQA attention path is the one under test
    return model


@pytest.fixture(scope="session")
def tiny_lm():
    tok = make_char_tokenizer()
    return make_tiny_llama(len(tok)), tok
