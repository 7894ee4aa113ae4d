"""VAE-BGM's torch network and loss: per-type likelihoods (Gaussian, Bernoulli, categorical, missing indicators)."""

from __future__ import annotations

import math
from typing import Any

from fedsynth.generators.vae_layout import Layout


def build_vae(layout: Layout, latent_dim: int, hidden: list[int]) -> Any:
    """The encoder/decoder network (torch ``nn.Module``) for ``layout``; torch is imported here, on use."""
    import torch
    from torch import nn

    class _VAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            enc: list[nn.Module] = []
            width = layout.input_dim
            for h in hidden:
                enc += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.encoder = nn.Sequential(*enc)
            self.enc_mu = nn.Linear(width, latent_dim)
            self.enc_logvar = nn.Linear(width, latent_dim)
            dec: list[nn.Module] = []
            width = latent_dim
            for h in reversed(hidden):
                dec += [nn.Linear(width, h), nn.ReLU()]
                width = h
            self.decoder = nn.Sequential(*dec)
            self.dec_out = nn.Linear(width, layout.output_dim)
            # One learned log standard deviation per numeric column (TVAE-style homoscedastic Gaussian).
            self.numeric_log_sigma = nn.Parameter(torch.full((layout.n_numeric,), math.log(0.5)))

        def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.encoder(x)
            return self.enc_mu(h), self.enc_logvar(h).clamp(-12.0, 8.0)

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return torch.as_tensor(self.dec_out(self.decoder(z)))

        def numeric_sigma(self) -> torch.Tensor:
            return self.numeric_log_sigma.clamp(math.log(0.01), math.log(2.0)).exp().detach()

    return _VAE()


def vae_loss(model: Any, layout: Layout, batch: list[Any], beta: float, gen: Any) -> Any:
    """Mean negative ELBO of a batch: per-type reconstruction terms (masked where not observed) + beta * KL."""
    import torch
    import torch.nn.functional as F

    x, num, num_m, binv, bin_m, cat, miss, miss_m = batch
    mu, logvar = model.encode(x)
    eps = torch.randn(mu.shape, generator=gen, device=mu.device, dtype=mu.dtype)
    z = mu + eps * torch.exp(0.5 * logvar)
    out = model.decode(z)
    n_num, n_bin = layout.n_numeric, layout.n_binary
    rec = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    if n_num:
        log_sigma = model.numeric_log_sigma.clamp(math.log(0.01), math.log(2.0))
        nll = 0.5 * ((num - out[:, :n_num]) / log_sigma.exp()) ** 2 + log_sigma
        rec = rec + (nll * num_m).sum(1)
    if n_bin:
        if layout.events:  # where the event pattern is known it alone carries the events (each counted once)
            own = torch.zeros(n_bin, device=x.device, dtype=x.dtype)
            own[list(layout.event_binary_slots)] = 1.0
            bin_m = bin_m * (1.0 - (cat[:, layout.events_index] >= 0).to(x.dtype)[:, None] * own)
        b = F.binary_cross_entropy_with_logits(out[:, n_num : n_num + n_bin], binv, reduction="none")
        rec = rec + (b * bin_m).sum(1)
    off = n_num + n_bin
    for j, k in enumerate(layout.cat_sizes):
        target = cat[:, j]
        ce = F.cross_entropy(out[:, off : off + k], target.clamp(min=0), reduction="none")
        rec = rec + ce * (target >= 0).to(ce.dtype)
        off += k
    if layout.n_missing:
        m = F.binary_cross_entropy_with_logits(out[:, off : off + layout.n_missing], miss, reduction="none")
        rec = rec + (m * miss_m).sum(1)
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
    return (rec + beta * kl).mean()
