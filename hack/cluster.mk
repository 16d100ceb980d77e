# Make fragment for the real-Kubernetes test cluster (include it from the top-level Makefile).
#
# Why: `make test` and developers need the same control-plane binaries (built from
# the official Go modules by hack/cluster/build.sh, cached outside the repo) and a
# way to run a cluster in the background for manual poking.
#
#   make cluster-bins   build or reuse etcd, kube-apiserver, kube-controller-manager,
#                       kube-scheduler and kubectl; prints their directory
#   make kubectl        make sure a kubectl matching the control plane exists; prints its path
#   make cluster-up     start control plane + node agent in the background;
#                       admin kubeconfig at .cluster/kubeconfig
#   make cluster-down   stop it (no process is left behind)

# Keep the including Makefile's default goal, wherever this file is included.
CLUSTER_SAVED_GOAL := $(.DEFAULT_GOAL)
CLUSTER_REPO := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
CLUSTER_STATE ?= $(CLUSTER_REPO)/.cluster
# The harness needs the project's environment (cryptography, PyYAML): cluster-up
# installs it first (the including Makefile's $(STAMP)), never the system python.
CLUSTER_PYTHON ?= $(CLUSTER_REPO)/.venv/bin/python
CLUSTER_UP_TIMEOUT ?= 180

.PHONY: cluster-bins kubectl cluster-up cluster-down

cluster-bins:
	@bash $(CLUSTER_REPO)/hack/cluster/build.sh

# kubectl is built from k8s.io/kubernetes/cmd/kubectl with the control plane, because
# Debian 12 only ships kubernetes-client 1.20, far outside kubectl's +/-1 minor skew.
kubectl: cluster-bins
	@echo "$$(bash $(CLUSTER_REPO)/hack/cluster/build.sh --bin-dir)/kubectl"

cluster-up: cluster-bins $(STAMP)
	@mkdir -p $(CLUSTER_STATE)
	@if [ -f $(CLUSTER_STATE)/supervisor.pid ] && kill -0 $$(cat $(CLUSTER_STATE)/supervisor.pid) 2>/dev/null; then \
	  echo "cluster already running (pid $$(cat $(CLUSTER_STATE)/supervisor.pid))"; \
	else \
	  rm -f $(CLUSTER_STATE)/ready $(CLUSTER_STATE)/failed; \
	  cd $(CLUSTER_REPO) && nohup setsid $(CLUSTER_PYTHON) -m tests.cluster.controlplane up \
	    --state-dir $(CLUSTER_STATE) > $(CLUSTER_STATE)/supervisor.log 2>&1 < /dev/null & \
	  sup=$$!; \
	  for i in $$(seq $$(( $(CLUSTER_UP_TIMEOUT) * 5 ))); do \
	    [ -f $(CLUSTER_STATE)/ready ] && break; \
	    if [ -f $(CLUSTER_STATE)/failed ]; then cat $(CLUSTER_STATE)/supervisor.log; exit 1; fi; \
	    if ! kill -0 $$sup 2>/dev/null && [ ! -f $(CLUSTER_STATE)/ready ]; then \
	      echo "the cluster supervisor exited:"; tail -50 $(CLUSTER_STATE)/supervisor.log; exit 1; fi; \
	    sleep 0.2; \
	  done; \
	  [ -f $(CLUSTER_STATE)/ready ] || { echo "cluster did not become ready"; \
	    tail -50 $(CLUSTER_STATE)/supervisor.log; exit 1; }; \
	fi
	@echo "cluster at $$(cat $(CLUSTER_STATE)/ready)"
	@echo "export KUBECONFIG=$(CLUSTER_STATE)/kubeconfig"
	@echo "kubectl: $$(bash $(CLUSTER_REPO)/hack/cluster/build.sh --bin-dir)/kubectl"

cluster-down:
	@cd $(CLUSTER_REPO) && $(CLUSTER_PYTHON) -m tests.cluster.controlplane down --state-dir $(CLUSTER_STATE)

.DEFAULT_GOAL := $(CLUSTER_SAVED_GOAL)
