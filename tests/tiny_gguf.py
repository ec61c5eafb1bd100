"""A tiny random Llama written as a GGUF file by the gguf package, the way llama.cpp's converter writes one:
fp32 tensors under llama.cpp's names, query and key rows permuted for its rotary layout, and a byte-level BPE
tokenizer in the file's metadata. For the GGUF conversion's tests, without the big wheels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

HEADS, KV_HEADS, LAYERS, HIDDEN, FFN, CONTEXT = 4, 2, 2, 32, 64, 128
LAYER_TENSORS = {  # llama.cpp's name -> transformers' (under model.layers.N.)
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def _rotary_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's order of a query or key projection's rows (it pairs rotary halves differently)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_tiny_llama_gguf(path: Path, seed: int = 0) -> Any:
    """Write the GGUF file; return the transformers model it holds (LlamaForCausalLM, eval mode)."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    tokens = [*bytes_to_unicode().values(), "Ġt", "Ġth", "<|endoftext|>"]
    end = len(tokens) - 1
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=CONTEXT,
        bos_token_id=end,
        eos_token_id=end,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    state = {name: tensor.detach().numpy().astype(np.float32) for name, tensor in model.state_dict().items()}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * end + [3])  # normal tokens, then one control token
    writer.add_token_merges(["Ġ t", "Ġt h"])
    writer.add_bos_token_id(end)
    writer.add_eos_token_id(end)
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for layer in range(LAYERS):
        for short, long in LAYER_TENSORS.items():
            weight = state[f"model.layers.{layer}.{long}.weight"]
            if short in ("attn_q", "attn_k"):
                weight = _rotary_rows(weight, HEADS if short == "attn_q" else KV_HEADS)
            writer.add_tensor(f"blk.{layer}.{short}.weight", weight)
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
