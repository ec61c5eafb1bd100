"""lane_dropout must be dropout: the same keep rate in every lane, the expectation kept, gradients through
the mask, seeded reproducibility, and torch's own dropout back after the block."""

import pytest
import torch
import torch.nn.functional as F

from peftbench.run.dropout import LANES, cheaper_dropout, lane_dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_each_lane_drops_its_share_and_the_mean_is_kept(p):
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = lane_dropout(x, p)
    dropped = (y == 0).float()
    # each 64-bit word feeds four neighbouring elements: a biased lane would show at one position mod 4
    for lane in range(4):
        assert dropped[lane::4].mean().item() == pytest.approx(p, abs=0.005), lane
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    kept = y[y != 0]
    assert torch.all(kept == kept[0]) and kept[0].item() == pytest.approx(LANES / (LANES - round(p * LANES)))


def test_dtype_shape_eval_and_inplace():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    y = lane_dropout(x, 0.3)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and not torch.equal(y, x)
    assert lane_dropout(x, 0.3, training=False) is x
    assert lane_dropout(x, 0.0) is x
    z = x.clone()
    out = lane_dropout(z, 0.3, inplace=True)
    assert out.data_ptr() == z.data_ptr() and (z == 0).any()


def test_seeded_masks_repeat_and_fresh_draws_differ():
    x = torch.ones(10_000)
    torch.manual_seed(7)
    first, second = lane_dropout(x, 0.1), lane_dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(lane_dropout(x, 0.1), first)
    assert not torch.equal(first, second)


def test_gradient_goes_through_the_same_mask():
    x = torch.randn(1000, requires_grad=True)
    y = lane_dropout(x, 0.2)
    y.sum().backward()
    scale = LANES / (LANES - round(0.2 * LANES))
    assert torch.allclose(x.grad, (y != 0).float() * scale)


def test_the_block_swaps_every_dropout_call_and_restores_torch():
    torch_dropout = F.dropout
    module = torch.nn.Dropout(0.25).train()
    x = torch.ones(5000)
    with cheaper_dropout():
        assert F.dropout is lane_dropout
        torch.manual_seed(3)
        through_module = module(x)
    torch.manual_seed(3)
    assert torch.equal(through_module, lane_dropout(x, 0.25))  # nn.Dropout went through lane_dropout
    assert F.dropout is torch_dropout
    with pytest.raises(RuntimeError):
        with cheaper_dropout():
            raise RuntimeError("a failing step")
    assert F.dropout is torch_dropout
    with cheaper_dropout(enabled=False):
        assert F.dropout is torch_dropout
