"""The shared base class of every generator (validation, post-processing, conditions, save/load); the protocols
it implements live in :mod:`fedsynth.generators.protocols` (re-exported here)."""

from __future__ import annotations

import inspect
import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar, cast

import numpy as np
import pandas as pd

from fedsynth._io import atomic_write_text
from fedsynth.cohort.constraints import enforce
from fedsynth.cohort.derived import add_derived
from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain
from fedsynth.errors import FedsynthError, Problem, ValidationError
from fedsynth.generators.params import (
    GeneratorParams,
    check_params,
    defaults,
    params_doc,
    plain_value,
    unknown_problem,
)
from fedsynth.generators.protocols import (
    Conditions,
    ConditionValue,
    Generator,
    SupportsLatentMixture,
    SupportsLocalState,
    SupportsTwoStep,
    SupportsWeights,
)

__all__ = [
    "BaseGenerator",
    "ConditionError",
    "ConditionValue",
    "Conditions",
    "Generator",
    "SupportsLatentMixture",
    "SupportsLocalState",
    "SupportsTwoStep",
    "SupportsWeights",
    "check_epochs",
    "check_weights",
    "follow_duration_missingness",
    "survival_notes",
    "torch_device",
]

log = logging.getLogger(__name__)

class ConditionError(FedsynthError, ValueError):
    """Conditional sampling could not return enough rows that meet the conditions."""


P = TypeVar("P", bound=GeneratorParams)


class BaseGenerator(ABC, Generic[P]):
    """Shared behaviour: constructors store, ``fit`` validates then calls ``_fit``, ``sample`` calls ``_sample``.

    Each generator declares its hyperparameters once, as a :class:`~fedsynth.generators.params.GeneratorParams`
    spec in ``Params``; the constructor's signature, :meth:`get_params`, the "Parameters" section of the class
    docstring and :meth:`_validate_params` all come from it. Learnt state ends in ``_`` (``fitted_``,
    ``layout_``, ``edges_``...) and exists after ``fit``.

    Parameters
    ----------
    schema : TableSchema
        The table's schema. Generators learn ``schema.model_columns``; derived columns are recomputed after
        sampling and ids/sites are never generated.
    domain : Domain, optional
        The shared encoding domain. When ``None``, ``fit`` builds it from the data (the centralised path);
        a federation passes the domain merged from site summaries so every site encodes identically.
    **params
        Hyperparameters, as declared by ``Params``; stored as given, checked by :meth:`_validate_params`.
    """

    #: Registry key, set by subclasses.
    name: str = ""
    #: The hyperparameter spec, set by subclasses.
    Params: ClassVar[type[GeneratorParams]] = GeneratorParams
    #: Files a saved model holds beside ``generator.json`` (checked by :func:`load_generator`).
    model_files: ClassVar[tuple[str, ...]] = ()
    #: Whether the generator can sample (set by ``fit``, ``partial_fit``, ``set_weights`` and loading).
    fitted_: bool = False

    def __init__(self, schema: TableSchema, *, domain: Domain | None = None, **params: Any) -> None:
        self._refuse_unknown(params)
        self.schema = schema
        self.domain = domain
        self._params = dict(params)
        # The checked form of ``_params``, filled on first use by ``params`` and cleared by ``set_params``:
        # a cache of the one stored copy, so the hot paths do not re-check.
        self._checked: P | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "Params" in cls.__dict__ and "__init__" not in cls.__dict__:
            # The spec is the one declaration: the constructor's signature (read by inspect, help() and the
            # CLI's --set) and the docstring's "Parameters" section are built from it.
            cls.__init__ = _constructor(cls.Params)  # type: ignore[method-assign]
            cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n" + params_doc(cls.Params) + "\n"

    # -- parameters ----------------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        """Hyperparameters that rebuild the same (unfitted) generator: ``type(g)(schema, **g.get_params())``.

        Every declared parameter (defaults filled in) as plain, JSON-able values (tuples become lists).
        """
        return {**defaults(self.Params), **{k: plain_value(v) for k, v in self._params.items()}}

    def set_params(self, **params: Any) -> BaseGenerator[P]:
        """Change hyperparameters (checked on next use, like the constructor's); returns ``self``.

        Meant for settings read at sampling time (e.g. CTGAN's ``calibrate_missing``); changing one that shapes
        the model after fitting leaves a model that no longer matches its parameters.
        """
        self._refuse_unknown(params)
        self._params.update(params)
        self._checked = None
        return self

    def _refuse_unknown(self, params: Mapping[str, Any]) -> None:
        """An unknown name is refused at once, as any keyword signature would (values are checked on use); a
        class that declares no spec (a test double with its own constructor) is not checked."""
        unknown = [k for k in params if k not in self.Params.model_fields]
        if unknown and self.Params is not GeneratorParams:
            owner = type(self).__name__
            raise ValidationError(f"{owner} hyperparameters", [unknown_problem(self.Params, k, owner) for k in unknown])

    @property
    def params(self) -> P:
        """The hyperparameters, checked (raises :class:`ValidationError` listing every bad one)."""
        if self._checked is None:
            self._checked = self._validate_params()
        return self._checked

    def _validate_params(self) -> P:
        """Check every hyperparameter against ``Params`` and raise one error listing all problems (sklearn wording)."""
        owner = type(self).__name__
        problems = check_params(self.Params, self._params, owner, self.schema)
        if problems:
            raise ValidationError(f"{owner} hyperparameters", problems)
        return cast(P, self.Params.model_validate(self._params))

    def _domain_options(self) -> dict[str, Any]:
        """Options for :meth:`Domain.from_data` when this generator builds its own domain."""
        return {}

    # -- fit -----------------------------------------------------------------------------------------
    def fit(self, data: pd.DataFrame) -> BaseGenerator[P]:
        """Learn from ``data`` (a frame holding the schema's model columns). Returns ``self``."""
        _ = self.params  # every hyperparameter is checked before any data is touched
        data = self._check_training_data(data)
        if self.domain is None:
            self.domain = Domain.from_data(data, self.schema, **self._domain_options())
        self._fit(data)
        self.fitted_ = True
        return self

    def _check_training_data(self, data: pd.DataFrame) -> pd.DataFrame:
        problems = []
        if not isinstance(data, pd.DataFrame):
            raise ValidationError(f"Training data for {type(self).__name__}", [Problem("data", f"is a {type(data).__name__}", "a pandas DataFrame")])
        if len(data) == 0:
            problems.append(Problem("data", "has no rows", "at least one row"))
        lacking = [c for c in self.schema.model_columns if c not in data.columns]
        if lacking and self.domain is None:
            problems.append(Problem("data", f"lacks model columns {lacking}", "every column of the schema"))
        if problems:
            raise ValidationError(f"Training data for {type(self).__name__}", problems)
        present = [c for c in self.schema.model_columns if c in data.columns]
        return self.schema.select(present).coerce(data)

    @abstractmethod
    def _fit(self, data: pd.DataFrame) -> None:
        """Train on coerced data. ``self.domain`` is set. Columns absent from ``data`` are ones this site lacks."""

    # -- sample --------------------------------------------------------------------------------------
    def sample(
        self,
        n_samples: int,
        *,
        random_state: int | None = None,
        conditions: Conditions | None = None,
        where: str | None = None,
        max_tries: int = 50,
        max_seconds: float | None = None,
    ) -> pd.DataFrame:
        """Draw ``n_samples`` synthetic rows.

        Output has the schema's data columns (model and derived) in canonical dtypes, numbers inside the
        domain's bounds, categories from the domain, survival times > 0 and events in {0, 1}.

        ``conditions`` maps a column to one value or a list of accepted values; ``where`` is a pandas query
        expression (e.g. ``"AGE >= 65 and HB < 10"``). Every returned row meets both. Generators that can
        condition exactly do so (the Bayesian network); others sample in batches and keep the rows that
        match, raising :class:`ConditionError` with the achieved acceptance rate when ``max_tries`` batches
        do not give enough rows, or when ``max_seconds`` (wall-clock seconds, checked after each batch) have passed.
        """
        if not self.fitted_:
            raise FedsynthError(f"{type(self).__name__} is not fitted yet; call fit() first")
        if not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValidationError(
                f"The 'n_samples' parameter of {type(self).__name__}.sample",
                [Problem("n_samples", f"got {n_samples!r}", "an int in the range [1, inf)")],
            )
        conds = self._check_conditions(conditions)
        rng = np.random.default_rng(random_state)
        if not conds and where is None:
            return self._finish(self._sample(int(n_samples), rng=rng))
        kept: list[pd.DataFrame] = []
        n_kept = n_drawn = 0
        batch = max(int(n_samples), 256)
        started = time.monotonic()
        timed_out = False
        for _ in range(max_tries):
            raw = self._sample_conditioned(batch, conds, rng=rng)
            done = self._finish(raw)
            mask = self._condition_mask(done, conds, where)
            n_drawn += len(done)
            kept.append(done[mask])
            n_kept += int(mask.sum())
            if n_kept >= n_samples:
                break
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                timed_out = True
                break
            rate = max(n_kept / n_drawn, 1.0 / n_drawn)
            batch = int(min(max((n_samples - n_kept) / rate * 1.2, 256), 200_000))
        if n_kept < n_samples:
            rate = n_kept / max(n_drawn, 1)
            bound = f"the time bound of {max_seconds:g} s" if timed_out else "max_tries"
            raise ConditionError(
                f"Only {n_kept} of {n_samples} requested rows met the conditions after drawing {n_drawn} "
                f"rows (acceptance rate {rate:.4%}). Loosen the conditions or raise {bound}."
            )
        return pd.concat(kept).iloc[:n_samples].reset_index(drop=True)

    @abstractmethod
    def _sample(self, n_samples: int, *, rng: np.random.Generator) -> pd.DataFrame:
        """Draw raw rows of the model columns; ``_finish`` clips, rounds and adds derived columns."""

    def _sample_conditioned(
        self, n_samples: int, conditions: Mapping[str, list[Any]], *, rng: np.random.Generator
    ) -> pd.DataFrame:
        """Override to condition exactly; the default draws unconditionally and lets rejection filter."""
        return self._sample(n_samples, rng=rng)

    def _check_conditions(self, conditions: Conditions | None) -> dict[str, list[Any]]:
        if not conditions:
            return {}
        assert self.domain is not None
        problems = []
        out: dict[str, list[Any]] = {}
        for col, value in conditions.items():
            if col not in self.schema.data_columns:
                problems.append(Problem(f"condition on {col!r}", "no such column", ", ".join(self.schema.data_columns)))
                continue
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            spec = self.schema[col]
            if spec.kind in (ColumnKind.CATEGORICAL, ColumnKind.BINARY) and col in self.domain.columns:
                cats = self.domain[col].categories
                labels = [_label(v, spec.kind) for v in values]
                bad = [v for v in labels if v not in cats]
                if bad:
                    problems.append(Problem(f"condition on {col!r}", f"values {bad} are not categories", ", ".join(cats)))
                    continue
                values = labels
            out[col] = values
        if problems:
            raise ValidationError("Sampling conditions", problems)
        return out

    def _condition_mask(self, data: pd.DataFrame, conds: Mapping[str, list[Any]], where: str | None) -> np.ndarray:
        mask = np.ones(len(data), dtype=bool)
        for col, values in conds.items():
            spec = self.schema[col]
            if spec.kind is ColumnKind.CATEGORICAL:
                mask &= data[col].isin(values).to_numpy()
            else:
                mask &= data[col].isin([float(v) for v in values]).to_numpy()
        if where is not None:
            try:
                mask &= data.eval(where).to_numpy(dtype=bool)
            except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad expression
                raise ValidationError(
                    "The 'where' expression",
                    [Problem("where", f"could not be evaluated ({type(exc).__name__}: {exc})",
                             "a pandas query over column names, e.g. \"AGE >= 65 and SEX == 'F'\"")],
                ) from None
        return mask

    def _finish(self, raw: pd.DataFrame) -> pd.DataFrame:
        """Enforce the output contract: domain bounds, integer rounding, valid labels, survival (times > 0; time and
        event missing together), derived columns."""
        assert self.domain is not None
        out = self.domain.clip(raw)
        for name, col in self.domain.columns.items():
            if name not in out.columns:
                out[name] = np.nan
                continue
            if col.kind is ColumnKind.BINARY:
                out[name] = out[name].astype("float64").round().clip(0, 1)
            elif col.kind is ColumnKind.CATEGORICAL:
                s = out[name].astype("object")
                out[name] = s.where(s.isin(col.categories), np.nan)
        for ep in self.schema.endpoints:
            if ep.duration_col in out.columns:
                lo = self.domain[ep.duration_col].lower if ep.duration_col in self.domain.columns else 0.0
                floor = lo if lo > 0 else 1e-3
                d = out[ep.duration_col]
                out[ep.duration_col] = d.where(d.isna() | (d > 0), floor)
            if ep.duration_col in out.columns and ep.event_col in out.columns:
                # An endpoint is known or unknown as a whole: models that sample missingness column by column
                # (the network's #isna nodes) can leave an event without its time, which no analysis can use.
                half = out[ep.duration_col].isna() != out[ep.event_col].isna()
                out.loc[half, [ep.duration_col, ep.event_col]] = np.nan
        # Endpoint rules of the schema (LFS <= OS, an OS death is an LFS event) hold in every sampled row.
        floors = {ep.duration_col: self.domain[ep.duration_col].lower for ep in self.schema.endpoints
                  if ep.duration_col in self.domain.columns}
        out = enforce(out, self.schema.constraints, floors=floors)
        out = self.schema.select(self.schema.model_columns).coerce(out)
        return add_derived(out, self.schema.select(self.schema.data_columns)).reset_index(drop=True)

    def survival_notes(self, *, under_condition: bool | None = None) -> list[str]:
        """What someone drawing survival from this model should know about its limits, as plain sentences (no
        patient's value); empty by default. ``fedsynth arm`` and ``fedsynth sample`` print them as warnings and the
        arm report lists them. ``under_condition``: for draws under a condition (True), without one (False), or
        for both (None; a model that treats them apart says which note is whose)."""
        return []

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the fitted model to the folder ``path``: ``generator.json`` (name, params, schema, domain)
        and the generator's own files (weights as ``.npz`` without pickle, CPDs as JSON)."""
        if not self.fitted_:
            raise FedsynthError(f"{type(self).__name__} is not fitted yet; nothing to save")
        assert self.domain is not None
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "generator": self.name,
            "params": self.get_params(),
            "schema": self.schema.to_dict(),
            "domain": self.domain.to_dict(),
        }
        self._save(folder)
        atomic_write_text(folder / "generator.json", json.dumps(meta, indent=1))

    @abstractmethod
    def _save(self, folder: Path) -> None:
        """Write learnt state (no pickle)."""

    @abstractmethod
    def _load(self, folder: Path) -> None:
        """Read learnt state written by ``_save`` (with :func:`read_model_json` / :func:`read_model_npz`)."""


def _constructor(spec: type[GeneratorParams]) -> Any:
    """An ``__init__`` whose signature lists ``spec``'s parameters as keyword arguments with their defaults."""

    def __init__(self: BaseGenerator[Any], schema: TableSchema, *, domain: Domain | None = None, **params: Any) -> None:
        BaseGenerator.__init__(self, schema, domain=domain, **params)

    kw = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter("schema", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=TableSchema),
            inspect.Parameter("domain", kw, default=None, annotation=Domain | None),
            *[inspect.Parameter(n, kw, default=d, annotation=spec.model_fields[n].annotation)
              for n, d in defaults(spec).items()],
        ]
    )
    return __init__


def survival_notes(generator: Any, *, under_condition: bool | None = None) -> list[str]:
    """``generator``'s :meth:`BaseGenerator.survival_notes` for draws under a condition or not (``None``: both), or
    none for a model without that method (a generator written against the :class:`Generator` protocol alone)."""
    notes = getattr(generator, "survival_notes", None)
    if not callable(notes):
        return []
    if "under_condition" in inspect.signature(notes).parameters:
        return list(notes(under_condition=under_condition))
    return list(notes())


def follow_duration_missingness(
    columns: dict[str, np.ndarray], event_values: Mapping[str, np.ndarray], schema: TableSchema
) -> None:
    """Make each endpoint's event missing exactly where its duration is (in place).

    Decoders that draw one missing indicator per column (VAE-BGM, CTGAN) would otherwise miss the time and the
    event of an endpoint independently: rows with half an endpoint, and an endpoint missing about twice as often
    as in the data (the union of two draws). ``event_values`` holds each event column's values before its own
    missing draw; the event's own indicator is ignored, the duration's decides for both.
    """
    for ep in schema.endpoints:
        if ep.duration_col in columns and ep.event_col in event_values:
            gone = pd.isna(columns[ep.duration_col])
            columns[ep.event_col] = np.where(gone, np.nan, np.asarray(event_values[ep.event_col], dtype="float64"))


def torch_device(device: str) -> Any:
    """The ``torch.device`` for a generator's ``device`` parameter: ``"auto"`` is CUDA when available, else the
    CPU; asking for CUDA on a machine without it is an error that says so. Imports torch (on use)."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise FedsynthError(f"device={device!r} was asked for but CUDA is not available; use device='auto'")
    return torch.device(device)


def check_epochs(generator: BaseGenerator[Any], epochs: Any) -> None:
    """Raise a :class:`ValidationError` unless ``epochs`` (``partial_fit``'s own count) is an int >= 1."""
    if not (isinstance(epochs, (int, np.integer)) and not isinstance(epochs, bool) and epochs >= 1):
        owner = type(generator).__name__
        raise ValidationError(
            f"partial_fit of {owner}",
            [Problem(f"The 'epochs' argument of {owner}.partial_fit must be an int in the range [1, inf)",
                     f"Got {epochs!r} instead.")],
        )


def check_weights(expected: Mapping[str, np.ndarray], weights: Mapping[str, Any], owner: str) -> None:
    """Raise one error listing every missing key, unknown key and wrong shape of ``weights``.

    ``expected`` is the model's own ``get_weights()``; FedAvg needs identical keys and shapes on every site.
    """
    problems = []
    for key in sorted(set(expected) - set(weights)):
        problems.append(Problem(f"weight {key!r}", "missing", f"shape {tuple(expected[key].shape)}"))
    for key in sorted(set(weights) - set(expected)):
        problems.append(Problem(f"weight {key!r}", "not a weight of this model", "keys of get_weights()"))
    for key in sorted(set(expected) & set(weights)):
        shape = tuple(np.shape(weights[key]))
        if shape != tuple(expected[key].shape):
            problems.append(Problem(f"weight {key!r}", f"has shape {shape}", f"shape {tuple(expected[key].shape)}"))
    if problems:
        raise ValidationError(f"Weights for {owner}", problems)


def _label(value: Any, kind: ColumnKind) -> str:
    if kind is ColumnKind.BINARY:
        return str(int(float(value)))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
