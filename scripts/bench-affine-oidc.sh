#!/usr/bin/env bash
# What one affine_oidc task costs under ansible-playbook when nothing changes, against the same
# reconcile written the way people do it today with ansible.builtin.uri tasks (sign in, query
# appConfig, compare with a `when:`, update only when different), against the same stand-in
# AFFiNE; and the peak memory of one module run. Goals of issue 3: the module at most one third
# of the uri version's time, peak memory under 15 MB.
#
#   scripts/bench-affine-oidc.sh            # N=18 reconciles per playbook, REPEATS=5
#   N=10 REPEATS=9 AFFINE_VERSION=0.21.0 scripts/bench-affine-oidc.sh
#
# Each repeat runs, side by side: an empty playbook (Ansible's start-up), then N module tasks
# and N uri reconciles, once signing in with a password and once with a session token. Every
# timed playbook gets a fresh stand-in AFFiNE (`cargo run --release --example standins`),
# seeded with the wanted value, because AFFiNE allows 20 sign-ins a minute per client: N + 1
# (the seeding) must stay within that. Per reconcile = (playbook time - empty playbook) / N;
# medians over the repeats. A run that reports a change or a failure aborts the benchmark.
# Needs the virtualenv of scripts/test.sh and GNU time (apt-get install -y time).
set -euo pipefail
cd "$(dirname "$0")/.."

n=${N:-18}
repeats=${REPEATS:-5}
version=${AFFINE_VERSION:-0.26.1}
if ((n < 1 || n > 19)); then
  echo "bench-affine-oidc: N must be 1..19 (AFFiNE's 20 sign-ins a minute, one for seeding)" >&2
  exit 2
fi
ansible_bin=${AFFINE_AUTHENTIK_ANSIBLE_BIN:-$(ls -d "$PWD"/.venv/ansible-*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ ! -x "$ansible_bin/ansible-playbook" ]; then
  echo "bench-affine-oidc: no ansible-playbook in $ansible_bin; run scripts/test.sh once (it makes .venv/ansible-<X.Y>/)" >&2
  exit 2
fi
if [ ! -x /usr/bin/time ]; then
  echo "bench-affine-oidc: /usr/bin/time (GNU time) is missing: apt-get install -y time" >&2
  exit 2
fi

cargo build --release --locked --quiet --bin affine-authentik --example standins
bin=$PWD/target/release/affine-authentik
standins=$PWD/target/release/examples/standins

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Throwaway credentials of the stand-ins; in files or the environment, never on a command line.
export BENCH_ADMIN_PASSWORD="bench-admin-password"
export BENCH_AUTHENTIK_TOKEN="bench-authentik-token"
admin_email=admin@example.com
client_secret="bench-client-secret"
unset AFFINE_URL AFFINE_ADMIN_EMAIL AFFINE_ADMIN_PASSWORD AFFINE_SESSION_TOKEN ANSIBLE_CONFIG
mkdir -p "$work/tmp" "$work/home"
export HOME=$work/home ANSIBLE_HOME=$work/home/.ansible
export ANSIBLE_LOCAL_TEMP=$work/tmp ANSIBLE_REMOTE_TEMP=$work/tmp
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 ANSIBLE_RETRY_FILES_ENABLED=0 LC_ALL=C.UTF-8

"$bin" install-modules "$work/library" >/dev/null
printf 'localhost ansible_connection=local ansible_python_interpreter=%s\n' \
  "$ansible_bin/python" >"$work/inventory.ini"

# start_standin ARGS...: starts one stand-in, sets $url and $standin_pid.
start_standin() {
  local out
  out=$(mktemp "$work/standin.XXXXXX")
  "$standins" "$@" >"$out" 2>"$out.err" &
  standin_pid=$!
  pids+=("$standin_pid")
  for _ in $(seq 200); do
    if [ -s "$out" ]; then break; fi
    sleep 0.05
  done
  url=$(head -n 1 "$out")
  if [ -z "$url" ]; then
    echo "bench-affine-oidc: the stand-in did not start: $(cat "$out.err")" >&2
    exit 1
  fi
}
stop_standin() { kill "$standin_pid" 2>/dev/null || true; wait "$standin_pid" 2>/dev/null || true; }

start_standin authentik --version 2025.10.1 --token-env BENCH_AUTHENTIK_TOKEN --provider affine
issuer="$url/application/o/affine/"

umask 077
cat >"$work/secrets.yml" <<EOF
admin_password: $BENCH_ADMIN_PASSWORD
client_secret: $client_secret
EOF
printf '{"email": "%s", "password": "%s"}\n' "$admin_email" "$BENCH_ADMIN_PASSWORD" >"$work/sign-in.json"

# module_args FILE AUTH_JSON: the args file Ansible would write for one unchanged task.
module_args() {
  jq -n --arg url "$affine_url" --arg issuer "$issuer" --arg secret "$client_secret" \
    --argjson auth "$2" \
    '{_ansible_module_name: "affine_oidc", affine_url: $url, issuer: $issuer,
      client_id: "bench-client", client_secret: $secret} + $auth' >"$1"
}

# fresh_affine: a new stand-in AFFiNE holding the wanted value; sets $affine_url and $token
# (a session id from one sign-in, as a user copies it from the affine_session cookie).
fresh_affine() {
  start_standin affine --version "$version" --admin-email "$admin_email" \
    --admin-password-env BENCH_ADMIN_PASSWORD
  affine_url=$url
  curl -sf -c "$work/jar" -H 'Content-Type: application/json' --data @"$work/sign-in.json" \
    -o /dev/null "$affine_url/api/auth/sign-in"
  token=$(awk '$6 == "affine_session" { print $7 }' "$work/jar")
  module_args "$work/seed.json" "$(jq -n --arg t "$token" '{session_token: $t}')"
  if ! "$work/library/affine_oidc" "$work/seed.json" >"$work/seed.out" ||
    ! jq -e '.changed == true' "$work/seed.out" >/dev/null; then
    echo "bench-affine-oidc: seeding the stand-in failed: $(cat "$work/seed.out")" >&2
    exit 1
  fi
  printf 'affine_url: %s\nsession_token: %s\n' "$affine_url" "$token" >"$work/run.yml"
}

# The playbooks. Play vars hold the wanted value for the uri version's comparison.
header() {
  cat <<EOF
- hosts: localhost
  gather_facts: false
  vars:
    issuer: "$issuer"
    wanted: {issuer: "{{ issuer }}", clientId: bench-client, clientSecret: "{{ client_secret }}", args: {}}
  tasks:
EOF
}
module_task() { # $1: index, $2: auth lines
  cat <<EOF
    - name: affine_oidc $1
      affine_oidc:
        affine_url: "{{ affine_url }}"
$2
        issuer: "{{ issuer }}"
        client_id: bench-client
        client_secret: "{{ client_secret }}"
EOF
}
uri_reconcile() { # $1: index, $2: "password" or "token"
  local auth
  if [ "$2" = password ]; then
    cat <<EOF
    - name: sign in $1
      ansible.builtin.uri:
        url: "{{ affine_url }}/api/auth/sign-in"
        method: POST
        body_format: json
        body: {email: $admin_email, password: "{{ admin_password }}"}
      register: signin
      no_log: true
EOF
    auth='Cookie: "{{ signin.cookies_string }}"'
  else
    auth='Authorization: "Bearer {{ session_token }}"'
  fi
  cat <<EOF
    - name: read appConfig $1
      ansible.builtin.uri:
        url: "{{ affine_url }}/graphql"
        method: POST
        body_format: json
        headers: {$auth}
        body: {query: "{ appConfig }"}
      register: config
      no_log: true
    - name: update if different $1
      ansible.builtin.uri:
        url: "{{ affine_url }}/graphql"
        method: POST
        body_format: json
        headers: {$auth}
        body:
          query: "mutation(\$u: [UpdateAppConfigInput!]!) { updateAppConfig(updates: \$u) }"
          variables: {u: [{module: oauth, key: providers.oidc, value: "{{ wanted }}"}]}
      when: config.json.data.appConfig.oauth.providers.oidc != wanted
      no_log: true
EOF
}
header | sed 's/^  tasks:$/  tasks: []/' >"$work/empty.yml"
password_auth=$'        admin_email: '"$admin_email"$'\n        admin_password: "{{ admin_password }}"'
token_auth='        session_token: "{{ session_token }}"'
{
  header
  for ((i = 1; i <= n; i++)); do module_task "$i" "$password_auth"; done
} >"$work/module-password.yml"
{
  header
  for ((i = 1; i <= n; i++)); do module_task "$i" "$token_auth"; done
} >"$work/module-token.yml"
{
  header
  for ((i = 1; i <= n; i++)); do uri_reconcile "$i" password; done
} >"$work/uri-password.yml"
{
  header
  for ((i = 1; i <= n; i++)); do uri_reconcile "$i" token; done
} >"$work/uri-token.yml"

# timed PLAYBOOK: runs it, checks the recap says nothing changed or failed, prints microseconds.
timed() {
  local start end log=$work/last.log
  start=$EPOCHREALTIME
  if ! "$ansible_bin/ansible-playbook" -i "$work/inventory.ini" "$work/$1" \
    -e @"$work/secrets.yml" -e @"$work/run.yml" >"$log" 2>&1; then
    echo "bench-affine-oidc: $1 failed:" >&2
    cat "$log" >&2
    exit 1
  fi
  end=$EPOCHREALTIME
  if [ "$1" != empty.yml ] &&
    ! grep -Eq 'localhost +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$log"; then
    echo "bench-affine-oidc: $1 was not an unchanged run:" >&2
    cat "$log" >&2
    exit 1
  fi
  echo $((${end/./} - ${start/./}))
}

variants=(module-password uri-password module-token uri-token)
declare -A samples
printf 'affine_url: unused\nsession_token: unused\n' >"$work/run.yml"
timed empty.yml >/dev/null # warm caches
for ((r = 1; r <= repeats; r++)); do
  printf 'affine_url: unused\nsession_token: unused\n' >"$work/run.yml"
  samples[empty]+="$(timed empty.yml) "
  for v in "${variants[@]}"; do
    fresh_affine
    samples[$v]+="$(timed "$v.yml") "
    stop_standin
  done
  echo "repeat $r/$repeats done" >&2
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ms() { awk -v us="$1" 'BEGIN { printf "%.1f", us / 1000 }'; }
empty_us=$(median <<<"${samples[empty]}")
declare -A per per_total
for v in "${variants[@]}"; do
  total=$(median <<<"${samples[$v]}")
  per[$v]=$(((total - empty_us) / n))
  per_total[$v]=$total
done

# Peak memory of one module run (unchanged), with each kind of credential.
fresh_affine
module_args "$work/pw.json" "$(jq -n --arg e "$admin_email" --arg p "$BENCH_ADMIN_PASSWORD" \
  '{admin_email: $e, admin_password: $p}')"
module_args "$work/tok.json" "$(jq -n --arg t "$token" '{session_token: $t}')"
peak() {
  local max=0 kb
  for _ in 1 2 3 4 5; do
    kb=$(/usr/bin/time -v "$work/library/affine_oidc" "$1" 2>&1 >/dev/null |
      awk -F': *' '/Maximum resident set size/ { print $2 }')
    if [ "$kb" -gt "$max" ]; then max=$kb; fi
  done
  echo "$max"
}
peak_pw=$(peak "$work/pw.json")
peak_tok=$(peak "$work/tok.json")
stop_standin

verdict() { if [ "$1" -le "$2" ]; then echo ok; else echo MISSED; fi; }
printf 'machine: %s cores, %s; ansible-core %s; stand-in AFFiNE %s\n' "$(nproc)" "$(uname -srm)" \
  "$("$ansible_bin/ansible-playbook" --version | head -n 1 | sed 's/.*core //; s/]//')" "$version"
printf 'N=%d reconciles per playbook, %d repeats, medians; empty playbook %s ms\n' "$n" "$repeats" "$(ms "$empty_us")"
printf '%-16s %12s %16s\n' variant "playbook ms" "per reconcile ms"
for v in "${variants[@]}"; do
  printf '%-16s %12s %16s\n' "$v" "$(ms "${per_total[$v]}")" "$(ms "${per[$v]}")"
done
ok=0
for auth in password token; do
  m=${per[module-$auth]} u=${per[uri-$auth]}
  ratio=$(awk -v m="$m" -v u="$u" 'BEGIN { printf "%.2f", (u > 0 ? m / u : 0) }')
  v=$(verdict $((m * 3)) "$u")
  printf 'with a %s: module/uri = %s; goal <= 0.33: %s\n' "$auth" "$ratio" "$v"
  [ "$v" = ok ] || ok=1
done
for pair in "password:$peak_pw" "token:$peak_tok"; do
  kb=${pair#*:}
  v=$(verdict "$kb" $((15 * 1024)))
  printf 'peak memory of one module run (%s): %d.%d MB max RSS (GNU time, max of 5); goal < 15 MB: %s\n' \
    "${pair%%:*}" $((kb / 1024)) $((kb % 1024 * 10 / 1024)) "$v"
  [ "$v" = ok ] || ok=1
done
exit $ok
