"""The one place that converts between Python objects and Flower records (and snake_case <-> kebab-case keys).

Settings and metrics travel as flat ``ConfigRecord``/``MetricRecord`` with kebab-case keys (``num-examples`` is
what FedAvg weighs by); structured payloads (domain summaries) travel as one tagged-JSON string (no pickle,
so a deployed server never unpickles what a site sent); weights travel as ``ArrayRecord`` with their names
kept verbatim; count tables travel packed in three flat arrays (:func:`pack_tables`); synthetic rows travel as
an ``ArrayRecord`` of per-column arrays (category codes of the shared domain for categorical columns, floats
for the rest).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord

from fedsynth.cohort.schema import ColumnKind, TableSchema
from fedsynth.encoding.domain import Domain

#: Key of the single string entry of a payload record.
PAYLOAD_KEY = "json"

#: What a ``RecordDict`` holds under a key.
AnyRecord = ArrayRecord | ConfigRecord | MetricRecord


def _expect(record: AnyRecord, cls: type, what: str) -> Any:
    if not isinstance(record, cls):
        raise TypeError(f"{what} must be a {cls.__name__}, got a {type(record).__name__}")
    return record


# -- key styles ----------------------------------------------------------------------------------------


def kebab(key: str) -> str:
    """``num_examples`` -> ``num-examples`` (Flower record style)."""
    return key.replace("_", "-")


def snake(key: str) -> str:
    """``num-examples`` -> ``num_examples`` (Python/YAML style)."""
    return key.replace("-", "_")


# -- flat settings and metrics -------------------------------------------------------------------------


def _config_value(key: str, value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (str, bytes)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_config_value(key, v) for v in value]
        if len({type(v) for v in items}) > 1:
            raise TypeError(f"setting {key!r}: a list must hold values of one type")
        return items
    raise TypeError(f"setting {key!r}: {type(value).__name__} cannot travel in a ConfigRecord; use a payload")


def to_config_record(settings: Mapping[str, Any]) -> ConfigRecord:
    """Flat settings (snake_case keys; scalars or lists of one scalar type) -> ``ConfigRecord`` (kebab keys).

    ``None`` values are left out (Flower records cannot hold them); read them back with ``.get``.
    """
    return ConfigRecord({kebab(k): _config_value(k, v) for k, v in settings.items() if v is not None})


def from_config_record(record: AnyRecord) -> dict[str, Any]:
    """``ConfigRecord`` (kebab keys) -> dict with snake_case keys."""
    record = _expect(record, ConfigRecord, "settings")
    return {snake(k): (list(v) if isinstance(v, list) else v) for k, v in record.items()}


def to_metric_record(metrics: Mapping[str, Any]) -> MetricRecord:
    """Numeric metrics (snake_case keys) -> ``MetricRecord`` (kebab keys); non-finite values are dropped."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, (bool, np.bool_)) or isinstance(v, (int, np.integer)):
            out[kebab(k)] = int(v)
        elif isinstance(v, (float, np.floating)) and math.isfinite(float(v)):
            out[kebab(k)] = float(v)
    return MetricRecord(out)


def from_metric_record(record: AnyRecord) -> dict[str, Any]:
    """``MetricRecord`` -> dict with snake_case keys."""
    record = _expect(record, MetricRecord, "metrics")
    return {snake(k): v for k, v in record.items()}


# -- structured payloads (tagged JSON) ----------------------------------------------------------------


def _encode(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return {"__objarray__": [_encode(v) for v in obj.ravel().tolist()], "shape": list(obj.shape)}
        return {"__ndarray__": [_encode(v) for v in obj.ravel().tolist()], "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        return {"__set__": [_encode(v) for v in sorted(obj, key=repr)]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, pd.Series):
        return {"__series__": _encode(obj.to_numpy()), "index": _encode(obj.index.to_numpy()), "name": _encode(obj.name)}
    if isinstance(obj, pd.DataFrame):
        return {
            "__frame__": {str(c): _encode(obj[c].to_numpy()) for c in obj.columns},
            "columns": [_encode(c) for c in obj.columns],
            "index": _encode(obj.index.to_numpy()),
        }
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _encode(v) for k, v in obj.items()}
        return {"__items__": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    raise TypeError(f"{type(obj).__name__} cannot be sent as a payload")


def _decode(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__ndarray__" in obj:
        return np.asarray([_decode(v) for v in obj["__ndarray__"]], dtype=np.dtype(obj["dtype"])).reshape(obj["shape"])
    if "__objarray__" in obj:
        arr = np.empty(int(np.prod(obj["shape"])) if obj["shape"] else 1, dtype=object)
        arr[:] = [_decode(v) for v in obj["__objarray__"]]
        return arr.reshape(obj["shape"])
    if "__tuple__" in obj:
        return tuple(_decode(v) for v in obj["__tuple__"])
    if "__set__" in obj:
        return {_decode(v) for v in obj["__set__"]}
    if "__series__" in obj:
        return pd.Series(_decode(obj["__series__"]), index=_decode(obj["index"]), name=_decode(obj["name"]))
    if "__frame__" in obj:
        cols = [_decode(c) for c in obj["columns"]]
        data = {c: _decode(obj["__frame__"][str(c)]) for c in cols}
        return pd.DataFrame(data, index=_decode(obj["index"]), columns=cols)
    if "__items__" in obj:
        return {_hashable(_decode(k)): _decode(v) for k, v in obj["__items__"]}
    return {k: _decode(v) for k, v in obj.items()}


def _hashable(v: Any) -> Any:
    return tuple(_hashable(x) for x in v) if isinstance(v, list) else v


def encode_payload(obj: Any) -> str:
    """Any JSON-like object (also tuples, tuple keys, numpy arrays, pandas frames) -> tagged JSON text."""
    return json.dumps(_encode(obj), separators=(",", ":"), allow_nan=False)


def decode_payload(text: str) -> Any:
    """Inverse of :func:`encode_payload`."""
    return _decode(json.loads(text))


def to_payload_record(obj: Any) -> ConfigRecord:
    """A structured payload as a ``ConfigRecord`` holding one tagged-JSON string."""
    return ConfigRecord({PAYLOAD_KEY: encode_payload(obj)})


def from_payload_record(record: AnyRecord) -> Any:
    record = _expect(record, ConfigRecord, "a payload")
    return decode_payload(str(record[PAYLOAD_KEY]))


def domain_to_text(domain: Domain) -> str:
    return json.dumps(domain.to_dict(), separators=(",", ":"))


def domain_from_text(text: str) -> Domain:
    return Domain.from_dict(json.loads(text))


# -- weights ------------------------------------------------------------------------------------------


def to_array_record(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    """Named weights -> ``ArrayRecord`` (names kept verbatim: they are layer names, not settings)."""
    # np.ascontiguousarray would turn 0-d arrays (batch-norm counters) into shape (1,); copy() keeps the shape.
    return ArrayRecord({str(k): Array(np.asarray(v).copy(order="C")) for k, v in weights.items()})


def from_array_record(record: AnyRecord) -> dict[str, np.ndarray]:
    arrays: ArrayRecord = _expect(record, ArrayRecord, "arrays")
    return {k: a.numpy() for k, a in arrays.items()}


def pack_tables(keys: list[str], tables: Mapping[str, np.ndarray], *, signed: bool = False) -> ArrayRecord:
    """Integer tables asked for by ``keys`` -> three flat arrays (cheap to encode however many tables there are).

    ``present`` (one 0/1 per key: whether ``tables`` has it), ``dims`` (the shapes of the present tables, each
    prefixed by its number of axes) and ``counts`` (their cells in key order, C order, int32 on the wire). A
    request for thousands of small count tables thus costs three arrays, not thousands. Inverse:
    :func:`unpack_tables`.
    """
    present = np.array([k in tables for k in keys], dtype=np.int8)
    arrays = [np.asarray(tables[k]) for k in keys if k in tables]
    dims = np.array([d for a in arrays for d in (a.ndim, *a.shape)], dtype=np.int64)
    cells = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, dtype=np.int64)
    low = np.iinfo(np.int32).min if signed else 0  # signed: noisy (differentially private) counts
    if cells.size and (cells.min() < low or cells.max() > np.iinfo(np.int32).max):
        raise ValueError(f"pack_tables carries counts in [{low}, 2**31)")
    return ArrayRecord({"present": Array(present), "dims": Array(dims), "counts": Array(cells.astype(np.int32))})


def unpack_tables(record: AnyRecord, keys: list[str]) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack_tables` for the same ``keys``: the tables that were present, as int64 arrays."""
    arrays = from_array_record(record)
    present = arrays["present"].astype(bool)
    if len(present) != len(keys):
        raise ValueError(f"a packed reply covers {len(present)} tables, the request asked for {len(keys)}")
    dims = arrays["dims"].tolist()
    cells = arrays["counts"].astype(np.int64)
    out: dict[str, np.ndarray] = {}
    d = c = 0
    for key in (k for k, p in zip(keys, present, strict=True) if p):
        ndim = int(dims[d])
        shape = tuple(int(x) for x in dims[d + 1 : d + 1 + ndim])
        size = math.prod(shape)
        out[key] = cells[c : c + size].reshape(shape)
        d += 1 + ndim
        c += size
    if d != len(dims) or c != len(cells):
        raise ValueError("a packed reply's shapes do not match its cells")
    return out


# -- synthetic rows -----------------------------------------------------------------------------------


def frame_to_array_record(frame: pd.DataFrame, domain: Domain) -> ArrayRecord:
    """Synthetic rows -> per-column arrays: categorical columns as int codes of the domain (-1 = missing)."""
    arrays: dict[str, np.ndarray] = {}
    for name in frame.columns:
        if name not in domain.columns:
            continue
        col = domain[name]
        if col.kind is ColumnKind.CATEGORICAL:
            lookup = {c: i for i, c in enumerate(col.categories)}
            codes = [lookup.get(v, -1) if isinstance(v, str) else -1 for v in frame[name].tolist()]
            arrays[name] = np.asarray(codes, dtype=np.int64)
        else:
            arrays[name] = frame[name].astype("float64").to_numpy()
    return to_array_record(arrays)


def array_record_to_frame(record: AnyRecord, domain: Domain, schema: TableSchema) -> pd.DataFrame:
    """Inverse of :func:`frame_to_array_record`; derived columns are not included (recompute them)."""
    arrays = from_array_record(record)
    out: dict[str, Any] = {}
    for name, values in arrays.items():
        col = domain[name]
        if col.kind is ColumnKind.CATEGORICAL:
            cats = np.asarray(list(col.categories) + [np.nan], dtype=object)
            out[name] = cats[np.where(values < 0, len(col.categories), values)]
        else:
            out[name] = values.astype("float64")
    frame = pd.DataFrame(out)
    present = [c for c in schema.model_columns if c in frame.columns]
    return schema.select(present).coerce(frame[present])


# -- error text that may leave a site -----------------------------------------------------------------

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_DIGITS = re.compile(r"[0-9]+(?:[.,][0-9]+)*(?:[eE][-+]?[0-9]+)?")


def scrub_text(text: str, *, limit: int = 300) -> str:
    """Remove quoted strings and numbers from ``text`` (they may be data values); keep the shape of the message."""
    text = _QUOTED.sub("<...>", text)
    text = _DIGITS.sub("<n>", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit]


def scrub_error(exc: BaseException) -> str:
    """The only error text a site sends: the exception type, plus, for fedsynth's own errors (which are written
    never to echo a patient's value), the message with quoted strings and numbers removed."""
    from fedsynth.errors import FedsynthError

    name = type(exc).__name__
    if isinstance(exc, FedsynthError):
        return f"{name}: {scrub_text(str(exc).splitlines()[0] if str(exc) else '')}"
    return f"{name}: the site handler failed (details withheld at the site)"
