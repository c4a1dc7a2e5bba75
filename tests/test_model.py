from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from hvit_sweeps.config import ModelConfig, max_stages
from hvit_sweeps.model import (
    Attention,
    DropPath,
    PoolingLayer,
    build_model,
    count_flops,
    count_parameters,
)

TINY: dict[str, Any] = dict(embed_dims=(16, 32), depths=(1, 1), num_heads=(2, 2), drop_path_rate=0.0)


def _stages(count: int, **kwargs: Any) -> dict[str, Any]:
    """Config kwargs for ``count`` narrow one-block stages."""
    return dict(embed_dims=(8,) * count, depths=(1,) * count, num_heads=(1,) * count, **kwargs)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param(dict(embed_dims=(16,), depths=(1,), num_heads=(2,)), id="1-stage"),
        pytest.param(dict(embed_dims=(16, 32), depths=(1, 1), num_heads=(2, 2)), id="2-stages"),
        pytest.param(dict(), id="3-stages-default"),
        pytest.param(dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)), id="4-stages"),
        pytest.param(dict(embed_dims=(8, 16, 32), depths=(1, 1, 1), num_heads=(1, 2, 4), patch_size=2), id="patch-2"),
        pytest.param(
            dict(
                embed_dims=(8, 16, 32),
                depths=(1, 1, 1),
                num_heads=(1, 2, 4),
                in_chans=1,
                image_size=28,
                num_classes=10,
            ),
            id="mnist-odd-grid",
        ),
    ],
)
def test_forward_returns_one_logit_per_class(kwargs: dict[str, Any]) -> None:
    # Every valid layout, odd grids included, maps (B, C, H, W) images to (B, num_classes) logits.
    config = ModelConfig(**kwargs)
    model = build_model(config)
    x = torch.randn(2, config.in_chans, config.image_size, config.image_size)
    assert model(x).shape == (2, config.num_classes)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param(dict(depths=(2, 2)), "num_heads", id="lengths-differ"),
        pytest.param(dict(embed_dims=(64, 128, 100)), "embed_dims", id="dim-not-divisible-by-heads"),
        pytest.param(_stages(5), "patch_size", id="5-stages-patch-4"),
        pytest.param(_stages(4, patch_size=8), "patch_size", id="4-stages-patch-8"),
        pytest.param(dict(depths=(2, 0, 2)), "depths", id="zero-depth"),
        pytest.param(dict(embed_dims=(64, -128, 256)), "embed_dims", id="negative-dim"),
        pytest.param(dict(num_classes=0), "num_classes", id="zero-classes"),
        pytest.param(dict(patch_size=0), "patch_size", id="zero-patch"),
        pytest.param(dict(patch_size=5), "image_size", id="image-not-divisible-by-patch"),
        pytest.param(dict(embed_dims=(), depths=(), num_heads=()), "embed_dims", id="no-stages"),
        pytest.param(dict(drop_path_rate=1.0), "drop_path_rate", id="drop-path-one"),
        pytest.param(dict(mlp_ratio=0.0), "mlp_ratio", id="zero-mlp-ratio"),
    ],
)
def test_invalid_config_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    # An invalid config is rejected with a message that names the offending field.
    with pytest.raises(ValidationError) as info:
        ModelConfig(**kwargs)
    assert field in str(info.value)


def test_too_many_stages_message_states_the_grid() -> None:
    # The stage-count error says which grid is needed and which one the image gives.
    with pytest.raises(ValidationError, match=r"5 stages need a token grid of at least 9x9.*gives 8x8"):
        ModelConfig(**_stages(5))


def test_config_is_frozen_and_rejects_unknown_fields() -> None:
    # The config can't be mutated or given a misspelt field.
    config = ModelConfig()
    with pytest.raises(ValidationError):
        config.patch_size = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="embed_dim"):
        ModelConfig(embed_dim=(64,))  # type: ignore[call-arg]


def test_config_helpers_count_stages_and_blocks() -> None:
    # num_stages and total_depth follow the per-stage tuples.
    config = ModelConfig(embed_dims=(8, 16), depths=(3, 1), num_heads=(1, 2))
    assert (config.num_stages, config.total_depth) == (2, 4)


@pytest.mark.parametrize(
    ("image_size", "patch_size", "expected"),
    [(32, 4, 4), (28, 4, 4), (32, 2, 5), (32, 8, 3), (32, 32, 1), (24, 4, 4), (16, 4, 3)],
)
def test_max_stages_matches_halving_rule_and_validation(image_size: int, patch_size: int, expected: int) -> None:
    # max_stages counts one stage plus each halving g -> ceil(g/2) while g >= 2, and validation agrees.
    grid, halvings = image_size // patch_size, 0
    while grid >= 2:
        grid, halvings = math.ceil(grid / 2), halvings + 1
    assert max_stages(image_size, patch_size) == expected == halvings + 1

    ModelConfig(**_stages(expected, image_size=image_size, patch_size=patch_size))
    with pytest.raises(ValidationError):
        ModelConfig(**_stages(expected + 1, image_size=image_size, patch_size=patch_size))


def test_attention_matches_naive_reference() -> None:
    # The fused attention equals softmax(QK^T / sqrt(d)) V per head, then the output projection.
    dim, heads, b, n = 16, 4, 2, 5
    attn = Attention(dim, heads).double().eval()
    x = torch.randn(b, n, dim, dtype=torch.float64)
    q, k, v = F.linear(x, attn.qkv.weight, attn.qkv.bias).chunk(3, dim=-1)  # each (B, N, C)
    d = dim // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        weights = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(weights @ v[..., sl])
    expected = F.linear(torch.cat(outs, dim=-1), attn.proj.weight, attn.proj.bias)
    assert (attn(x) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize(("side", "new_side"), [(8, 4), (7, 4)])
def test_pooling_halves_grid_and_changes_width(side: int, new_side: int) -> None:
    # Pooling maps an HxW grid of C-wide tokens to a ceil(H/2) grid of C_next-wide tokens.
    pool = PoolingLayer(8, 12)
    tokens, hw = pool(torch.randn(2, side * side, 8), (side, side))
    assert hw == (new_side, new_side)
    assert tokens.shape == (2, new_side * new_side, 12)


def test_model_accepts_channels_last() -> None:
    # A channels_last model and input give the same logits as the default layout.
    model = build_model(ModelConfig(**TINY, image_size=16)).eval()
    x = torch.randn(2, 3, 16, 16)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected)


def test_tiny_model_overfits_a_fixed_batch() -> None:
    # A tiny model drives its loss on one fixed batch of 32 images to under 10% of the start.
    model = build_model(ModelConfig(**TINY, num_classes=4, image_size=16))
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 4, (32,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])


def test_bf16_autocast_step_on_cpu() -> None:
    # Under CPU bf16 autocast the logits are bf16 and the loss and gradients stay finite.
    model = build_model(ModelConfig(**TINY, num_classes=4, image_size=16))
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
    loss.backward()
    assert logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_drop_path_is_identity_in_eval_and_drops_whole_samples_in_train() -> None:
    # DropPath passes x through in eval; in training each sample is either zeroed or scaled by 1/(1-p).
    drop = DropPath(0.5)
    x = torch.ones(64, 4, 8)
    assert torch.equal(drop.eval()(x), x)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    zeroed = (per_sample == 0).all(dim=1)
    kept = (per_sample == 2).all(dim=1)
    assert (zeroed | kept).all()
    assert zeroed.any() and kept.any()


def test_drop_path_rates_rise_linearly_to_the_configured_rate() -> None:
    # Stochastic depth starts at 0 in the first block and reaches drop_path_rate in the last.
    model = build_model(ModelConfig(embed_dims=(8, 16), depths=(2, 3), num_heads=(1, 2), drop_path_rate=0.4))
    rates = [block.drop_path.p for stage in model.stages for block in stage]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_count_parameters_and_flops() -> None:
    # count_parameters sums every tensor; FLOPs are positive, grow with depth, and leave the mode alone.
    config = ModelConfig(**TINY)
    model = build_model(config).train()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    flops = count_flops(model, config)
    assert model.training
    deeper = config.model_copy(update=dict(depths=(2, 2)))
    assert 0 < flops < count_flops(build_model(deeper), deeper)


def test_attention_flops_are_counted() -> None:
    # The attention matmuls are part of the FLOP count (4 * N^2 * C per block, N tokens of width C).
    config = ModelConfig(embed_dims=(16,), depths=(1,), num_heads=(2,), image_size=16, drop_path_rate=0.0)
    model = build_model(config)
    n, c = config.grid_size**2, 16
    linear = 2 * n * c * (3 * c + c + 2 * 4 * c) + 2 * c * config.num_classes
    stem = 2 * n * c * 3 * config.patch_size**2
    assert count_flops(model, config) == linear + stem + 4 * n * n * c


def test_default_model_size() -> None:
    # The default PiT-lite is a small model of roughly 2-3 M parameters.
    config = ModelConfig()
    model = build_model(config)
    params = count_parameters(model)
    print(f"default: {params:,} params, {count_flops(model, config):,} FLOPs")
    assert 1.5e6 < params < 3.5e6
