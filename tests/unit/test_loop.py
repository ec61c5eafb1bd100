"""run/loop.py: the pieces of the one training loop that decide what a run records, without a model."""

from __future__ import annotations

import torch

from peftbench.run import loop


def test_the_loss_is_read_at_the_first_step_then_at_most_once_a_second(monkeypatch) -> None:
    clock = iter([0.0, 0.1, 0.2, 0.5, 1.5, 1.6, 1.7])
    monkeypatch.setattr(loop, "now", lambda: next(clock))
    reader = loop._LossReader(torch.device("cpu"))  # reads now() once: 0.0
    assert reader.add(torch.tensor(2.0), first_step=True) == 2.0  # the first step is always read (now: 0.1)
    assert reader.add(torch.tensor(4.0), first_step=False) is None  # 0.2 - 0.1 < 1 s: left on the device
    assert reader.add(torch.tensor(6.0), first_step=False) is None  # 0.5
    assert reader.add(torch.tensor(8.0), first_step=False) == 6.0  # 1.5: the mean of the three unread steps
    assert reader.add(torch.tensor(10.0), first_step=False) is None  # 1.7
    assert reader.epoch_mean() == 6.0  # every step counted once: (2 + 4 + 6 + 8 + 10) / 5


def test_a_run_predicting_one_class_is_called_collapsed() -> None:
    assert loop.collapse_note(0.95, "evaluation") == "95.0% of evaluation predictions are one class"
    assert loop.collapse_note(0.949, "test") is None


def _padded(lengths: list[int], left: bool = False) -> dict[str, torch.Tensor]:
    width = max(lengths)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        if left:
            mask[row, width - length :] = 1
        else:
            mask[row, :length] = 1
    rows = torch.arange(len(lengths)).unsqueeze(1)
    ids = (100 * rows + torch.arange(width) + 1) * mask  # 0 is padding; id // 100 is the row
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.arange(len(lengths)) % 2}


def test_a_batch_of_two_length_clusters_is_split_where_least_is_padded() -> None:
    lengths = [30, 5, 30, 6, 29, 5, 30, 4, 5, 28, 6, 30, 5, 29, 30, 6, 4, 30]
    batch = _padded(lengths)
    parts = loop.split_by_length(batch)
    assert [p["input_ids"].shape for p in parts] == [(9, 6), (9, 30)]  # 18 x 30 computed before, 9 x 6 + 9 x 30 now
    for part in parts:  # each row whole: its real tokens, its label, and no column that none of its rows needs
        for ids, mask, label in zip(part["input_ids"], part["attention_mask"], part["labels"]):
            row = int(ids[0]) // 100
            assert torch.equal(ids[mask.bool()], batch["input_ids"][row][batch["attention_mask"][row].bool()])
            assert label == batch["labels"][row]
        assert part["attention_mask"][:, -1].any()
    assert sorted(sum((p["attention_mask"].sum(-1).tolist() for p in parts), [])) == sorted(lengths)


def test_a_left_padded_batch_loses_its_padding_on_the_left() -> None:
    parts = loop.split_by_length(_padded([3, 3, 3, 3, 3, 3, 3, 3, 20, 20, 20, 20, 20, 20, 20, 20], left=True))
    short = parts[0]
    assert short["attention_mask"].shape == (8, 3) and bool(short["attention_mask"].all())
    assert short["input_ids"][0].tolist() == [18, 19, 20]  # the last three positions of the padded batch


def test_a_batch_is_left_whole_where_splitting_saves_little_or_a_part_would_be_tiny() -> None:
    assert len(loop.split_by_length(_padded([20, 19, 20, 18, 20, 19, 20, 20] * 2))) == 1  # < 5% saved
    assert len(loop.split_by_length(_padded([2] * 4 + [40] * 12))) == 1  # the short part would have 4 rows


class _OneProcess:
    """What train_step asks of accelerate's Accelerator, in one process."""

    device = torch.device("cpu")

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model):  # noqa: ANN001, ANN201
        from contextlib import nullcontext

        return nullcontext()


def test_a_split_step_computes_the_gradient_of_the_whole_batch() -> None:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    size = {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 32}
    config = BertConfig(vocab_size=2000, **size)
    model = BertForSequenceClassification(config).eval()  # no dropout: the two steps draw nothing at random
    batch = _padded([4, 30, 5, 29, 4, 30, 6, 28, 5, 30, 4, 29, 6, 30, 5, 30])
    grads, losses = [], []
    for split in (False, True):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)

        def keep() -> None:
            grads.append([p.grad.clone() for p in model.parameters()])

        losses.append(loop.train_step(model, batch, optimizer, scheduler, _OneProcess(), keep, split))
    assert len(loop.split_by_length(batch)) == 2
    assert torch.allclose(losses[0], losses[1], atol=1e-6)
    for whole, in_parts in zip(*grads):
        assert torch.allclose(whole, in_parts, atol=1e-6, rtol=1e-4)
