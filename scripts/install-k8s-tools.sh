#!/usr/bin/env bash
# Installs what tests/tests/repo/k8s_manifests.rs needs to render and validate the
# Kubernetes manifests offline. Safe to run again: it only installs what is
# missing.
set -euo pipefail

KUBERNETES_VALIDATE_VERSION=1.37.0

if ! command -v kubectl >/dev/null 2>&1; then
    echo "kubectl not found: install a kubectl client (1.32 or later, which" >&2
    echo "includes kustomize), see https://kubernetes.io/docs/tasks/tools/" >&2
    exit 1
fi
echo "kubectl: $(kubectl version --client 2>/dev/null | head -n 1)"

if command -v kubernetes-validate >/dev/null 2>&1; then
    echo "kubernetes-validate: $(kubernetes-validate --version) (already installed)"
    exit 0
fi

if command -v python3 >/dev/null 2>&1; then
    python=python3
else
    echo "python3 not found: kubernetes-validate is a Python package" >&2
    exit 1
fi

"$python" -m pip install --quiet "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"

# pyenv installs console scripts behind shims that only appear after a rehash.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash
fi

if command -v kubernetes-validate >/dev/null 2>&1; then
    echo "kubernetes-validate: $(kubernetes-validate --version)"
else
    echo "kubernetes-validate installed, but its script directory is not on PATH;" >&2
    echo "the tests fall back to '$python -m kubernetes_validate'." >&2
    "$python" -m kubernetes_validate --version
fi
