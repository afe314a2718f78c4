"""Inference precision of a local model: float32, bfloat16, mixed, or mixed-float16.

Decoding one token with a 135M model on 2 CPU cores is bound by reading the weights, so storing them in
bfloat16 makes it faster. Casting the whole model (`bfloat16`) also runs the residual stream, the norms,
attention and the logits in bfloat16, and those rounding errors pile up over 30 layers and change greedy
outputs noticeably. `mixed` stores only the weights of the linear layers in bfloat16: their inputs are
rounded to bfloat16 for the product (accumulated in float32 by oneDNN, returned in bfloat16 and widened
again), and everything else stays float32.
The bundled weights are 4-bit (GGUF Q4_1) to begin with, so rounding them to bfloat16's 8-bit mantissa
changes them by far less than their quantisation already did.

`mixed-float16` is `mixed` for the prompt (many rows at once, where bfloat16 products are fast) and
float16 products for the one-row decoding steps: on CPUs whose oneDNN has no fast float16 matrix kernels
float16 prefill is slow, but its one-row products are the fastest of all and float16's 10-bit mantissa is
nearly exact (see `HalfDecodeLinear`). It keeps two copies of the linear weights, about as much memory
as float32.

The output projection (tied to the 49,152 x 576 token embedding, a fifth of the model) is a matrix-vector
product at every step; stored input-major it runs about twice as fast as nn.Linear's layout with the same
float32 numbers (see `InputMajorHead`), so every precision but `bfloat16` uses it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

PRECISIONS = ("float32", "bfloat16", "mixed", "mixed-float16")


class BFloat16Linear(nn.Module):
    """A linear layer with bfloat16 weights whose input and output stay in the caller's dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


class HalfDecodeLinear(BFloat16Linear):
    """A `BFloat16Linear` whose one-row products (decoding steps) use a float16 copy of the weights.

    On the 2-core AVX512-BF16 machine a 1 x 576 by 576 x 1536 product took about half the time in
    float16 as in bfloat16, and greedy decoding followed float32 more closely. float16 overflows past
    65,504 (the largest output seen was about 25,000), so a row with a non-finite result is redone in
    float32.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__(linear)
        self.register_buffer("weight_half", linear.weight.detach().to(torch.float16), persistent=False)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.float16)
        self.register_buffer("bias_half", bias, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[:-1].numel() > 1:
            return super().forward(x)
        out = F.linear(x.to(torch.float16), self.weight_half, self.bias_half)
        if not bool(torch.isfinite(out).all()):
            bias = None if self.bias_half is None else self.bias_half.float()
            return F.linear(x.float(), self.weight_half.float(), bias).to(x.dtype)
        return out.to(x.dtype)


class InputMajorHead(nn.Module):
    """The output projection with its weight stored transposed (in_features x vocabulary), contiguous.

    Same float32 numbers as the nn.Linear it replaces (logits differ by summation order only, below 1e-5),
    in half the time per decoding step on CPU. `weight` is the usual (vocabulary x in_features) view.
    """

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.weight_t = nn.Parameter(linear.weight.detach().t().contiguous(), requires_grad=False)
        bias = linear.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x @ self.weight_t
        return out if self.bias is None else out + self.bias


def set_precision(model: Any, precision: str) -> Any:
    """Prepare a float32 model (any adapter already merged) for inference in `precision`; returns it.

    `bfloat16` casts the whole model; the others put the output projection in input-major layout, and
    `mixed` (`mixed-float16`) also swaps every other nn.Linear for a `BFloat16Linear`
    (`HalfDecodeLinear`). Inference only: the result is not meant for training or for saving.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "bfloat16":
        return model.to(torch.bfloat16)
    head = model.get_output_embeddings()
    if precision in ("mixed", "mixed-float16"):
        layer = BFloat16Linear if precision == "mixed" else HalfDecodeLinear
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child is not head:
                    setattr(parent, name, layer(child))
    if isinstance(head, nn.Linear):
        model.set_output_embeddings(InputMajorHead(head))
    return model
