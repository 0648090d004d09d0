"""Bring your own model: a tiny ε-prediction network, trained the way a DDPM is, benchmarked by fmbench.

The network ε̂(τ, x) is trained here on seed 000's data (a two-component Gaussian mixture in 3-D) with DDPM's
objective on DDPM's own clock — integer timesteps τ = 0 … 999 of the linear β table, x_τ = √ᾱ_τ x₁ + √(1 − ᾱ_τ) ε —
as a user's diffusion model would be: fmbench knows nothing of how. It is saved to a file by this module, once, and
loaded from there afterwards; :func:`network` is the factory a sweep names::

    plugins = ["tiny_epsilon.py"]
    [sweep]
    field = "module:tiny_epsilon.network"

and a notebook calls::

    import fmbench, tiny_epsilon
    rows = fmbench.evaluate(["ddim", "dpmpp_2m", "unipc"], targets=["seed000"], schedules=["vp"], nfe=[5, 10, 20],
                            field=tiny_epsilon.network())

The file is ``$FMBENCH_EXAMPLE_DIR/tiny_epsilon-<steps>.pt`` (default ``~/.cache/fmbench/examples``);
``FMBENCH_EXAMPLE_STEPS`` (default 1500) sets the training steps — fewer make a worse network, which is how the
README's walk-through makes ``fmbench compare`` fail.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

from fmcore import get_target
from fmcore.conventions import DDPMTimesteps
from fmcore.model_field import TrainedNetwork

TABLE = DDPMTimesteps.linear()  # β from 1e-4 to 0.02 over 1000 steps (Ho et al. 2020)


class TinyEpsilon(nn.Module):
    """ε̂(τ, x): sinusoidal features of τ/1000 beside x, into a two-layer SiLU MLP."""

    def __init__(self, dim: int = 3, width: int = 64, frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(frequencies) * math.pi)
        self.net = nn.Sequential(nn.Linear(dim + 2 * frequencies, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                 nn.Linear(width, dim))

    def forward(self, timestep: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        phase = (timestep.reshape(-1, 1).expand(x.shape[0], 1) / 1000.0) * self.frequencies
        return self.net(torch.cat([torch.cos(phase), torch.sin(phase), x], dim=1))


def train(steps: int, seed: int = 0, batch_size: int = 512) -> TinyEpsilon:
    """DDPM's simple loss ‖ε̂(τ, x_τ) − ε‖² at uniform integer τ, Adam, seeded: the same weights every time."""
    torch.manual_seed(seed)
    target = get_target("seed000")
    model = TinyEpsilon(target.dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    alphas_cumprod = TABLE.alphas_cumprod.float()
    generator = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        x1 = target.sample(batch_size, generator=generator).float()
        noise = torch.randn(x1.shape, generator=generator)
        timestep = torch.randint(0, len(alphas_cumprod), (batch_size,), generator=generator)
        alpha_bar = alphas_cumprod[timestep].unsqueeze(1)
        x = alpha_bar.sqrt() * x1 + (1.0 - alpha_bar).sqrt() * noise
        loss = ((model(timestep.float(), x) - noise) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def weights_path(steps: int) -> Path:
    folder = Path(os.environ.get("FMBENCH_EXAMPLE_DIR") or Path.home() / ".cache" / "fmbench" / "examples")
    return folder / f"tiny_epsilon-{steps}.pt"


def network() -> TrainedNetwork:
    """The factory: the trained network (trained and saved on first use), what it predicts and its clock."""
    steps = int(os.environ.get("FMBENCH_EXAMPLE_STEPS", "1500"))
    path = weights_path(steps)
    model = TinyEpsilon()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        model = train(steps)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save(model.state_dict(), partial)
        partial.replace(path)  # whole or absent, never half-written
    return TrainedNetwork(model.eval(), prediction="epsilon", convention=TABLE)
