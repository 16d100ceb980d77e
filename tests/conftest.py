"""Shared pytest configuration: the real test components are session fixtures.

``tests.cluster.fixtures`` provides ``kube_cluster`` (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from the official Go modules, plus a node
agent that runs pods) and ``kube_namespace``.
"""

pytest_plugins = ["tests.cluster.fixtures"]
