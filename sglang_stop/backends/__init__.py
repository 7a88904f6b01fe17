"""Where tokens come from: one module per backend (local = in-process HF model; endpoint = SGLang server;
fleet = several SGLang servers as one)."""
