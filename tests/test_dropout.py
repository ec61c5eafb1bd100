"""bulk_dropout must be dropout: each element kept independently (of its neighbours, in a word and across
words, and of the previous draw) at the keep rate it promises, the expectation kept, gradients through the
same mask saved as one byte, seeded reproducibility, and torch's own dropout back after the block.
The statistical tests are seeded, so they pass or fail the same way every time."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from peftbench.run.dropout import LANES, bulk_dropout, bulk_masks, dropout_scale, dropped_lanes, keep_mask

SIGNIFICANCE = 1e-3


def kept(p: float, count: int = 1_000_000) -> np.ndarray:
    return (bulk_dropout(torch.ones(count), p) != 0).numpy()


def independence_p_value(first: np.ndarray, second: np.ndarray) -> float:
    table = [[np.sum(first & second), np.sum(first & ~second)], [np.sum(~first & second), np.sum(~first & ~second)]]
    return float(stats.chi2_contingency(table)[1])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_keep_rate_is_the_promised_one_in_every_lane(p):
    torch.manual_seed(0)
    mask = kept(p)
    keep = 1 - dropped_lanes(p) / LANES
    assert stats.binomtest(int(mask.sum()), mask.size, keep).pvalue > SIGNIFICANCE
    # each 64-bit word feeds four neighbouring elements: a biased lane would show at one position mod 4
    counts = [[mask[lane::4].sum(), (~mask[lane::4]).sum()] for lane in range(4)]
    assert stats.chi2_contingency(counts)[1] > SIGNIFICANCE


@pytest.mark.parametrize("lag", [1, 2, 3, 4, 5, 8, 384])
def test_neighbouring_elements_are_independent(lag):
    torch.manual_seed(1)
    mask = kept(0.1)
    assert independence_p_value(mask[:-lag], mask[lag:]) > SIGNIFICANCE


def test_successive_draws_are_independent_and_seeded_draws_repeat():
    torch.manual_seed(7)
    first, second = kept(0.1), kept(0.1)
    assert independence_p_value(first, second) > SIGNIFICANCE
    torch.manual_seed(7)
    assert np.array_equal(kept(0.1), first)


def test_a_biased_mask_fails_these_tests():
    # the tests above can see a fault: neighbours that share their fate, or a rate off by half a point
    rng = np.random.default_rng(0)
    mask = rng.random(1_000_000) >= 0.1
    mask[1::2] = mask[::2] | (rng.random(500_000) < 0.02)
    assert independence_p_value(mask[:-1], mask[1:]) < SIGNIFICANCE
    off_rate = rng.random(1_000_000) >= 0.105
    assert stats.binomtest(int(off_rate.sum()), off_rate.size, 0.9).pvalue < SIGNIFICANCE


def test_the_mean_is_kept_with_one_scale():
    torch.manual_seed(0)
    y = bulk_dropout(torch.ones(400_000), 0.2)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    scale = LANES / (LANES - dropped_lanes(0.2))
    assert torch.all(y[y != 0] == torch.tensor(scale, dtype=y.dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_in_half_precision_kept_elements_are_scaled_as_torch_s_dropout_scales_them(dtype):
    x = torch.randn(200_000).to(dtype)
    torch.manual_seed(1)
    ours = bulk_dropout(x, 0.1)
    torch.manual_seed(1)
    theirs = F.dropout(x, 0.1)
    kept = (ours != 0) & (theirs != 0)
    assert kept.sum() > 150_000
    assert torch.equal(ours[kept], theirs[kept])  # same value wherever both kept the element
    assert torch.equal(ours[kept], x[kept] * torch.tensor(1 / 0.9, dtype=dtype))


def test_gradient_goes_through_the_same_mask_saved_as_one_byte():
    x = torch.randn(1000, requires_grad=True)
    saved: list[torch.dtype] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.dtype) or t, lambda t: t):
        y = bulk_dropout(x, 0.2)
    assert saved == [torch.bool]
    y.sum().backward()
    assert torch.allclose(x.grad, (y != 0).float() * (LANES / (LANES - dropped_lanes(0.2))))


def test_dtype_shape_eval_and_what_goes_to_torch():
    x = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    y = bulk_dropout(x, 0.3)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and not torch.equal(y, x)
    assert bulk_dropout(x, 0.3, training=False) is x
    assert bulk_dropout(x, 0.0) is x
    z = x.clone()
    out = bulk_dropout(z, 0.3, inplace=True)  # torch's in-place dropout
    assert out.data_ptr() == z.data_ptr() and (z == 0).any()
    assert torch.equal(bulk_dropout(x, 1.0), torch.zeros_like(x))


def test_the_block_swaps_every_dropout_call_and_restores_torch():
    torch_dropout = F.dropout
    module = torch.nn.Dropout(0.25).train()
    x = torch.ones(5000)
    with bulk_masks():
        assert F.dropout is bulk_dropout
        torch.manual_seed(3)
        through_module = module(x)
    torch.manual_seed(3)
    assert torch.equal(through_module, bulk_dropout(x, 0.25))  # nn.Dropout went through bulk_dropout
    assert F.dropout is torch_dropout
    with pytest.raises(RuntimeError):
        with bulk_masks():
            raise RuntimeError("a failing step")
    assert F.dropout is torch_dropout
    with bulk_masks(enabled=False):
        assert F.dropout is torch_dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_and_backward_are_input_times_mask_times_scale_bit_for_bit(dtype):
    # how the mask is applied may change for speed, never the values: runs stay those of the one formula
    x = torch.randn(64, 9, 31).to(dtype).requires_grad_()
    grad = torch.randn(64, 9, 31).to(dtype)
    torch.manual_seed(5)
    y = bulk_dropout(x, 0.1)
    y.backward(grad)
    torch.manual_seed(5)
    keep = keep_mask(x.numel(), dropped_lanes(0.1)).view(x.shape).to(dtype)
    scale = dropout_scale(0.1, dropped_lanes(0.1), dtype)
    assert torch.equal(y, x.detach() * keep * scale)
    assert torch.equal(x.grad, grad * keep * scale)
