"""Character-level tokenizer for the testbed, built offline as a real ``PreTrainedTokenizerFast``.

One token per character (WordLevel over single chars), a BOS added by the post-processor so
``tokenizer(question)`` gives exactly what the model was trained on, and a Fuse decoder so decoding
round-trips without spaces. ``save_pretrained`` output loads with ``AutoTokenizer``.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "[PAD]", "[BOS]", "[EOS]", "[UNK]"
SPECIALS = [PAD, BOS, EOS, UNK]
CHARS = list("0123456789+-=;QA")
VOCAB = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, VOCAB[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=128,
    )
