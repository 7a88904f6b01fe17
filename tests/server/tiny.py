"""Tiny test artifacts made offline: a random Qwen2 model, a byte-level BPE tokenizer, a STOP checkpoint
in the authors' release layout, and a plain-torch reference of STOP's two-stage scoring.

Runs in the frontend venv (torch, transformers, peft); the server only ever sees the saved files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

HIDDEN = 64
K_STOP = 4
# Token ids past the tokenizer's vocabulary but inside the embedding matrix: the padded rows that real
# checkpoints (Qwen2: 151665 tokens, 151936 rows) also have; the [STOP] id lives there.
VOCAB_PADDING = 16

CORPUS = [
    "Solve the problem step by step. End with a final line of the form 'The answer is N'.",
    "Let x be the number of apples. Then 3x + 4 = 19, so x = 5. The answer is 5",
    "First compute 12 * 7 = 84, then subtract 9 to get 75. The answer is 75",
    "We add the digits: 1 + 2 + 3 = 6. The answer is 6",
    "0123456789 +-*/=()[]{}<>.,;:!?'\" abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
]


# Qwen2's own pre-tokenizer: transformers 5 rebuilds a qwen2 model's tokenizer with it (Qwen2Tokenizer), while
# sglang restores tokenizer.json's; with anything else the server and the frontend would tokenise differently.
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def make_tokenizer(out: Path):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", bos_token=None
    )
    fast.save_pretrained(out)
    return fast


def make_model(out: Path, seed: int = 0) -> Path:
    """Random 2-layer Qwen2 (fp32) + tokenizer saved as a Hugging Face model directory."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok) + VOCAB_PADDING,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
    )
    cfg.dtype = "float32"
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # visible logits spread, so greedy answers depend on the weights
        model.lm_head.weight.mul_(20.0)
    model.save_pretrained(out, safe_serialization=True)
    return out


def make_stop_checkpoint(model_dir: Path, out: Path, seed: int = 1, k: int = K_STOP, rank: int = 8) -> Path:
    """A STOP checkpoint in the authors' layout with random (nonzero) LoRA, head and [STOP] vector."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lcfg = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,  # random A and B: the adapter visibly changes the hidden states
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(base, lcfg, adapter_name="classifier")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    out.mkdir(parents=True, exist_ok=True)
    # The authors save the "classifier" adapter, which PEFT writes under adapter/classifier/, as .bin.
    peft_model.save_pretrained(out / "adapter", selected_adapters=["classifier"], safe_serialization=False)
    head = torch.nn.Linear(HIDDEN, 2)
    torch.nn.init.normal_(head.weight, std=0.1)
    torch.save(head.state_dict(), out / "classifier_head.pth")
    vec = torch.randn(HIDDEN)
    torch.save(
        {"assess_token": "[ASSESS]", "special_token_id": -1, "input_embedding": vec, "output_embedding": None},
        out / "assess_token_embedding.pth",
    )
    (out / "assess_token_config.json").write_text(
        json.dumps({"assess_token": "[ASSESS]", "special_token_id": -1, "num_assess_tokens": k,
                    "embedding_path": "assess_token_embedding.pth", "tokenizer_dir": "tokenizer"})
    )
    return out


class ReferenceScorer:
    """STOP's two-stage scoring in plain torch: base-model prefix KV, then k [STOP] embeddings with LoRA."""

    def __init__(self, model_dir: Path, ckpt: Path):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        adapter = ckpt / "adapter" / "classifier"
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(base, adapter).eval()
        cfg = json.loads((ckpt / "assess_token_config.json").read_text())
        self.k = int(cfg["num_assess_tokens"])
        emb = torch.load(ckpt / "assess_token_embedding.pth", map_location="cpu")
        self.vec = (emb["input_embedding"] if isinstance(emb, dict) else emb).float()
        self.head = torch.nn.Linear(self.vec.numel(), 2)
        self.head.load_state_dict(torch.load(ckpt / "classifier_head.pth", map_location="cpu"))

    @torch.no_grad()
    def hidden(self, ids: list[int]) -> torch.Tensor:
        x = torch.tensor([ids])
        with self.model.disable_adapter():
            past = self.model(input_ids=x, use_cache=True).past_key_values
        emb = self.vec.view(1, 1, -1).expand(1, self.k, -1)
        pos = torch.arange(len(ids), len(ids) + self.k).unsqueeze(0)
        out = self.model(inputs_embeds=emb, past_key_values=past, position_ids=pos, output_hidden_states=True)
        return out.hidden_states[-1][0, -1]

    @torch.no_grad()
    def score(self, ids: list[int]) -> float:
        return float(torch.softmax(self.head(self.hidden(ids)), dim=-1)[1])
