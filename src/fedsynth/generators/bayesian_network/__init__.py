"""Discrete Bayesian network generator learnt from count tables, so federated and centralised fits are identical.

The network works on the shared :class:`~fedsynth.encoding.domain.Domain`: numeric columns become the domain's
global quantile bins, categorical and binary columns the domain's categories, and a column with missing values
gets a binary missingness node ``"<col>#isna"`` beside it (see :func:`network_variables`; the "missing" state,
kept apart so that the missingness pattern is cheap to learn). Everything the learner needs from the data is a
*family count table*: the contingency table of a child and its parents in those fixed state orders. Tables from different sites therefore
have identical shapes and are simply summed, which is what makes the federated two-step protocol exact:

1. **structure** — pgmpy's :class:`~pgmpy.causal_discovery.HillClimbSearch` with pgmpy's BIC or BDeu score whose
   counts come from a :class:`CountOracle` instead of a data frame (:meth:`BayesianNetworkGenerator.learn_structure`);
2. **parameters** — CPDs from the summed counts with a BDeu (Dirichlet) prior, pgmpy's estimator logic
   (:meth:`BayesianNetworkGenerator.learn_parameters`).

A site answers count requests with :func:`family_counts` on its own rows; :class:`SummedCountOracle` sums the
replies, :class:`PooledCountOracle` answers from one table (the centralised path). Sampling is ancestral over the
discrete states, then each bin is mapped back to a value inside it from a within-bin histogram (also a summed
count table), and a value whose indicator says "missing" becomes NaN. Exact ``conditions`` are honoured exactly (see
:meth:`BayesianNetworkGenerator._sample_conditioned`).

Survival endpoints are sampled, by default, by a piecewise-exponential model per parent configuration whose events
and person-time per interval are also summed count tables (:mod:`~fedsynth.generators.bayesian_network.survival`):
the network's time bins cannot carry survival within the strata users sample. Their modifiers are calibrated
per parent configuration on a fixed-seed draw from the network (:func:`~.survival.median_calibration`), and
survival fitting lives in :mod:`~fedsynth.generators.bayesian_network.survival_fit`.

A derived categorical column whose inputs are all in the domain (a risk group such as IPSS-R) is also a network
node (``derived_nodes``), counted at the sites from its inputs and allowed to be their parent, never their
child: a gene's shift of the whole risk group then reaches every input jointly. Rows still recompute the column
from their drawn inputs.
"""

from fedsynth.generators.bayesian_network.counts import (
    ISNA_SUFFIX,
    WITHIN_SUFFIX,
    CountOracle,
    Family,
    PooledCountOracle,
    SummedCountOracle,
    base_column,
    family_counts,
    family_from_key,
    family_key,
    n_states,
    network_variables,
    state_labels,
)
from fedsynth.generators.bayesian_network.generator import BayesianNetworkGenerator

__all__ = [
    "ISNA_SUFFIX",
    "WITHIN_SUFFIX",
    "BayesianNetworkGenerator",
    "CountOracle",
    "Family",
    "PooledCountOracle",
    "SummedCountOracle",
    "base_column",
    "family_counts",
    "family_from_key",
    "family_key",
    "n_states",
    "network_variables",
    "state_labels",
]
