#!/usr/bin/env bash
# Offline checks of the container and cluster files: Dockerfile, .dockerignore,
# deploy/ (Kubernetes manifests: the online StatefulSet and its overlays, the
# batch Jobs, autoscaling and monitoring; alert rules, Grafana dashboard).
#
#   bash tests/deploy/check_manifests.sh        (CTest: deploy_manifests)
#
# Needs the Debian packages python3-yaml (for /usr/bin/python3), yamllint and
# prometheus (for promtool), and node with the schema validator's npm
# packages in tests/deploy/validator (scripts/setup.sh installs them). Runs
# kubectl (`kubectl kustomize`, offline) and the shellcheck linter only when
# they are installed; without kubectl the overlays are rendered by
# check_manifests.py alone (MEMAUDIT_NO_KUBECTL=1 forces that).
# Prints one line per check and, last, "N passed, M failed"; exits 1 if any
# check failed.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2

PYTHON=/usr/bin/python3
passed=0
failed=0

pass() { passed=$((passed + 1)); echo "ok - $1"; }
fail() { failed=$((failed + 1)); echo "not ok - $1"; }
skip() { echo "skip - $1"; }
have() { command -v "$1" >/dev/null 2>&1; }

# check NAME COMMAND...: one check; the command's output is shown on failure.
check() {
  local name=$1 output
  shift
  if output=$("$@" 2>&1); then
    pass "$name"
  else
    fail "$name"
    printf '%s\n' "$output" | sed 's/^/    /'
  fi
}

if have yamllint; then
  check "yamllint -s deploy/ (.yamllint)" yamllint -s -c .yamllint deploy/
else
  fail "yamllint is not installed (Debian package yamllint)"
fi

if have promtool; then
  check "promtool check rules deploy/monitoring/memaudit-rules.yaml" \
    promtool check rules deploy/monitoring/memaudit-rules.yaml
  check "promtool test rules deploy/monitoring/memaudit-rules.test.yaml" \
    promtool test rules deploy/monitoring/memaudit-rules.test.yaml
else
  fail "promtool is not installed (Debian package prometheus)"
fi

if have shellcheck; then
  check "shellcheck tests/deploy/check_manifests.sh" shellcheck tests/deploy/check_manifests.sh
else
  skip "shellcheck tests/deploy/check_manifests.sh: shellcheck not installed"
fi

kubectl_args=()
if [[ "${MEMAUDIT_NO_KUBECTL:-0}" != 1 ]] && have kubectl; then
  kubectl_args=(--kubectl "$(command -v kubectl)")
  check "kubectl kustomize deploy/monitoring/" kubectl kustomize deploy/monitoring
fi

if [[ -x "$PYTHON" ]] && "$PYTHON" -c 'import yaml' 2>/dev/null; then
  python_output=$("$PYTHON" tests/deploy/check_manifests.py "${kubectl_args[@]}" 2>&1)
  python_status=$?
  printf '%s\n' "$python_output" | grep -v '^# python:'
  python_passed=$(grep -c '^ok - ' <<<"$python_output")
  python_failed=$(grep -c '^not ok - ' <<<"$python_output")
  passed=$((passed + python_passed))
  failed=$((failed + python_failed))
  if ((python_status != 0 && python_failed == 0)); then
    fail "tests/deploy/check_manifests.py exited with status $python_status"
  fi
else
  fail "$PYTHON cannot import yaml (Debian package python3-yaml)"
fi

echo "$passed passed, $failed failed"
((failed == 0))
