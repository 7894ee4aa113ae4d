"""DP-SGD at a site and the Gaussian mechanism on latent-mixture statistics: clipping bounds a row's influence,
without clipping and noise a step is the plain gradient step, noise has the asked spread, and the calibrated
noise composes (independently, with dp_accounting) to the budget."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsynth.generators._dp import (
    DPSGDSettings,
    clip_codes,
    dpsgd_schedule,
    noisy_mixture_statistics,
    repair_e_step_statistics,
)
from fedsynth.generators.latent_mixture import mixture_e_step_statistics, mixture_init_statistics
from fedsynth.privacy.accounting import DEFAULT_ORDERS, PrivacyBudget, calibrate_dpsgd_noise

SMALL = ["AGE", "SEX", "HB", "PLT", "BM_BLAST", "CYTO_IPSSR", "TP53", "SF3B1", "OS_YEARS", "OS_STATUS"]


def _vae(mds_partition, rows: int = 120):  # type: ignore[no-untyped-def]
    from fedsynth.encoding.domain import Domain
    from fedsynth.generators.vae_bgm import VAEBGMGenerator

    schema = mds_partition.schema.select(SMALL)
    data = mds_partition.train[SMALL].iloc[:rows]
    gen = VAEBGMGenerator(schema, hidden_dims=[16], latent_dim=4, n_components=2, random_state=0, device="cpu")
    gen.domain = Domain.from_data(data, schema, n_bins=20)
    gen.initialize()
    return gen, data


def _one_sgd_step(gen, data, settings: DPSGDSettings):  # type: ignore[no-untyped-def]
    import torch

    gen.optimizer_ = torch.optim.SGD(gen.network_.parameters(), lr=1.0)
    before = {k: v.detach().clone() for k, v in gen.network_.named_parameters()}
    gen.dp_sgd_ = settings
    gen.partial_fit(data, epochs=1)
    return {k: v.detach() - before[k] for k, v in gen.network_.named_parameters()}


def test_schedule_samples_a_batch_in_expectation_and_covers_an_epoch() -> None:
    assert dpsgd_schedule(1000, 128) == (0.128, 8)
    assert dpsgd_schedule(50, 128) == (1.0, 1)


def test_without_clipping_or_noise_a_dp_step_is_the_plain_gradient_step(mds_partition) -> None:
    # Setup: every row sampled (q = 1, one step), no noise, a clipping norm no gradient reaches
    import torch

    from fedsynth.generators.vae_network import vae_loss

    gen, data = _vae(mds_partition)
    enc = gen._encode(gen._check_training_data(data))
    state = gen.torch_rng_.get_state()
    params = dict(gen.network_.named_parameters())
    # the reference: autograd of the batch's mean loss, with the same reparameterisation draws
    ref_rng = torch.Generator().set_state(state.clone())
    batch = [torch.as_tensor(a) for a in (enc.inputs, enc.numeric, enc.numeric_mask, enc.binary, enc.binary_mask,
                                          enc.categorical, enc.missing, enc.missing_mask)]
    grads = torch.autograd.grad(vae_loss(gen.network_, gen.layout_, batch, gen.params.beta, ref_rng),
                                list(params.values()))
    # Run
    delta = _one_sgd_step(gen, data, DPSGDSettings(0.0, 1e9, 1.0, 1))
    # Assert: SGD with lr 1 moved every parameter by minus the mean gradient
    for (name, _), g in zip(params.items(), grads):
        np.testing.assert_allclose(delta[name].numpy(), -g.numpy(), rtol=1e-4, atol=1e-6)


def test_clipping_bounds_the_step_by_the_clipping_norm(mds_partition) -> None:
    # Setup: per-row gradients clipped to C; with no noise the step is the mean of clipped gradients
    gen, data = _vae(mds_partition)
    clip = 1e-3
    # Run
    delta = _one_sgd_step(gen, data, DPSGDSettings(0.0, clip, 1.0, 1))
    # Assert: the L2 norm over all parameters of the mean of vectors of norm <= C is <= C
    norm = math.sqrt(sum(float((d**2).sum()) for d in delta.values()))
    assert 0 < norm <= clip * (1 + 1e-5)


def test_noise_has_the_spread_of_noise_multiplier_times_clip_over_batch(mds_partition) -> None:
    # Setup: noise so large that the (clipped, norm <= C) mean gradient vanishes beside it
    gen, data = _vae(mds_partition)
    z, clip = 1000.0, 1e-3
    # Run
    delta = _one_sgd_step(gen, data, DPSGDSettings(z, clip, 1.0, 1))
    values = np.concatenate([d.numpy().ravel() for d in delta.values()])
    # Assert: std = z C / expected batch (n rows), within sampling error
    expected = z * clip / len(data)
    assert np.std(values) == pytest.approx(expected, rel=0.1)


def test_dp_training_leaves_no_per_sample_state_and_keeps_weight_keys(mds_partition) -> None:
    gen, data = _vae(mds_partition)
    keys = set(gen.get_weights())
    gen.dp_sgd_ = DPSGDSettings(1.0, 1.0, *dpsgd_schedule(len(data), 32))
    gen.partial_fit(data, epochs=1)
    assert set(gen.get_weights()) == keys
    assert all(np.isfinite(v).all() for v in gen.get_weights().values())
    assert not any(hasattr(p, "grad_sample") for p in gen.network_.parameters())
    assert gen.epochs_trained_ == 1


def test_codes_are_clipped_to_the_norm() -> None:
    rng = np.random.default_rng(0)
    codes = rng.normal(0, 3, size=(200, 5))
    clipped = clip_codes(codes, 2.0)
    assert np.linalg.norm(clipped, axis=1).max() <= 2.0 + 1e-12
    small = np.linalg.norm(codes, axis=1) <= 2.0
    np.testing.assert_allclose(clipped[small], codes[small])


def test_mixture_statistics_get_noise_scaled_to_each_sensitivity() -> None:
    # Setup: many draws of the noise on zero statistics
    k, d, z, c = 3, 2, 1.5, 4.0
    zero = {"nk": np.zeros(k), "sum_x": np.zeros((k, d)), "sum_xx": np.zeros((k, d, d)), "n": np.asarray(0.0),
            "log_prob_norm": np.asarray(0.0), "resp_entropy": np.asarray(0.0)}
    rng = np.random.default_rng(1)
    # Run
    draws = [noisy_mixture_statistics(zero, code_clip=c, noise_multiplier=z, random_state=rng) for _ in range(3000)]
    # Assert: counts z, sums z C, outer-product sums z C^2 (diagonal; off-diagonal averaged with its mirror)
    assert np.std([x["nk"] for x in draws]) == pytest.approx(z, rel=0.05)
    assert np.std([x["sum_x"] for x in draws]) == pytest.approx(z * c, rel=0.05)
    assert np.std([x["sum_xx"][:, 0, 0] for x in draws]) == pytest.approx(z * c * c, rel=0.05)
    assert all(np.allclose(x["sum_xx"], np.swapaxes(x["sum_xx"], 1, 2)) for x in draws[:10])
    assert all(float(x["resp_entropy"]) == 0.0 and float(x["log_prob_norm"]) == 0.0 for x in draws[:10])


def test_one_patient_changes_clipped_statistics_by_at_most_the_sensitivities() -> None:
    # Setup: neighbouring code sets (one row removed); any mixture
    from fedsynth.generators.latent_mixture import init_latent_mixture

    rng = np.random.default_rng(2)
    c = 2.5
    codes = clip_codes(rng.normal(0, 2, size=(60, 3)), c)
    params = init_latent_mixture([mixture_init_statistics(codes)], n_components=4, random_state=0)
    a, b = mixture_e_step_statistics(codes, params), mixture_e_step_statistics(codes[1:], params)
    ia, ib = mixture_init_statistics(codes), mixture_init_statistics(codes[1:])
    # Assert
    assert np.linalg.norm(a["nk"] - b["nk"]) <= 1 + 1e-9
    assert np.linalg.norm(a["sum_x"] - b["sum_x"]) <= c + 1e-9
    assert np.linalg.norm(a["sum_xx"] - b["sum_xx"]) <= c * c + 1e-9
    assert abs(float(ia["n"] - ib["n"])) == 1 and np.linalg.norm(ia["sum"] - ib["sum"]) <= c + 1e-9
    assert np.linalg.norm(ia["sum_outer"] - ib["sum_outer"]) <= c * c + 1e-9


def test_repaired_statistics_give_positive_counts_and_definite_covariances() -> None:
    rng = np.random.default_rng(3)
    k, d = 3, 2
    noisy = [{"nk": rng.normal(0, 5, k), "sum_x": rng.normal(0, 5, (k, d)), "sum_xx": rng.normal(0, 5, (k, d, d))}
             for _ in range(2)]
    (fixed,) = repair_e_step_statistics(noisy)
    assert (fixed["nk"] >= 1).all()
    for j in range(k):
        mean = fixed["sum_x"][j] / fixed["nk"][j]
        cov = fixed["sum_xx"][j] / fixed["nk"][j] - np.outer(mean, mean)
        assert np.linalg.eigvalsh(cov).min() > 0


@pytest.mark.parametrize("epsilon", [1.0, 3.0])
def test_calibrated_noise_composes_to_the_budget_under_dp_accounting(epsilon: float) -> None:
    # Setup: a site of 800 rows, batch 64, 10 epochs; the mixture's releases as rho = 0.02
    from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent, SelfComposedDpEvent
    from dp_accounting.rdp import RdpAccountant

    q, per_epoch = dpsgd_schedule(800, 64)
    steps, rho = 10 * per_epoch, 0.02
    # Run
    z = calibrate_dpsgd_noise(PrivacyBudget(epsilon, 1e-5), q, steps, other_rho=rho)
    # Assert: independently composed at the same orders, the run spends the budget (just) and no more
    ref = RdpAccountant(orders=list(DEFAULT_ORDERS))
    ref.compose(SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(z)), steps))
    ref.compose(GaussianDpEvent(math.sqrt(1 / (2 * rho))))
    eps = ref.get_epsilon(1e-5)
    assert eps <= epsilon * (1 + 1e-9)
    assert eps == pytest.approx(epsilon, rel=1e-3)
    assert calibrate_dpsgd_noise(PrivacyBudget(math.inf), q, steps) == 0.0
