"""Attack invariants on tiny models: budget, range, the clean-sr start, batching."""

from __future__ import annotations

import pytest
import torch

from sreval.attacks import IFGSM, parse_alpha
from sreval.attacks.common import deliver, in_chunks, per_sample
from sreval.errors import ConfigError
from tests.tiny import TinySR


def test_parse_alpha_forms() -> None:
    assert parse_alpha("1/255, 8/255,0.0314") == pytest.approx([1 / 255, 8 / 255, 0.0314])
    for bad in ("0", "-1/255", "2", "x", "1/0", "nan", ""):
        with pytest.raises(ConfigError):
            parse_alpha(bad)


@pytest.mark.parametrize("reference", ["hr", "clean-sr"])
def test_ifgsm_stays_in_budget_and_range(model: torch.nn.Module, reference: str) -> None:
    x = torch.rand(2, 3, 8, 10)
    hr = torch.rand(2, 3, 16, 20)
    eps = [2 / 255, 8 / 255]
    xa = IFGSM(model, eps=eps, steps=5, reference=reference)(x, hr)
    assert xa.shape == (4, 3, 8, 10)
    for i, e in enumerate(eps):
        d = (xa[2 * i:2 * i + 2] - x).abs().max().item()
        assert d <= e + 1e-6 and d > 0
    assert xa.min() >= 0 and xa.max() <= 1


def test_clean_sr_without_start_would_not_move(model: torch.nn.Module) -> None:
    """Eq. 1 at X0 has a zero gradient: the random start is what makes the attack move."""
    from sreval.attacks.common import mse_to, objective
    from sreval.attacks.optim import optimize
    from sreval.config import Method

    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    vg, _ = objective(model, mse_to(ref))
    still, trace = optimize(vg, x, per_sample(4 / 255, 1, x), 3, Method("ifgsm"), seeds=[(0, 0, 0)])
    assert torch.equal(still, x)
    assert trace.bad_grad.tolist() == [3]  # the evidence sees it: three steps of zero gradient
    moved = IFGSM(model, eps=4 / 255, steps=3, reference="clean-sr")(x)
    assert (moved - x).abs().max() > 3.5 / 255


def test_attack_increases_loss_with_budget(model: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        sr0 = model(x)
        xa = IFGSM(model, eps=[1 / 255, 4 / 255, 16 / 255], steps=10)(x)
        errs = [(model(xa[i:i + 1]) - sr0).square().mean().item() for i in range(3)]
    assert errs[0] < errs[1] < errs[2]


def test_batched_budgets_equal_one_at_a_time(model: torch.nn.Module) -> None:
    x = torch.rand(1, 3, 9, 11)
    hr = torch.rand(1, 3, 18, 22)
    eps = [1 / 255, 4 / 255, 8 / 255]
    together = IFGSM(model, eps=eps, steps=4, reference="hr")(x, hr)
    apart = torch.cat([IFGSM(model, eps=e, steps=4, reference="hr")(x, hr) for e in eps])
    assert (together - apart).abs().max().item() <= 1e-5


def test_deliver_rounds_to_8_bits_within_budget() -> None:
    x0 = torch.round(torch.rand(1, 3, 5, 5) * 255) / 255
    e = per_sample(0.0314, 1, x0)
    x = (x0 + (torch.rand_like(x0) * 2 - 1) * 0.0314).clamp(0, 1)
    q = deliver(x, x0, e)
    assert (q - x0).abs().max() <= 0.0314 + 1e-7
    assert torch.allclose(q * 255, torch.round(q * 255), atol=1e-4)


def test_in_chunks_halves_on_out_of_memory() -> None:
    sizes: list[int] = []

    def fn(sl: slice) -> torch.Tensor:
        n = sl.stop - sl.start
        sizes.append(n)
        if n > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1 GiB")
        return torch.arange(sl.start, sl.stop)

    assert in_chunks(fn, 7).tolist() == list(range(7))
    assert sizes[:2] == [7, 3] and max(sizes[2:]) <= 2


@pytest.mark.parametrize("reference", ["hr", "clean-sr"])
def test_fast_path_equals_simple_path(model: torch.nn.Module, reference: str) -> None:
    """Two same-size images x three budgets in one batch, in odd-sized chunks (as an
    out-of-memory halving would leave them), and one image at a time: the same result."""
    from sreval.attacks.basic import attack_image
    from sreval.config import BasicConfig

    x0 = torch.round(torch.rand(2, 3, 9, 11) * 255) / 255
    hr = torch.rand(2, 3, 18, 22)
    alphas = (1 / 255, 4 / 255, 8 / 255)
    together, _ = attack_image(model, x0, hr, BasicConfig(alphas, steps=4), reference, image_ids=[7, 8])
    chunked, _ = attack_image(model, x0, hr, BasicConfig(alphas, steps=4, batch=4), reference, image_ids=[7, 8])
    one = [attack_image(model, x0[i:i + 1], hr[i:i + 1], BasicConfig(alphas, steps=4, batch=1), reference,
                        image_ids=[7 + i])[0] for i in range(2)]
    simple = torch.stack([one[i][a] for a in range(3) for i in range(2)])
    assert (together - simple).abs().max().item() <= 1e-5
    assert (chunked - simple).abs().max().item() <= 1e-5


def test_same_size_groups_keep_order_and_limit() -> None:
    import numpy as np

    from sreval.attacks.basic import same_size_groups
    from sreval.data import Sample

    def s(h: int) -> Sample:
        return Sample(f"{h}", np.zeros((h, 4, 3), np.float32), np.zeros((2 * h, 8, 3), np.float32))

    groups = same_size_groups([s(4), s(5), s(4), s(4), s(5)], per_group=2)
    assert groups == [[0, 2], [3], [1, 4]]
