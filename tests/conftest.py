"""Shared pytest configuration: the real test components are session fixtures.

``tests.cluster.fixtures`` provides ``kube_cluster`` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from the official Go modules, plus a node
agent that runs pods) and ``kube_namespace``. ``tests.fixtures.seaweed`` provides
``s3_server`` (SeaweedFS's S3 gateway on 127.0.0.1, one per session) and
``tests.fixtures.otlp`` ``otlp_receiver`` (an OTLP/HTTP trace receiver).
"""

pytest_plugins = ["tests.cluster.fixtures", "tests.fixtures.seaweed", "tests.fixtures.otlp"]
