"""The registry's entries, one keyword-only Method each: the reference's five first, in its column order.
Adding a method means adding an entry here; the tests pick it up."""

from __future__ import annotations

from typing import Any

from peftbench.methods.registry import register
from peftbench.methods.sweeps import swept
from peftbench.models.compat import accept_past_key_values

PEFT_DOCS = "peft documentation and examples"

# The reference's five, with the reference's settings (SPEC.md), in the reference's column order.
register(
    name="full",
    summary="full fine-tuning: every weight of the model is trained",
    recommended_lr=1e-4,
    source=swept("full", "SPEC.md gives 2e-5 for BERT-base over thousands of steps"),
)
register(
    name="prefix-tuning",
    summary="prefix tuning: trained key/value prefixes in every attention layer",
    recommended_lr=3e-2,
    peft_config_class="PrefixTuningConfig",
    hyperparameters={"num_virtual_tokens": 20},
    after_wrap=accept_past_key_values,
    source=swept(
        "prefix-tuning", "all three at the majority class after 32 steps: the tie went to the lowest dev loss"
    ),
)
register(
    name="prompt-tuning",
    summary="prompt tuning: trained virtual token embeddings prepended to the input",
    recommended_lr=3e-2,
    peft_config_class="PromptTuningConfig",
    hyperparameters={"num_virtual_tokens": 20},
    source=swept(
        "prompt-tuning", "all three at the majority class after 32 steps; Lester et al. train far longer, at 0.3"
    ),
)
register(
    name="p-tuning",
    summary="P-tuning: virtual token embeddings produced by a trained MLP prompt encoder",
    recommended_lr=1e-1,
    peft_config_class="PromptEncoderConfig",
    hyperparameters={"num_virtual_tokens": 20, "encoder_hidden_size": 128},
    source=swept("p-tuning", "SPEC.md: 1e-3; after 32 steps only 1e-1 moved off the majority class, and barely"),
)
register(
    name="lora",
    summary="LoRA: trained low-rank updates of the attention projections (peft's default targets)",
    recommended_lr=3e-3,
    peft_config_class="LoraConfig",
    hyperparameters={"r": 8, "lora_alpha": 16, "lora_dropout": 0.1},
    targets="attention",
    source=swept("lora", "SPEC.md: 3e-4 up to 1e-3, for longer runs"),
)

# Beyond the reference. Sizes divide the widths of BERT-family encoders (32 in the tests, 384, 768, 1024).
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1}
register(
    name="rslora",
    summary="rank-stabilised LoRA: LoRA scaled by alpha/sqrt(r)",
    recommended_lr=3e-3,
    peft_config_class="LoraConfig",
    hyperparameters={**LORA, "use_rslora": True},
    targets="attention",
    source=swept("rslora", "the best rate is the grid's highest: a higher one was not tried"),
)
register(
    name="dora",
    summary="DoRA: LoRA on the direction, plus a trained magnitude per output",
    recommended_lr=1e-3,
    peft_config_class="LoraConfig",
    hyperparameters={**LORA, "use_dora": True},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="pissa",
    summary="PiSSA: LoRA initialised from the principal singular vectors of each weight",
    recommended_lr=3e-4,
    peft_config_class="LoraConfig",
    hyperparameters={**LORA, "lora_dropout": 0.0, "init_lora_weights": "pissa_niter_4"},
    targets="attention",
    source="PiSSA paper; peft docs",
)


def _adalora_schedule(total_steps: int) -> dict[str, Any]:
    # The AdaLoRA paper's shape: ranks fixed for the first ~10% of steps, pruned towards the budget in the
    # middle, frozen for the last ~20%. Integer steps; a budgeting phase of at least one step.
    tinit, tfinal = total_steps // 10, total_steps // 5
    return {
        "total_step": max(total_steps, tinit + tfinal + 1),
        "tinit": tinit,
        "tfinal": tfinal,
        "deltaT": max(1, total_steps // 20),
    }


def _adalora_after_step(model: Any, step: int) -> None:
    model.base_model.update_and_allocate(step)


register(
    name="adalora",
    summary="AdaLoRA: LoRA in SVD form whose rank budget moves to the weights that matter",
    recommended_lr=3e-3,
    peft_config_class="AdaLoraConfig",
    hyperparameters={"init_r": 12, "target_r": 8, "lora_alpha": 16, "lora_dropout": 0.1},
    schedule=_adalora_schedule,
    after_step=_adalora_after_step,
    targets="attention",
    source="AdaLoRA paper (init_r 12, target_r 8 on GLUE); lr as lora here",
)

register(
    name="ia3",
    summary="IA3: trained scaling vectors on keys, values and the feed-forward",
    recommended_lr=3e-2,
    peft_config_class="IA3Config",
    hyperparameters={},
    source=swept("ia3", "T-Few used 3e-3 over far more steps; the best rate is the grid's highest"),
)
register(
    name="loha",
    summary="LoHa: Hadamard product of two low-rank updates",
    recommended_lr=1e-3,
    peft_config_class="LoHaConfig",
    hyperparameters={"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="lokr",
    summary="LoKr: Kronecker-product low-rank updates",
    recommended_lr=1e-3,
    peft_config_class="LoKrConfig",
    hyperparameters={"r": 8, "alpha": 16, "target_modules": ["query", "value"]},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="vera",
    summary="VeRA: shared frozen random low-rank matrices with trained scaling vectors",
    recommended_lr=6e-2,
    peft_config_class="VeraConfig",
    hyperparameters={"r": 256, "target_modules": ["query", "value"]},
    targets="attention",
    source=swept("vera", "SPEC.md and the VeRA paper: 2e-2, over more steps; the best rate is the grid's highest"),
)
register(
    name="fourierft",
    summary="FourierFT: trained sparse spectral coefficients of each weight update",
    recommended_lr=5e-2,
    peft_config_class="FourierFTConfig",
    hyperparameters={"n_frequency": 256, "scaling": 100.0, "target_modules": ["query", "value"]},
    targets="attention",
    source="FourierFT paper (GLUE)",
)
register(
    name="oft",
    summary="OFT: trained block-diagonal orthogonal rotations of the weights",
    recommended_lr=1e-4,
    peft_config_class="OFTConfig",
    hyperparameters={"r": 0, "oft_block_size": 32, "target_modules": ["query", "value"]},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="boft",
    summary="BOFT: orthogonal rotations factored as butterflies",
    recommended_lr=3e-4,
    peft_config_class="BOFTConfig",
    hyperparameters={"boft_block_size": 4, "boft_n_butterfly_factor": 1, "target_modules": ["query", "value"]},
    targets="attention",
    source="BOFT paper; peft docs",
)
register(
    name="hra",
    summary="HRA: trained chains of Householder reflections",
    recommended_lr=1e-3,
    peft_config_class="HRAConfig",
    hyperparameters={"r": 8, "target_modules": ["query", "value"]},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="miss",
    summary="MiSS: trained shards shared across each weight",
    recommended_lr=1e-3,
    peft_config_class="MissConfig",
    hyperparameters={"r": 32, "target_modules": ["query", "value"]},
    targets="attention",
    source=PEFT_DOCS,
)
register(
    name="ln-tuning",
    summary="LN tuning: only the LayerNorm weights and biases are trained",
    recommended_lr=3e-3,
    peft_config_class="LNTuningConfig",
    hyperparameters={"target_modules": ["LayerNorm"]},
    targets="norms",
    source=swept("ln-tuning", "all three at the majority class after 32 steps: the tie went to the lowest dev loss"),
)
register(
    name="bitfit",
    summary="BitFit: only the bias terms are trained (peft has no BitFit: a parameter selection)",
    recommended_lr=3e-3,
    trainable=lambda name: name.endswith(".bias"),
    source=swept(
        "bitfit",
        "BitFit paper: 1e-4..1e-3 over many epochs; all three at the majority class after 32 steps: the tie went "
        "to the lowest dev loss",
    ),
)
