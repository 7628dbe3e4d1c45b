"""Cayley SGD with momentum on the orthogonal (square Stiefel) manifold, after Li, Fuxin &
Todorovic, "Efficient Riemannian Optimization on the Stiefel Manifold via the Cayley
Transform" (ICLR 2020), the optimizer SpinQuant learns R1/R2 with.

Each step, for X ([n, n], X^T X = I) with Euclidean gradient G:
    M  <- beta M - G                               momentum in the ambient space
    W  <- (M X^T - 1/2 X X^T M X^T), made skew    W = W_hat - W_hat^T
    M  <- W X                                      momentum projected to the tangent space
    a  <- min(lr, 2q / (|W|_F + eps))              step bounded so the Cayley map stays tame
    X  <- (I - a/2 W)^-1 (I + a/2 W) X             exact Cayley transform: X stays orthogonal
The transform is solved exactly in float64 (a few hundred-wide solve is cheap next to the
model's forward pass) instead of the paper's fixed-point iteration, so orthogonality holds to
float64 round-off at every step.
"""

from __future__ import annotations

import torch


class CayleySGD(torch.optim.Optimizer):
    def __init__(self, params, lr: float, momentum: float = 0.0, q: float = 0.5, eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, momentum=momentum, q=q, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                x, g = p.double(), p.grad.double()
                state = self.state[p]
                m = state.get("momentum", torch.zeros_like(x))
                m = group["momentum"] * m - g
                w_hat = m @ x.T - 0.5 * x @ (x.T @ m @ x.T)
                w = w_hat - w_hat.T
                state["momentum"] = w @ x
                alpha = min(group["lr"], 2 * group["q"] / (float(w.norm()) + group["eps"]))
                eye = torch.eye(x.shape[0], dtype=x.dtype, device=x.device)
                x_new = torch.linalg.solve(eye - 0.5 * alpha * w, (eye + 0.5 * alpha * w) @ x)
                p.copy_(x_new.to(p.dtype))
        return loss
