#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one.
#
# 1. One virtualenv per maintained ansible-core series (scripts/ansible-requirements-<X.Y>.txt)
#    at .venv/ansible-<X.Y>/, made once and reused while its pin is unchanged: the tests run
#    real ansible-playbook, ansible-galaxy and ansible-doc. The newest series runs the whole
#    Ansible suite (AFFINE_AUTHENTIK_ANSIBLE_BIN); every series, newest included, runs the
#    smoke set of tests/ansible_versions.rs from the built collection
#    (AFFINE_AUTHENTIK_ANSIBLE_BINS).
# 2. cargo test over every target (unit, CLI, stand-in, Ansible and contract tests).
#
# Contract tests against upstream interface files run when AFFINE_AUTHENTIK_REFERENCE_DIR
# names the folder that holds them (.ci/run sets it); without it they say they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# ansible-core 2.20+ run only on Python 3.12+, and 2.17 on at most 3.12: 3.12 runs them all.
# PYTHON overrides; else python3.12 on PATH, else a pyenv 3.12.
python=${PYTHON:-}
if [ -z "$python" ]; then
  if command -v python3.12 >/dev/null 2>&1 && python3.12 -c '' 2>/dev/null; then
    python=python3.12
  else
    for p in "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
      [ -x "$p" ] && python=$p
    done
  fi
fi
if [ -z "$python" ]; then
  echo "test.sh: needs Python 3.12 (ansible-core 2.17 to 2.21 all run on it); set PYTHON=/path/to/python3.12" >&2
  exit 1
fi

# Series, oldest first; the last is the newest.
series=()
for req in scripts/ansible-requirements-*.txt; do
  s=${req#scripts/ansible-requirements-}
  series+=("${s%.txt}")
done
mapfile -t series < <(printf '%s\n' "${series[@]}" | sort -V)

# The virtualenvs are independent: made side by side (pip's download cache is shared).
pids=()
for s in "${series[@]}"; do
  venv=.venv/ansible-$s
  req=scripts/ansible-requirements-$s.txt
  if ! cmp -s "$req" "$venv/.requirements" 2>/dev/null; then
    (
      echo "test.sh: installing ansible-core $s into $venv" >&2
      rm -rf "$venv"
      "$python" -m venv "$venv"
      "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
      cp "$req" "$venv/.requirements"
    ) &
    pids+=($!)
  fi
done
for pid in "${pids[@]}"; do
  wait "$pid"
done
echo "test.sh: ansible-core ${series[*]} ready after ${SECONDS}s" >&2

bins=()
for s in "${series[@]}"; do
  bins+=("$PWD/.venv/ansible-$s/bin")
done
AFFINE_AUTHENTIK_ANSIBLE_BIN="$PWD/.venv/ansible-${series[-1]}/bin"
AFFINE_AUTHENTIK_ANSIBLE_BINS=$(IFS=:; echo "${bins[*]}")
export AFFINE_AUTHENTIK_ANSIBLE_BIN AFFINE_AUTHENTIK_ANSIBLE_BINS

# The upstream interface files: a checkout beside ../shared/reference (as this project's
# workplace lays it out) uses them without being told; otherwise say plainly that the
# contract tests will pass without checking anything.
if [ -z "${AFFINE_AUTHENTIK_REFERENCE_DIR:-}" ] && [ -d ../shared/reference ]; then
  AFFINE_AUTHENTIK_REFERENCE_DIR="$(cd ../shared/reference && pwd)"
  export AFFINE_AUTHENTIK_REFERENCE_DIR
fi
if [ -z "${AFFINE_AUTHENTIK_REFERENCE_DIR:-}" ]; then
  echo "test.sh: AFFINE_AUTHENTIK_REFERENCE_DIR is not set: the contract tests (schemas, authentik recordings) will SKIP" >&2
fi

cargo test --locked --all-targets "$@"
echo "test.sh: done after ${SECONDS}s" >&2
