"""VAE-BGM: a variational autoencoder with per-type likelihoods and a Bayesian Gaussian mixture over its latent codes.

The VAE is trained by federated averaging (:class:`~fedsynth.generators.base.SupportsWeights`); the latent
mixture is *global* (:class:`~fedsynth.generators.base.SupportsLatentMixture`): fitted centrally with
scikit-learn's ``BayesianGaussianMixture`` or, across sites, by the federated variational EM of
:mod:`fedsynth.generators.latent_mixture`, whose E-step runs at each site on codes that never leave it. The
layout (domain -> model inputs and back) is :mod:`fedsynth.generators.vae_layout`, the torch network and loss
:mod:`fedsynth.generators.vae_network`.

Choices (measured on the MDS cohort, 90% training split, ``benchmarks/bench_vae_bgm.py``, default settings):

- numeric columns go through the domain's quantile bins to normal scores (piecewise-linear CDF, then the
  normal quantile function, probabilities clipped to [0.001, 0.999]); the inverse maps any decoded value back
  inside the domain's bounds, and a draw within one learned sigma of a bound's score becomes the bound (point
  masses such as PB_BLAST = 0 come back exact: its column shape 0.46 -> 0.87). Standardising with the
  domain's mean/std (``numeric_transform="standard"``) is an option: QualityReport 0.939 vs 0.950;
- decoded rows are *sampled* from the per-type likelihoods (Gaussian with a learned per-column sigma,
  Bernoulli, categorical, Bernoulli missing indicators). Taking the mode (``sampling="mode"``) gave
  QualityReport 0.876, missing-rate gaps up to 5 points, an exaggerated TP53 hazard ratio and NNDR p5 0.37
  (below the holdout's 0.54);
- the mixture is variational with a Dirichlet-process weight prior (see :mod:`~fedsynth.generators.latent_mixture`);
- conditional sampling (``condition_components="stratified"``,
  :mod:`~fedsynth.generators.component_conditioning`) splits the rows over latent components by
  P(component | condition), from per-component label counts summed over sites at training
  (:mod:`~fedsynth.generators.component_counts`), then rejects inside each component. Plain rejection kept rows
  that met ``TP53 = 1`` by decoding noise, drawn from components of lower-risk patients (federated 5 x 60
  epochs: TP53-mutated arm median OS 32-47% too long at seeds 0-2). Chosen on seeds 7 and 8 over ``"proposal"``
  (components drawn by that probability, then rejection: the condition counted twice, lower-risk arm 21% too
  long at seed 7) and ``"off"``. Range terms (``AGE >= 65``) can weigh the components too, from per-component bin
  counts (``condition_ranges=True``); on seeds 7 and 8 that moved arm (a) away from the real patients (median
  error 1.5% -> 7.9% with log-rank p 0.033; 7.8% -> 18.5%), so ranges are left to rejection by default. Measured in
  ``benchmarks/results/arms_vae_cond.json``.
- sampled durations are calibrated within prognostic strata (``survival_calibration=True``,
  :mod:`~fedsynth.generators.survival_calibration`): each endpoint of a row is multiplied by its factor, the
  product of per-level factors of the schema's strata and its role-based strata, fitted after training on
  ``calibration_rows`` unconditioned rows and ``calibration_level_rows`` rows drawn under each level (as arms
  are drawn) so each level's survival matches the real one (``survival_target``: median, observed over expected
  events, restricted mean, or hazard ratio against the rest of its stratum; its limits: ``survival_notes``), from
  events and person-time per interval and level summed over sites (FedAvg's ``query.survival_counts``; not asked
  for under a finite privacy budget, where the step is off). Without it the VAE pulled rare protective levels
  towards the mean and control arms drawn in risk groups lived up to a fifth too long or short
  (``benchmarks/results/arms.json``). With ``calibration_unconditioned`` the draws made without a condition take
  a second set of factors, fitted on the unconditioned rows alone
  (:mod:`~fedsynth.generators.calibrated_generator`; on in the tuned FedAvg setting since session 15).
- ``time_ties=True`` (off by default) gives the layout a binary slot per pair of endpoint durations, 1 where the two
  times are equal (:class:`~fedsynth.generators.vae_layout.Layout`): without it the model draws LFS equal to OS in
  about a third of rows against 79% of real MDS patients. Not chosen on seeds 7-9 (more effects lost with the
  calibration; at epsilon 1 it over-ties), so it stays an option (``arms.json``, ``selection_session11``).
- ``joint_events=True`` (off by default) learns the endpoints' event columns as one pattern block (the layout's
  ``events``); not chosen on seeds 7-9 (``selection_session13``: the event cells right, the arms further off), nor
  with ``time_ties`` in session 19 (``selection_session19``: fewer effects lost, the arms' LFS far too short).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError
from fedsynth.generators.base import check_epochs, check_weights, torch_device
from fedsynth.generators.calibrated_generator import SurvivalCalibratedGenerator
from fedsynth.generators.component_counts import component_count_statistics
from fedsynth.generators.label_shares import (
    PILOT_ROWS,
    apply_label_offsets,
    fit_label_offsets,
    logit_positions,
    real_label_shares,
)
from fedsynth.generators.latent_mixture import (
    MixtureParams,
    check_mixture,
    fit_latent_mixture,
    init_latent_mixture,
    mixture_e_step_statistics,
    mixture_init_statistics,
    sample_mixture,
)
from fedsynth.generators.model_folder import read_model_json, read_model_npz
from fedsynth.generators.survival_calibration import SurvivalCalibration
from fedsynth.generators.vae_layout import Encoded, Layout, absent_inputs, decode, encode, level_rows, sample_by_level
from fedsynth.generators.vae_network import build_vae, vae_loss
from fedsynth.generators.vae_params import VAEBGMParams

log = logging.getLogger(__name__)

#: Files written by :meth:`VAEBGMGenerator.save` beside ``generator.json``.
WEIGHTS_FILE = "vae_weights.npz"
STATE_FILE = "vae_bgm.json"


class VAEBGMGenerator(SurvivalCalibratedGenerator):
    """Variational autoencoder with a Bayesian Gaussian mixture prior fitted on its latent codes.

    Numeric columns are mapped to normal scores through the shared domain (piecewise-linear CDF through its
    quantile bins, or standardised with its mean and standard deviation) and modelled as Gaussians with a
    learned per-column variance; binary columns as Bernoulli logits; categorical columns as softmax over the
    domain's categories; every column that can be missing gets a Bernoulli missing indicator. Columns a site
    lacks are encoded as missing and their loss terms are masked, so the site gives no gradient for them.

    After training, the posterior means of the training rows are summarised by a Bayesian Gaussian mixture
    (scikit-learn, or the federated variational EM); sampling draws latent codes from it, decodes them and
    samples each column from its likelihood (``sampling="likelihood"``) or takes the mode.

    Attributes
    ----------
    network_ : torch.nn.Module
        Encoder and decoder (built by :meth:`initialize`); ``optimizer_`` is its Adam, kept between calls.
    layout_ : Layout
        How the domain maps to model inputs and outputs (built with the network).
    latent_mixture_ : dict of float64 arrays or None
        The installed latent mixture; ``None`` samples codes from the standard normal prior.
    epochs_trained_ : int
        Training epochs so far (``fit`` restarts the count, ``partial_fit`` adds to it).
    label_offsets_ : dict of float64 arrays or None
        With ``label_share_matching``: the offsets on the decoder's logits of draws made without a condition
        (:mod:`~fedsynth.generators.label_shares`), fitted by ``fit``, when the component counts are installed, and
        by :meth:`fit_survival_calibration` when none are; cleared with the latent mixture.
    """

    name = "vae_bgm"
    Params = VAEBGMParams
    model_files = (WEIGHTS_FILE, STATE_FILE)

    network_: Any = None
    optimizer_: Any = None
    torch_rng_: Any = None
    device_: Any = None
    layout_: Layout | None = None
    epochs_trained_: int = 0
    label_offsets_: dict[str, np.ndarray] | None = None
    #: DP-SGD settings (:class:`fedsynth.generators._dp.DPSGDSettings`) a federated site sets before training
    #: under a privacy budget; ``None``: plain training.
    dp_sgd_: Any = None

    def _domain_options(self) -> dict[str, Any]:
        # Finer quantile bins make the piecewise-linear normal-score transform closer to the real CDF.
        return {"n_bins": 20}

    # -- model construction ---------------------------------------------------------------------------
    def initialize(self) -> VAEBGMGenerator:
        """Build the network from the domain without training (same random_state -> same weights on every site).

        Does nothing when the network exists already.
        """
        if self.network_ is not None:
            return self
        p = self.params
        if self.domain is None:
            raise FedsynthError(
                f"{type(self).__name__} has no domain yet: pass domain= (federated) or call fit() first"
            )
        import torch

        self.layout_ = Layout.from_domain(self.domain, self.schema, ties=p.time_ties, events=p.joint_events)
        device = torch_device(p.device)
        seed = int(np.random.SeedSequence().generate_state(1)[0]) if p.random_state is None else p.random_state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.network_ = build_vae(self.layout_, p.latent_dim, list(p.hidden_dims)).to(device)
        self.optimizer_ = torch.optim.Adam(self.network_.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        self.torch_rng_ = torch.Generator(device=device)
        self.torch_rng_.manual_seed(seed + 1)
        self.device_ = device
        return self

    def _encode(self, data: pd.DataFrame) -> Encoded:
        assert self.layout_ is not None and self.domain is not None
        return encode(self.layout_, self.domain, data, self.params.numeric_transform)

    # -- training -------------------------------------------------------------------------------------
    def _fit(self, data: pd.DataFrame) -> None:
        # fit always starts afresh; partial_fit is the one that continues.
        self.network_ = None
        self.epochs_trained_ = 0
        self.latent_mixture_ = None
        self.initialize()
        enc = self._encode(data)
        self._train(enc, self.params.epochs)
        p = self.params
        self.latent_mixture_ = fit_latent_mixture(
            self._latent_means(enc),
            n_components=p.n_components,
            weight_concentration_prior=p.weight_concentration_prior,
            max_iter=p.mixture_max_iter,
            random_state=p.random_state,
        )
        if self.latent_mixture_ is not None:
            self.component_counts_ = component_count_statistics(
                self._latent_means(enc), data, self.latent_mixture_, self.count_columns(), self.schema,
                bins=self.count_bins(),
            )
        self.fit_label_offsets()
        self.survival_calibration_ = self.unconditioned_calibration_ = None
        if p.survival_calibration:
            self.fit_survival_calibration(self.survival_count_statistics(data))

    def partial_fit(self, data: pd.DataFrame, *, epochs: int = 1) -> VAEBGMGenerator:
        """Continue training on ``data`` for ``epochs`` passes, from the current weights and optimiser state.

        Never re-initialises: the first call on an unbuilt model builds it from the domain (as
        :meth:`initialize` would), later calls continue. The latent mixture is left as it is (the federation
        installs the global one with :meth:`set_latent_mixture`); until one is installed, sampling draws latent
        codes from the standard normal prior.
        """
        check_epochs(self, epochs)
        data = self._check_training_data(data)
        if self.domain is None:
            self.domain = Domain.from_data(data, self.schema, **self._domain_options())
        self.initialize()
        self._train(self._encode(data), int(epochs))
        self.fitted_ = True
        return self

    def _train(self, enc: Encoded, epochs: int) -> None:
        import torch

        assert self.layout_ is not None and self.domain is not None
        if self.dp_sgd_ is not None:
            from fedsynth.generators._dp import dp_train_vae

            if self.params.rare_level_sampling:
                log.info("VAE-BGM: rare_level_sampling not applied under DP-SGD (its accounting assumes Poisson "
                         "sampling of rows)")

            dp_train_vae(self, enc, epochs, self.dp_sgd_)
            return
        p = self.params
        model, opt, dev, layout = self.network_, self.optimizer_, self.device_, self.layout_
        tensors = [
            torch.as_tensor(a, device=dev)
            for a in (
                enc.inputs,
                enc.numeric,
                enc.numeric_mask,
                enc.binary,
                enc.binary_mask,
                enc.categorical,
                enc.missing,
                enc.missing_mask,
            )
        ]
        n = len(enc.inputs)
        bs = int(min(p.batch_size, n))
        dropout = None
        if p.column_dropout > 0:
            absent, col_dims = absent_inputs(layout, self.domain, p.numeric_transform)
            dropout = (torch.as_tensor(absent, device=dev), torch.as_tensor(col_dims, device=dev))
        levels = level_rows(enc, layout.tie_offset, layout.n_categorical) if p.rare_level_sampling else None
        model.train()
        last = float("nan")
        for _ in range(epochs):
            if levels:
                seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.torch_rng_, device=dev).item())
                perm = torch.as_tensor(sample_by_level(levels, n, np.random.default_rng(seed)), device=dev)
            else:
                perm = torch.randperm(n, generator=self.torch_rng_, device=dev)
            total = 0.0
            for start in range(0, n, bs):
                idx = perm[start : start + bs]
                batch = [t[idx] for t in tensors]
                if dropout is not None:
                    hide = torch.rand((len(idx), dropout[1].shape[0]), generator=self.torch_rng_, device=dev)
                    dims = (hide < p.column_dropout).to(dropout[1].dtype) @ dropout[1] > 0
                    batch[0] = torch.where(dims, dropout[0], batch[0])
                loss = vae_loss(model, layout, batch, p.beta, self.torch_rng_)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            last = total / n
            self.epochs_trained_ += 1
        model.eval()
        log.debug("VAE-BGM trained %d epochs (%d total); last loss per row %.4f", epochs, self.epochs_trained_, last)

    def _latent_means(self, enc: Encoded) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.as_tensor(enc.inputs, device=self.device_)
            mu, _ = self.network_.encode(x)
        return np.asarray(mu.cpu().numpy(), dtype=np.float64)

    # -- latent mixture (SupportsLatentMixture) -------------------------------------------------------
    def latent_codes(self, data: pd.DataFrame) -> np.ndarray:
        """Posterior means of ``data``'s rows under the current VAE weights, shape ``(n_rows, latent_dim)``.

        Site-side only: codes are per-patient and must not leave the site (send
        :func:`~fedsynth.generators.latent_mixture.mixture_e_step_statistics` of them instead).
        """
        if self.network_ is None:
            raise FedsynthError(f"{type(self).__name__} has no model yet; call fit(), partial_fit() or set_weights()")
        data = self._check_training_data(data)
        return self._latent_means(self._encode(data))

    def initial_latent_mixture(
        self, statistics: Sequence[Mapping[str, np.ndarray]], *, random_state: int | None = None
    ) -> MixtureParams:
        """Server side: the federated EM's priors and starting point from the sites' code moments, with this
        generator's ``n_components`` and ``weight_concentration_prior`` (see
        :func:`~fedsynth.generators.latent_mixture.init_latent_mixture`)."""
        p = self.params
        return init_latent_mixture(
            statistics,
            n_components=p.n_components,
            weight_concentration_prior=p.weight_concentration_prior,
            random_state=random_state,
        )

    def init_mixture_statistics(self, data: pd.DataFrame) -> dict[str, np.ndarray]:
        """Site side, before the federated EM: row count, sum and sum of outer products of the site's codes.

        Parameters
        ----------
        data : DataFrame
            The site's training rows (columns the site lacks may be absent).

        Returns
        -------
        dict
            ``n`` (scalar), ``sum`` (latent_dim,), ``sum_outer`` (latent_dim, latent_dim); float64 arrays.
        """
        return mixture_init_statistics(self.latent_codes(data))

    def mixture_e_step_statistics(self, data: pd.DataFrame, params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Site side, one EM iteration: responsibility-weighted sufficient statistics of the site's codes.

        Parameters
        ----------
        data : DataFrame
            The site's training rows.
        params : dict
            The current global mixture (from :func:`init_latent_mixture` or :func:`mixture_m_step`).

        Returns
        -------
        dict
            ``n`` (scalar), ``nk`` (K,), ``sum_x`` (K, d), ``sum_xx`` (K, d, d), ``log_prob_norm`` (scalar,
            summed over rows) and ``resp_entropy`` (scalar, ``-sum r log r``); float64 arrays. Nothing per row.
        """
        return mixture_e_step_statistics(self.latent_codes(data), params)

    def set_latent_mixture(self, params: Mapping[str, np.ndarray]) -> None:
        """Install a latent mixture for sampling (e.g. the global one from the federated EM).

        Component counts and the survival calibration kept for an earlier mixture are dropped (their components
        and factors are not this model's)."""
        self.latent_mixture_ = check_mixture(params, self.params.latent_dim)
        self.component_counts_ = self.label_offsets_ = None
        self.survival_calibration_ = self.unconditioned_calibration_ = None

    def get_latent_mixture(self) -> MixtureParams | None:
        """The installed latent mixture (float64 arrays) or ``None``; kept apart from :meth:`get_weights`
        because federated averaging must not average mixtures."""
        if self.latent_mixture_ is None:
            return None
        return {k: v.copy() for k, v in self.latent_mixture_.items()}

    # -- weights (SupportsWeights) --------------------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Encoder and decoder parameters as float32 arrays (the optimiser state stays local).

        Keys and shapes depend only on the domain and the hyperparameters, so they are identical on every
        site. An unfitted generator with a domain builds its initial weights from ``random_state``.
        """
        self.initialize()
        return {k: v.detach().cpu().numpy().astype(np.float32).copy() for k, v in self.network_.state_dict().items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Replace the encoder and decoder parameters; keys and shapes must match exactly.

        The optimiser state is kept (Adam moments continue, as in local training between rounds).
        """
        import torch

        self.initialize()
        state = self.network_.state_dict()
        check_weights({k: v.detach().cpu().numpy() for k, v in state.items()}, weights, type(self).__name__)
        new = {k: torch.as_tensor(np.asarray(weights[k]), dtype=state[k].dtype) for k in state}
        self.network_.load_state_dict(new, strict=True)
        self.network_.eval()
        # A model holding (e.g. globally averaged) weights can sample; it needs no local fit first.
        self.fitted_ = True

    # -- a site's training state between rounds (resume) ------------------------------------------
    def get_local_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """What local training carries from one round to the next, as ``(settings, arrays)``.

        The Adam optimiser's moments and step counts, the state of the training random generator (batch
        order, reparameterisation noise, column dropout) and the epochs trained; the weights are
        :meth:`get_weights`. JSON-able settings plus numpy arrays, so a site can keep them without pickle.
        """
        from fedsynth.generators._torch_state import generator_state, optimizer_to_arrays

        self.initialize()
        meta, arrays = optimizer_to_arrays(self.optimizer_)
        arrays["torch_generator"] = generator_state(self.torch_rng_)
        return {"optimizer": meta, "epochs_trained": int(self.epochs_trained_)}, arrays

    def set_local_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`get_local_state` returned (on a generator built with the same settings)."""
        from fedsynth.generators._torch_state import optimizer_from_arrays, set_generator_state

        self.initialize()
        optimizer_from_arrays(self.optimizer_, dict(meta["optimizer"]), dict(arrays))
        set_generator_state(self.torch_rng_, np.asarray(arrays["torch_generator"]))
        self.epochs_trained_ = int(meta.get("epochs_trained", 0))

    # -- label shares of draws without a condition ----------------------------------------------------
    def set_component_counts(self, counts: Mapping[str, np.ndarray] | None) -> None:
        """Install the summed component counts (:meth:`ComponentConditionedGenerator.set_component_counts`), then
        fit the label offsets from them (``label_share_matching``)."""
        super().set_component_counts(counts)
        self.fit_label_offsets()

    def fit_survival_calibration(self, counts: Mapping[str, np.ndarray], **options: Any) -> None:
        """:meth:`SurvivalCalibratedGenerator.fit_survival_calibration`, on draws with the label offsets: they are
        fitted first when ``label_share_matching`` is on and none are installed (a model saved without them)."""
        if self.params.label_share_matching and self.label_offsets_ is None:
            self.fit_label_offsets()
        super().fit_survival_calibration(counts, **options)

    def fit_label_offsets(self) -> None:
        """With ``label_share_matching`` and component counts installed, fit ``label_offsets_`` so that draws made
        without a condition hold each baseline categorical and binary label at its real share (three passes over
        :data:`PILOT_ROWS`-row draws, :func:`~fedsynth.generators.label_shares.fit_label_offsets`); else clear
        them. Draws under a condition are never shifted (their rows can still move with survival factors refitted
        on the shifted draws: :mod:`~fedsynth.generators.label_shares`)."""
        self.label_offsets_ = None
        if not self.params.label_share_matching or self.component_counts_ is None or self.layout_ is None:
            return
        decoded = {c.name for c in self.layout_.columns if c.kind in ("binary", "categorical")}
        columns = {name: labels for name, labels in self.count_columns().items() if name in decoded}  # counts' labels
        targets = real_label_shares(self.component_counts_, columns, self.schema)
        binary = {c.name for c in self.layout_.columns if c.kind == "binary"}
        rng = np.random.default_rng(self.params.random_state)

        def draw(offsets: dict[str, np.ndarray]) -> pd.DataFrame:
            self.label_offsets_ = offsets
            return self._sample(PILOT_ROWS, rng=rng)

        offsets, worst = fit_label_offsets(draw, targets, columns, binary)
        self.label_offsets_ = offsets
        log.info("label shares of draws without a condition: %d columns matched, largest log share error %.3g "
                 "before the last pass", len(offsets), worst)

    # -- sampling (conditional draws: ComponentConditionedGenerator.sample) ---------------------------
    def _sample(self, n_samples: int, *, rng: np.random.Generator) -> pd.DataFrame:
        import torch

        assert self.layout_ is not None and self.domain is not None
        p = self.params
        mixture = self.latent_mixture_
        if mixture is not None and self._proposal_ is not None:
            mixture = {**mixture, "weights": self._proposal_}
        z = sample_mixture(mixture, n_samples, p.latent_dim, rng)
        with torch.no_grad():
            out = self.network_.decode(torch.as_tensor(z, dtype=torch.float32, device=self.device_))
            num_sigma = self.network_.numeric_sigma().cpu().numpy().astype(np.float64)
        out = out.cpu().numpy().astype(np.float64)
        if p.label_share_matching and self.label_offsets_ and not self._under_condition_:
            out = apply_label_offsets(out, logit_positions(self.layout_), self.label_offsets_)
        return decode(
            self.layout_, self.domain, self.schema, out, num_sigma, rng,
            sampling=p.sampling, numeric_transform=p.numeric_transform,
        )

    # -- persistence ----------------------------------------------------------------------------------
    def _save(self, folder: Path) -> None:
        weights = self.get_weights()
        tmp = folder / "vae_weights.tmp.npz"
        np.savez(tmp, **weights)  # type: ignore[arg-type]  # numpy's stub types **kwds as allow_pickle
        tmp.replace(folder / WEIGHTS_FILE)
        state = {
            "layout": self.layout_.to_dict() if self.layout_ is not None else None,
            "epochs_trained": self.epochs_trained_,
            "latent_mixture": None
            if self.latent_mixture_ is None
            else {k: v.tolist() for k, v in self.latent_mixture_.items()},
            "component_counts": None
            if self.component_counts_ is None
            else {k: v.tolist() for k, v in self.component_counts_.items()},
            "label_offsets": None
            if self.label_offsets_ is None
            else {k: v.tolist() for k, v in self.label_offsets_.items()},
            "survival_calibration": None
            if self.survival_calibration_ is None
            else self.survival_calibration_.to_dict(),
            "unconditioned_calibration": None
            if self.unconditioned_calibration_ is None
            else self.unconditioned_calibration_.to_dict(),
        }
        atomic_write_text(folder / STATE_FILE, json.dumps(state))

    def _load(self, folder: Path) -> None:
        state = read_model_json(folder, STATE_FILE)
        weights = read_model_npz(folder, WEIGHTS_FILE)
        self.network_ = None
        self.initialize()
        assert self.layout_ is not None
        if state.get("layout") is not None and state["layout"] != self.layout_.to_dict():
            raise FedsynthError(f"{folder} holds a VAE-BGM whose layout does not match its domain; it cannot be loaded")
        self.set_weights(weights)
        self.epochs_trained_ = int(state.get("epochs_trained", 0))
        mix = state.get("latent_mixture")
        self.latent_mixture_ = None if mix is None else {k: np.asarray(v, dtype=np.float64) for k, v in mix.items()}
        counts = state.get("component_counts")
        self.component_counts_ = None if counts is None else {
            k: np.asarray(v, dtype=np.float64) for k, v in counts.items()
        }
        offsets = state.get("label_offsets")
        self.label_offsets_ = None if offsets is None else {
            k: np.asarray(v, dtype=np.float64) for k, v in offsets.items()
        }
        cal, unc = state.get("survival_calibration"), state.get("unconditioned_calibration")
        self.survival_calibration_ = None if cal is None else SurvivalCalibration.from_dict(cal)
        self.unconditioned_calibration_ = None if unc is None else SurvivalCalibration.from_dict(unc)

