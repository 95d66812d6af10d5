#!/usr/bin/env bash
# The whole test suite, on a fresh machine or a warm one.
#
# 1. A virtualenv with the pinned ansible-core (scripts/ansible-requirements.txt) at .venv/,
#    made once and reused while the pin is unchanged: the tests run real ansible-playbook.
# 2. cargo test over every target (unit, CLI, stand-in, Ansible and contract tests).
#
# Contract tests against upstream interface files run when AFFINE_AUTHENTIK_REFERENCE_DIR
# names the folder that holds them (.ci/run sets it); without it they say they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.requirements"
if ! cmp -s scripts/ansible-requirements.txt "$stamp" 2>/dev/null; then
  echo "test.sh: installing the pinned ansible-core into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/ansible-requirements.txt
  cp scripts/ansible-requirements.txt "$stamp"
fi
export AFFINE_AUTHENTIK_ANSIBLE_BIN="$PWD/$venv/bin"

cargo test --locked --all-targets "$@"
