"""Narrow, documented adaptations to library versions. Each one says what broke and how it is detected.

Keep this file small: a workaround belongs here only when the upstream API is right in spirit and only a
name or signature drifted, so the fix can be checked by a test and dropped once upstream catches up.
"""

from __future__ import annotations

import inspect
from typing import Any


def accept_past_key_values(peft_model: Any) -> None:
    """Let peft's prefix tuning reach a backbone whose cache argument is called `cache`.

    peft (<= 0.21) builds the prefix as a transformers Cache and calls the backbone with
    `past_key_values=...`, but first checks that name in the backbone's signature. transformers 5 renamed
    BERT's argument to `cache` (the old name survives only through a deprecation shim that the signature
    does not show), so peft refuses with "Model does not support past key values". The backbone consumes
    the cache exactly as before: prefix keys/values are prepended in every layer, the position ids are
    offset by the prefix length (as in transformers 4) and peft extends the attention mask. So we give
    this one module instance a forward that takes the old name and passes it on under the new one.
    tests/test_methods.py checks that gradients reach the prefix and that padding leaves logits unchanged.

    Decoder classifiers (Llama, Qwen, GPT-2...) take `cache` in the classifier's own forward: that one is
    renamed, so that peft hands the prefix to the whole classifier, which pools the last real token. Were
    the backbone renamed, peft would call it alone and classify its second output (BERT's pooler output,
    but a decoder's cache: "linear(): argument 'input' must be Tensor, not DynamicCache").
    tests/test_decoders.py runs prefix tuning on seven decoder families.
    """
    classifier = peft_model.base_model
    if _renamed_cache(classifier):
        _accept_old_name(classifier)
        return
    backbone_name = getattr(peft_model, "transformer_backbone_name", None)
    if backbone_name is None:
        return
    backbone = classifier.get_submodule(backbone_name)
    if _renamed_cache(backbone):
        _accept_old_name(backbone)
    # else either nothing drifted, or this is a model we do not know how to adapt


def _renamed_cache(module: Any) -> bool:
    parameters = inspect.signature(module.forward).parameters
    return "cache" in parameters and "past_key_values" not in parameters


def _accept_old_name(module: Any) -> None:
    """Give this one module instance a forward that takes `past_key_values` and passes it on as `cache`."""
    forward_with_cache = module.forward

    def forward(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        return forward_with_cache(*args, cache=past_key_values, **kwargs)

    module.forward = forward
