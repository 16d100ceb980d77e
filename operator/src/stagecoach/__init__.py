"""Stagecoach: a Kubernetes-native orchestrator for agent pipelines.

The package is layered (checked by ``tests/unit/test_layering.py``):
``api`` (pydantic models, the only schema) → ``engine`` (pure planning) → the shells
(``local``, ``operator``) and the ``cli`` that drives them.
"""

__version__ = "0.1.0"
GROUP = "stagecoach.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
