"""The operator's default storage (``STAGECOACH_DEFAULT_STORAGE``) and the store each run
gets: spec.storage first, else the default; ConfigMaps spill to the default's bucket."""

from __future__ import annotations

import json

import pytest
from stagecoach.api import S3Storage, Storage
from stagecoach.operator.storage import parse_default_storage, run_storage

S3 = {"bucket": "runs", "prefix": "sc", "endpoint": "http://s3:8333", "region": "",
      "credentialsSecret": "s3-creds"}


def test_parse_default_storage() -> None:
    assert parse_default_storage(None) is None
    assert parse_default_storage("") is None
    assert parse_default_storage("null") is None
    cm = parse_default_storage(json.dumps({"type": "configmap"}))
    assert cm is not None and cm.type == "configmap" and cm.s3 is None
    # the chart's placeholders (empty strings) are unset values
    blank = parse_default_storage(json.dumps({"type": "configmap", "s3": {
        "bucket": "", "prefix": "", "endpoint": "", "region": "", "credentialsSecret": ""}}))
    assert blank is not None and blank.s3 is None
    s3 = parse_default_storage(json.dumps({"type": "s3", "s3": S3}))
    assert s3 is not None and s3.s3 is not None
    assert (s3.s3.bucket, s3.s3.region, s3.s3.credentials_secret) == ("runs", None, "s3-creds")
    for bad in ("{", "[1]", json.dumps({"type": "s3"}), json.dumps({"type": "nfs"})):
        with pytest.raises(ValueError, match="STAGECOACH_DEFAULT_STORAGE"):
            parse_default_storage(bad)


def test_run_storage_prefers_the_spec_then_the_default() -> None:
    bucket = Storage(type="s3", s3=S3Storage.model_validate(S3))
    overflow_only = Storage(type="configmap", s3=S3Storage.model_validate(S3))
    ref, secret = run_storage("ns", "p", "u1", None, None)
    assert (ref.type, ref.prefix, ref.overflow, secret) == ("configmap", "p", None, None)
    ref, secret = run_storage("ns", "p", "u1", None, bucket)
    assert (ref.type, ref.bucket, ref.prefix, secret) == ("s3", "runs", "sc/ns/p/u1", "s3-creds")
    assert ref.endpoint == "http://s3:8333"
    # an explicit ConfigMap store spills to the default's bucket, by either default type
    for default in (bucket, overflow_only):
        ref, secret = run_storage("ns", "p", "u1", Storage(type="configmap"), default)
        assert (ref.type, ref.namespace, ref.prefix, secret) == ("configmap", "ns", "p",
                                                                 "s3-creds")
        assert ref.overflow is not None
        assert (ref.overflow.type, ref.overflow.prefix) == ("s3", "sc/ns/p/u1")
    ref, _ = run_storage("ns", "p", "u1", None, overflow_only)
    assert ref.type == "configmap" and ref.overflow is not None
    # the pipeline's own bucket wins over the default
    own = Storage(type="s3", s3=S3Storage(bucket="mine"))
    ref, secret = run_storage("ns", "p", "u1", own, bucket)
    assert (ref.bucket, ref.overflow, secret) == ("mine", None, None)
