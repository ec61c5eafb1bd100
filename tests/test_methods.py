import pytest
import torch

from peftbench.errors import UserError
from peftbench.methods import GROUPS, REGISTRY, parse_methods
from peftbench.models.classifier import load_classifier
from peftbench.run.measure import count_parameters


def fresh(tiny_model, method_name):
    torch.manual_seed(0)
    model = load_classifier(str(tiny_model), 2, ["neg", "pos"], pad_token_id=0)
    return REGISTRY[method_name].build(model)


def test_prefix_tuning_trains_the_prefix(tiny_model):
    model = fresh(tiny_model, "prefix-tuning")
    model.train()
    ids = torch.randint(5, 500, (3, 9))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 1]))
    out.loss.backward()
    prefix = [p for n, p in model.named_parameters() if "prompt_encoder" in n]
    assert prefix and all(p.grad is not None and p.grad.abs().sum() > 0 for p in prefix)


@pytest.mark.parametrize("method_name", GROUPS["seed"])
def test_right_padding_does_not_change_logits(tiny_model, method_name):
    model = fresh(tiny_model, method_name).eval()
    ids = torch.randint(5, 500, (1, 7))
    padded = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 7, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        in_batch = model(input_ids=padded, attention_mask=mask).logits
    torch.testing.assert_close(alone, in_batch, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method_name", ["prefix-tuning", "prompt-tuning", "p-tuning"])
def test_virtual_tokens_change_the_output(tiny_model, method_name):
    """The learnt prompt must actually reach the classifier, not be masked away."""
    model = fresh(tiny_model, method_name).eval()
    ids = torch.randint(5, 500, (2, 7))
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        for name, parameter in model.named_parameters():
            if "prompt_encoder" in name:
                parameter.add_(torch.randn_like(parameter))
        after = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    assert not torch.allclose(before, after)


def test_head_is_trainable_and_counted_once(tiny_model):
    base_total, _ = count_parameters(load_classifier(str(tiny_model), 2, ["a", "b"], pad_token_id=0))
    lora = fresh(tiny_model, "lora")
    total, trainable = count_parameters(lora)
    head = 32 * 2 + 2
    adapters = 2 * 2 * (32 * 8 + 8 * 32)  # 2 layers × (query, value) × (A + B)
    assert trainable == adapters + head
    assert total == base_total + adapters  # peft's frozen copy of the head is not counted
    assert sum(p.numel() for p in lora.parameters()) == total + head  # ...though it exists


def test_method_names():
    assert parse_methods("seed") == ["full", "prefix-tuning", "prompt-tuning", "p-tuning", "lora"]
    assert parse_methods("lora, full,lora") == ["lora", "full"]
    with pytest.raises(UserError, match="unknown method 'lorax'"):
        parse_methods("lora,lorax")
    with pytest.raises(UserError, match="no method"):
        parse_methods(" , ")
