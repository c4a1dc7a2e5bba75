"""PiT-lite: a small hierarchical Vision Transformer for 32x32 images.

The model follows ViT (Dosovitskiy et al., "An Image is Worth 16x16 Words:
Transformers for Image Recognition at Scale", ICLR 2021) inside each stage and
PiT (Heo et al., "Rethinking Spatial Dimensions of Vision Transformers",
ICCV 2021) between stages: a strided depthwise convolution halves the token grid
and widens the channels, so later stages see fewer, wider tokens.

Differences from PiT, chosen to stay small and simple:

* no class token; the head classifies the mean of the final tokens,
* a convolutional patch stem with LayerNorm,
* pooling is a depthwise 3x3 stride-2 convolution followed by a pointwise one.

The module knows nothing about data, training or tracking. Everything it needs
comes from one frozen :class:`~hvit_sweeps.config.ModelConfig`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hvit_sweeps.config import ModelConfig

__all__ = [
    "Attention",
    "Block",
    "DropPath",
    "HierarchicalViT",
    "Mlp",
    "PatchEmbeddingConv",
    "PoolingLayer",
    "build_model",
    "count_flops",
    "count_parameters",
]


class PatchEmbeddingConv(nn.Module):
    """Cuts the image into non-overlapping patches and embeds each as a token."""

    def __init__(self, in_chans: int, dim: int, patch_size: int) -> None:
        """Builds the stem.

        Args:
            in_chans: Channels of the input image.
            dim: Width of the output tokens.
            patch_size: Side of a square patch; also the convolution stride.
        """
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Returns the tokens ``(B, N, C)`` and the grid size ``(H, W)``."""
        x = self.proj(x)  # (B, C, H, W)
        hw = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.norm(x), hw


class Attention(nn.Module):
    """Multi-head self-attention over a sequence of tokens."""

    def __init__(self, dim: int, num_heads: int, *, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        """Builds the layer.

        Args:
            dim: Token width; must be divisible by ``num_heads``.
            num_heads: Number of attention heads.
            attn_drop: Dropout on the attention weights, applied in training only.
            proj_drop: Dropout after the output projection.
        """
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps tokens ``(B, N, C)`` to tokens of the same shape."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        # The fused kernel takes dropout as an argument, so it must be zeroed by hand in eval.
        dropout_p = self.attn_drop if self.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)  # (B, heads, N, head_dim)
        x = x.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """The transformer's two-layer feed-forward network."""

    def __init__(self, dim: int, *, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        """Builds the network.

        Args:
            dim: Input and output width.
            mlp_ratio: Hidden width as a multiple of ``dim``.
            drop: Dropout after each linear layer.
        """
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, N, C)`` to ``(B, N, C)``."""
        x = self.drop1(self.act(self.fc1(x)))  # (B, N, hidden)
        return self.drop2(self.fc2(x))


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole samples.

    From Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016. Kept
    samples are scaled by ``1 / (1 - p)`` so the expected output is unchanged.
    """

    def __init__(self, p: float = 0.0) -> None:
        """Builds the layer.

        Args:
            p: Probability of dropping the branch for one sample.
        """
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zeroes the branch for random samples in training; identity otherwise."""
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # One draw per sample, broadcast over every other dimension.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Block(nn.Module):
    """A pre-norm transformer block: attention then MLP, each residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        """Builds the block.

        Args:
            dim: Token width.
            num_heads: Attention heads.
            mlp_ratio: MLP hidden width as a multiple of ``dim``.
            drop: Dropout after the attention projection and in the MLP.
            drop_path: Stochastic depth rate of both residual branches.
        """
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio=mlp_ratio, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps ``(B, N, C)`` to ``(B, N, C)``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PoolingLayer(nn.Module):
    """Halves the token grid and changes the width between two stages (PiT)."""

    def __init__(self, dim: int, dim_out: int) -> None:
        """Builds the layer.

        Args:
            dim: Width of the incoming tokens.
            dim_out: Width of the outgoing tokens.
        """
        super().__init__()
        # Depthwise then pointwise keeps the spatial mixing cheap at any width.
        self.depthwise = nn.Conv2d(dim, dim, kernel_size=3, stride=2, padding=1, groups=dim)
        self.pointwise = nn.Conv2d(dim, dim_out, kernel_size=1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        """Pools tokens ``(B, H*W, C)`` laid out on grid ``hw``.

        Returns:
            Tokens ``(B, ceil(H/2) * ceil(W/2), C_out)`` and the new grid size.
        """
        b, _, c = x.shape
        # reshape, not view: the transpose is never contiguous.
        x = x.transpose(1, 2).reshape(b, c, *hw)  # (B, C, H, W)
        x = self.pointwise(self.depthwise(x))  # (B, C_out, H', W')
        new_hw = (x.shape[-2], x.shape[-1])
        # flatten copies if the conv returned channels_last, so this works in both layouts.
        return x.flatten(2).transpose(1, 2), new_hw  # (B, N', C_out)


class HierarchicalViT(nn.Module):
    """PiT-lite: transformer stages joined by pooling layers, with a mean-pooled head."""

    def __init__(self, config: ModelConfig) -> None:
        """Builds the model.

        Args:
            config: The validated architecture.
        """
        super().__init__()
        self.config = config
        dims = config.embed_dims
        self.patch_embed = PatchEmbeddingConv(config.in_chans, dims[0], config.patch_size)
        # Only the first stage gets positions; the pooling convs carry them onward.
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size**2, dims[0]))
        self.pos_drop = nn.Dropout(config.dropout)
        rates = _drop_path_rates(config)
        self.stages = nn.ModuleList(_build_stage(config, i, rates) for i in range(config.num_stages))
        self.pools = nn.ModuleList(PoolingLayer(dims[i], dims[i + 1]) for i in range(config.num_stages - 1))
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], config.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(B, in_chans, H, W)`` to final-stage tokens ``(B, N, C)``."""
        x, hw = self.patch_embed(x)  # (B, N0, C0)
        x = self.pos_drop(x + self.pos_embed)
        # zip stops before the last stage, which has no pooling after it.
        for stage, pool in zip(self.stages, self.pools, strict=False):
            x, hw = pool(stage(x), hw)  # (B, N_next, C_next)
        return self.stages[-1](x)  # (B, N, C)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Maps tokens ``(B, N, C)`` to logits ``(B, num_classes)``.

        The order is LayerNorm per token, then the mean over tokens, then the
        linear head: the final norm acts per token, as the norms inside the
        pre-norm blocks do.
        """
        x = self.norm(x).mean(dim=1)  # (B, C)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Maps images ``(B, in_chans, H, W)`` to logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))


def _build_stage(config: ModelConfig, stage: int, rates: list[float]) -> nn.Sequential:
    """The blocks of one stage; ``rates`` holds the drop path rate of every block in the model."""
    first = sum(config.depths[:stage])
    blocks = [
        Block(
            config.embed_dims[stage],
            config.num_heads[stage],
            mlp_ratio=config.mlp_ratio,
            drop=config.dropout,
            drop_path=rates[first + j],
        )
        for j in range(config.depths[stage])
    ]
    return nn.Sequential(*blocks)


def _drop_path_rates(config: ModelConfig) -> list[float]:
    """Stochastic depth rate of every block, rising linearly from 0 (timm, PiT)."""
    return torch.linspace(0, config.drop_path_rate, config.total_depth).tolist()


def _init_weights(module: nn.Module) -> None:
    """timm's ViT init; convolutions keep PyTorch's default."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, config: ModelConfig) -> int:
    """FLOPs of one forward pass for one image, as counted by PyTorch.

    Counts matmuls, convolutions and attention (a multiply-add is two FLOPs);
    norms, activations and additions are not counted.

    Args:
        model: The model to measure; its train/eval mode is restored afterwards.
        config: The model's config, which gives the input shape.
    """
    param = next(model.parameters())
    shape = (1, config.in_chans, config.image_size, config.image_size)
    x = torch.zeros(shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        # The math backend runs attention as plain matmuls, which the counter sees on
        # every device; the fused CPU kernel is not in its registry and would count 0.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops()


def build_model(config: ModelConfig) -> HierarchicalViT:
    """Builds a freshly initialised model for ``config``."""
    return HierarchicalViT(config)
