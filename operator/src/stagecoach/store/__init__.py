"""Stores for stage outputs and the trace: one protocol, several backends (DESIGN §5).

The runner, the local executor and the operator all talk to :class:`Store`; which backend
sits behind it (a local directory, ConfigMaps, an S3 bucket, a small store spilling into a
bucket) is decided once, by :func:`open_store` from the attempt's
:class:`~stagecoach.api.StoreRef`. Keys are the same everywhere (:mod:`.keys`), and so is
the stored form of an output (:mod:`.outputs`).
"""

from ._protocol import NotFound, Store, StoreError, TooLarge
from .configmap import SIZE_BUDGET, WRITER_LABEL, ConfigMapClient, ConfigMapStore, Conflict
from .factory import open_store, s3_store_ref
from .keys import OUTPUTS, REPLAY, TRACE, output_key, parse_output_key, replay_key, trace_key
from .local import LocalStore
from .outputs import StoredOutput, decode_output, encode_output
from .s3 import S3Store, run_prefix
from .spill import SpillStore
from .trace import merge_trace

__all__ = [
    "OUTPUTS",
    "REPLAY",
    "SIZE_BUDGET",
    "TRACE",
    "WRITER_LABEL",
    "ConfigMapClient",
    "ConfigMapStore",
    "Conflict",
    "LocalStore",
    "NotFound",
    "S3Store",
    "SpillStore",
    "Store",
    "StoreError",
    "StoredOutput",
    "TooLarge",
    "decode_output",
    "encode_output",
    "merge_trace",
    "open_store",
    "output_key",
    "parse_output_key",
    "replay_key",
    "run_prefix",
    "s3_store_ref",
    "trace_key",
]
