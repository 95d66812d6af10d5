#!/usr/bin/env bash
# Wall time of the whole-integration playbook (playbooks/integration.yml: authentik_blueprint,
# affine_oidc, verify) against N stand-in AFFiNE instances and one stand-in authentik, with
# `forks` parallel hosts: the first run (everything changes) and the second (nothing does).
#
#   scripts/bench-integration.sh                       # N=20 FORKS=10 REPEATS=5
#   N=40 FORKS=20 REPEATS=5 AFFINE_VERSION=0.25.3 scripts/bench-integration.sh
#
# Each repeat starts fresh stand-ins (`cargo run --release --example standins`: one authentik,
# N AFFiNE, each its own process on a loopback port), times an empty play over the same
# inventory (Ansible's start-up), a play of the same shape whose tasks do nothing (Ansible's
# own cost per task and host), then the first and the second run of the playbook. Per host = (playbook - empty play) / N: what one more AFFiNE adds to a run at this
# fork count. Medians over the repeats. A first run that is not changed=2 on every host, or a
# second run with any change, fails the benchmark.
#
# AFFiNE 0.27+ cannot be benchmarked this way: its SSRF guard refuses the stand-in authentik's
# loopback issuer. Needs the virtualenv of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

n=${N:-20}
forks=${FORKS:-10}
repeats=${REPEATS:-5}
affine_version=${AFFINE_VERSION:-0.26.1}
authentik_version=${AUTHENTIK_VERSION:-2026.8.0}
ansible_bin=${AFFINE_AUTHENTIK_ANSIBLE_BIN:-$(ls -d "$PWD"/.venv/ansible-*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ ! -x "$ansible_bin/ansible-playbook" ]; then
  echo "bench-integration: no ansible-playbook in $ansible_bin; run scripts/test.sh once (it makes .venv/ansible-<X.Y>/)" >&2
  exit 2
fi

cargo build --release --locked --quiet --bin affine-authentik --example standins
bin=$PWD/target/release/affine-authentik
standins=$PWD/target/release/examples/standins
playbook=$PWD/playbooks/integration.yml

work=$(mktemp -d)
pids=()
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT

# Throwaway credentials of the stand-ins: in the environment and a vars file, never on a
# command line.
export BENCH_ADMIN_PASSWORD="bench-admin-password"
export AUTHENTIK_TOKEN="bench-authentik-token"
admin_email=admin@example.com
unset AFFINE_URL AFFINE_ADMIN_EMAIL AFFINE_ADMIN_PASSWORD AFFINE_SESSION_TOKEN AUTHENTIK_URL ANSIBLE_CONFIG
mkdir -p "$work/tmp" "$work/home" "$work/inventory/group_vars/affine"
export HOME=$work/home ANSIBLE_HOME=$work/home/.ansible
export ANSIBLE_LOCAL_TEMP=$work/tmp ANSIBLE_REMOTE_TEMP=$work/tmp
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 LC_ALL=C.UTF-8
export ANSIBLE_LIBRARY=$work/library ANSIBLE_FORKS=$forks

"$bin" install-modules "$work/library" >/dev/null
umask 077
cat >"$work/inventory/group_vars/affine/secrets.yml" <<EOF
vault_affine_oidc_client_secret: bench-client-secret
vault_affine_admin_password: $BENCH_ADMIN_PASSWORD
EOF
printf -- '- hosts: affine\n  gather_facts: false\n  tasks: []\n' >"$work/empty.yml"
# The same shape doing nothing: three module runs and one assert per host, on the controller.
cat >"$work/noop.yml" <<'EOF'
- hosts: affine
  gather_facts: false
  tasks:
    - {ansible.builtin.command: "true", delegate_to: localhost, changed_when: false}
    - {ansible.builtin.command: "true", delegate_to: localhost, changed_when: false}
    - {ansible.builtin.command: "true", delegate_to: localhost, changed_when: false}
    - {ansible.builtin.assert: {that: [true], quiet: true}, delegate_to: localhost}
EOF

# start_standin ARGS...: starts one stand-in in the background, sets $url.
start_standin() {
  local out
  out=$(mktemp "$work/standin.XXXXXX")
  "$standins" "$@" >"$out" 2>"$out.err" &
  pids+=("$!")
  for _ in $(seq 200); do
    if [ -s "$out" ]; then break; fi
    sleep 0.02
  done
  url=$(head -n 1 "$out")
  if [ -z "$url" ]; then
    echo "bench-integration: a stand-in did not start: $(cat "$out.err")" >&2
    exit 1
  fi
}

# fresh_world: one authentik and N AFFiNE, and the inventory naming them.
fresh_world() {
  start_standin authentik --version "$authentik_version" --token-env AUTHENTIK_TOKEN
  local authentik_url=$url inv=$work/inventory/hosts.ini
  printf 'localhost ansible_connection=local ansible_python_interpreter=%s\n\n[affine]\n' \
    "$ansible_bin/python" >"$inv"
  for ((i = 1; i <= n; i++)); do
    start_standin affine --version "$affine_version" --admin-email "$admin_email" \
      --admin-password-env BENCH_ADMIN_PASSWORD
    printf 'affine-%02d affine_url=%s slug=affine-%02d\n' "$i" "$url" "$i" >>"$inv"
  done
  printf '\n[affine:vars]\nauthentik_url=%s\naffine_admin_email=%s\naffine_authentik_bin=%s\n' \
    "$authentik_url" "$admin_email" "$bin" >>"$inv"
}

# timed PLAYBOOK CHANGED: runs it, checks every host's recap shows CHANGED changes and no
# failure, prints microseconds.
timed() {
  local start end log=$work/last.log hosts
  start=$EPOCHREALTIME
  if ! "$ansible_bin/ansible-playbook" -i "$work/inventory/hosts.ini" "$1" >"$log" 2>&1; then
    echo "bench-integration: $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
  end=$EPOCHREALTIME
  if [ "$2" != - ]; then
    hosts=$(grep -Ec "^affine-[0-9]+ +: ok=[0-9]+ +changed=$2 +unreachable=0 +failed=0" "$log" || true)
    if [ "$hosts" != "$n" ]; then
      echo "bench-integration: $1 was not changed=$2 on all $n hosts:" >&2
      cat "$log" >&2
      exit 1
    fi
  fi
  echo $((${end/./} - ${start/./}))
}

declare -A samples
for ((r = 1; r <= repeats; r++)); do
  fresh_world
  samples[empty]+="$(timed "$work/empty.yml" -) "
  samples[noop]+="$(timed "$work/noop.yml" 0) "
  samples[first]+="$(timed "$playbook" 2) "
  samples[second]+="$(timed "$playbook" 0) "
  stop_all
  echo "repeat $r/$repeats done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
s() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000000 }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.0f", us / 1000 }'; }
empty_us=$(median <<<"${samples[empty]}")
printf 'machine: %s cores, %s; ansible-core %s; stand-ins: authentik %s, AFFiNE %s\n' "$(nproc)" \
  "$(uname -srm)" "$("$ansible_bin/ansible-playbook" --version | head -n 1 | sed 's/.*core //; s/]//')" \
  "$authentik_version" "$affine_version"
printf '%d AFFiNE hosts, forks=%d, %d repeats, medians; empty play over the same hosts: %s s\n' \
  "$n" "$forks" "$repeats" "$(s "$empty_us")"
printf '%-28s %10s %14s %18s\n' run "wall s" "wall/host ms" "per host ms (-empty)"
for run in noop first second; do
  total=$(median <<<"${samples[$run]}")
  case $run in
  noop) label="same 4 tasks doing nothing" ;;
  first) label="first (all changed)" ;;
  *) label="second (no change)" ;;
  esac
  printf '%-28s %10s %14s %18s\n' "$label" "$(s "$total")" "$(ms $((total / n)))" \
    "$(ms $(((total - empty_us) / n)))"
done
printf 'samples (us): empty %s| noop %s| first %s| second %s\n' "${samples[empty]}" "${samples[noop]}" \
  "${samples[first]}" "${samples[second]}"
