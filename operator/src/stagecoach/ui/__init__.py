"""``stagecoach ui``: a web UI for local runs and a cluster's pipelines (DESIGN §12).

:mod:`.server` serves one page and its JSON API on 127.0.0.1, :mod:`.sources` reads runs
(local directories, or the cluster with the user's own kubeconfig), :mod:`.views` and
:mod:`.graph` turn them into what the page shows. The page itself is ``static/``.
"""
