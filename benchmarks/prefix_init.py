"""What a freshly initialised prefix does to a decoder before any training: the norms of the model's own keys and
values (per attention head, over the real tokens of a few sentences) beside those of peft's random prefix, and
how far the prefix moves the last token's hidden state, the one the classifier head reads (cosine with and
without it). One forward pass each, no training; the model and the prefix are built as a run builds them
(registry's prefix-tuning, seed 0).

    python benchmarks/prefix_init.py --models smollm2-135m-offline,gemma3-270m-offline

Keys are measured at the k_proj output (before RoPE, which keeps norms, and before a family's key norm, such as
Gemma-3's, which does not): a rough scale, not the exact keys the attention sees.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402
from bench_scale import machine  # noqa: E402

from peftbench.methods import REGISTRY  # noqa: E402
from peftbench.models.classifier import (  # noqa: E402
    Collator,
    configure_padding,
    load_classifier,
    load_config,
    load_tokenizer,
    resolve,
)

TEXTS = [
    "a gripping, funny and moving film",
    "the plot is a mess and the acting is worse",
    "房间很干净，服务也好，下次还来",
    "早餐一般，隔音很差",
]


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def own_norms(model: Any, batch: dict[str, torch.Tensor], size: int) -> tuple[list[float], list[float]]:
    """Mean norm per head of each layer's k_proj and v_proj outputs over the batch's real tokens."""
    real = batch["attention_mask"].bool()
    norms: dict[str, list[float]] = {"k_proj": [], "v_proj": []}

    def hook(kind: str):
        def record(_module: Any, _inputs: Any, output: torch.Tensor) -> None:
            per_head = output.reshape(*output.shape[:2], -1, size).norm(dim=-1)
            norms[kind].append(per_head[real].mean().item())

        return record

    handles = [
        module.register_forward_hook(hook(name.rsplit(".", 1)[-1]))
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in norms
    ]
    with torch.no_grad():
        model(**batch)
    for handle in handles:
        handle.remove()
    return norms["k_proj"], norms["v_proj"]


def last_hidden(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states[-1][:, -1]  # left padding: the last is real


def probe(model_name: str) -> list[str]:
    folder = resolve(model_name)
    tokenizer, config = load_tokenizer(folder), load_config(folder)
    configure_padding(tokenizer, config)
    batch = Collator(tokenizer, decoder=True)([dict(tokenizer(text)) for text in TEXTS])
    batch.pop("labels", None)
    size = head_dim(config)
    torch.manual_seed(0)
    base = load_classifier(folder, 2, ["neg", "pos"], tokenizer.pad_token_id, "eager").eval()
    keys, values = own_norms(base, batch, size)
    without = last_hidden(base, batch)
    torch.manual_seed(0)
    fresh = load_classifier(folder, 2, ["neg", "pos"], tokenizer.pad_token_id, "eager")
    prefixed = REGISTRY["prefix-tuning"].build(fresh).eval()
    weight = prefixed.prompt_encoder["default"].embedding.weight.detach()
    prefix = weight.reshape(weight.shape[0], config.num_hidden_layers, 2, -1, size).norm(dim=-1)
    cosine = torch.nn.functional.cosine_similarity(without, last_hidden(prefixed, batch), dim=-1)
    return [
        f"{model_name}: {config.num_hidden_layers} layers, head size {size}",
        f"  own keys per head: mean {sum(keys) / len(keys):.2f} over layers (first layer {keys[0]:.2f}); "
        f"own values: mean {sum(values) / len(values):.2f} (first layer {values[0]:.2f})",
        f"  fresh prefix: keys {prefix[:, :, 0].mean():.2f}, values {prefix[:, :, 1].mean():.2f} per head",
        f"  last token's hidden state with the fresh prefix vs without: cosine mean {cosine.mean():.3f} "
        f"(min {cosine.min():.3f}) over {len(TEXTS)} sentences",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="comma-separated decoders (named offline models or folders)")
    args = parser.parse_args()
    print(machine())
    for model_name in [m for m in args.models.split(",") if m]:
        print("\n".join(probe(model_name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
