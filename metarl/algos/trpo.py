"""The pieces of a TRPO step: flat vectors of parameter dicts, conjugate gradient, the scaled step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from metarl.policies.batched import Params

_CG_TOL = 1e-10


def flatten(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Params) -> Params:
    """Split a flat vector into tensors shaped like `like`'s values."""
    out, offset = {}, 0
    for name, p in like.items():
        out[name] = vector[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    return out


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float = _CG_TOL
) -> torch.Tensor:
    """Approximate solution x of A x = b for symmetric positive definite A given as `matvec`."""
    return _conjugate_gradient(matvec, b, iters, tol)[0]


def _conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int, tol: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Conjugate gradient's solution x and its residual r = b − A x (kept by the recurrence)."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr < tol:
            break
        ap = matvec(p)
        alpha = rr / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, r


def natural_step(
    grad: torch.Tensor, fvp: Callable[[torch.Tensor], torch.Tensor], max_kl: float, cg_iters: int
) -> torch.Tensor:
    """The step F⁻¹g scaled so its quadratic KL estimate ½ sᵀF s equals `max_kl`."""
    direction, residual = _conjugate_gradient(fvp, grad, cg_iters, _CG_TOL)
    # F·direction = grad − residual, which saves one more Fisher-vector product.
    shs = 0.5 * (direction @ (grad - residual))
    return direction * torch.sqrt(max_kl / shs.clamp(min=1e-12))
