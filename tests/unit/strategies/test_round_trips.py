"""Fewer message round trips, the same result: requests that do not depend on one another go out together, and a
warm-started mixture EM answers its first E-step with the init message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Message, RecordDict

from fedsynth.cohort.schema import ColumnKind, ColumnSpec, TableSchema
from fedsynth.strategies import records
from fedsynth.strategies.fedavg_site import handle_mixture_estep, handle_mixture_init
from fedsynth.strategies.in_process import InProcessGrid
from fedsynth.strategies.registry import make_strategy
from fedsynth.strategies.site import SiteRuntime

SCHEMA = TableSchema(
    (
        ColumnSpec("AGE", ColumnKind.CONTINUOUS),
        ColumnSpec("HB", ColumnKind.CONTINUOUS),
        ColumnSpec("SEX", ColumnKind.CATEGORICAL, categories=("F", "M")),
    )
)


def _sites(sizes: list[int]) -> list[SiteRuntime]:
    rng = np.random.default_rng(0)
    return [SiteRuntime(f"site-{i + 1}", SCHEMA.coerce(pd.DataFrame(
        {"AGE": rng.normal(60 + 5 * i, 10, n), "HB": rng.normal(10 - i, 1, n), "SEX": rng.choice(["F", "M"], n)})),
        SCHEMA, seed=i) for i, n in enumerate(sizes)]


class ExchangeLog(InProcessGrid):
    """An in-process grid that records the message types of every exchange (one ``send_and_receive``)."""

    def __init__(self, sites: list[SiteRuntime]) -> None:
        super().__init__(sites)
        self.exchanges: list[list[str]] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        batch = list(messages)
        self.exchanges.append(sorted({m.metadata.message_type for m in batch}))
        return super().send_and_receive(batch, timeout=timeout)


def test_hello_and_summary_go_out_in_one_exchange_and_give_the_same_sites_and_domain() -> None:
    # Setup
    strategy = make_strategy("two_step_bn", SCHEMA, generator="bayesian_network", min_sites=3)
    together, apart = ExchangeLog(_sites([60, 30, 10])), ExchangeLog(_sites([60, 30, 10]))

    # Run
    sites, domain = strategy.hello_and_domain(together)
    sites_apart = strategy.hello(apart)
    domain_apart = strategy.build_domain(apart, sites_apart)

    # Assert: one exchange instead of two, the same sites and the same shared domain
    assert together.exchanges == [["query.hello", "query.summary"]]
    assert apart.exchanges == [["query.hello"], ["query.summary"]]
    assert sites == sites_apart
    assert records.domain_to_text(domain) == records.domain_to_text(domain_apart)


def test_a_site_failing_hello_contributes_no_summary_to_the_domain() -> None:
    # Setup: site-3 fails hello (but would answer the summary)
    from fedsynth.strategies.site import all_site_handlers

    handlers = all_site_handlers()
    ok_hello = handlers["query.hello"]

    def flaky_hello(msg: Message, site: SiteRuntime) -> RecordDict:
        if site.name == "site-3":
            raise RuntimeError("down")
        return ok_hello(msg, site)

    grid = InProcessGrid(_sites([60, 30, 10]), {**handlers, "query.hello": flaky_hello})
    strategy = make_strategy("two_step_bn", SCHEMA, generator="bayesian_network", min_sites=2)

    # Run
    sites, domain = strategy.hello_and_domain(grid)

    # Assert: the domain is the one of the two sites that said hello
    two = InProcessGrid(_sites([60, 30, 10])[:2])
    expected = make_strategy("two_step_bn", SCHEMA, generator="bayesian_network", min_sites=2)
    assert [s.name for s in sites] == ["site-1", "site-2"]
    assert records.domain_to_text(domain) == records.domain_to_text(expected.build_domain(two, expected.hello(two)))


def test_the_first_e_step_answered_with_the_init_message_equals_an_e_step_message() -> None:
    # Setup: a site's VAE-BGM on a shared domain, global weights and a previous round's mixture
    from fedsynth.encoding.domain import merge_summaries, summarize_site
    from fedsynth.generators.latent_mixture import mixture_init_statistics
    from fedsynth.strategies.in_process import _ensure_task_identity

    _ensure_task_identity()
    site = _sites([120])[0]
    domain = merge_summaries([summarize_site(site.data, SCHEMA, random_state=0)], SCHEMA, random_state=0)
    params: dict[str, Any] = {"batch_size": 32, "latent_dim": 2, "hidden_dims": [8], "n_components": 2}
    strategy = make_strategy("fedavg", SCHEMA, generator="vae_bgm", generator_params=params, rounds=1)
    generator = strategy.new_generator(domain, random_state=0)
    weights = generator.initialize().get_weights()
    codes = np.asarray(generator.latent_codes(site.data), dtype=np.float64)
    previous = generator.initial_latent_mixture([mixture_init_statistics(codes)], random_state=0)
    cfg = records.to_config_record({**strategy.base_config("run-1", domain), "server_round": 2})

    # Run
    init = Message(RecordDict({"arrays": records.to_array_record(weights), "config": cfg,
                               "mixture": records.to_array_record(previous)}), dst_node_id=1,
                   message_type="query.mixture_init")
    reply = handle_mixture_init(init, site)
    estep = Message(RecordDict({"mixture": records.to_array_record(previous), "config": cfg}), dst_node_id=1,
                    message_type="query.mixture_estep")
    separate = handle_mixture_estep(estep, site)

    # Assert: the same statistics, bit for bit
    a, b = records.from_array_record(reply["estep"]), records.from_array_record(separate["stats"])
    assert sorted(a) == sorted(b) and all(np.array_equal(a[k], b[k]) for k in a)
