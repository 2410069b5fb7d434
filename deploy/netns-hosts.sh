#!/usr/bin/env bash
# Simulated hosts on one Linux machine, for multi-host tests and for trying torviz by hand.
#
#   deploy/netns-hosts.sh up PREFIX N [SUBNET]   make hosts PREFIX-1 .. PREFIX-N
#   deploy/netns-hosts.sh down PREFIX            remove them (safe to run again)
#
# Design: one network namespace per host, plus a hub namespace PREFIX-hub holding a bridge.
# Each host has a veth link `eth0` whose other end is a port of that bridge, so every host
# reaches every other on one /24. The machine's own namespace gets no interface, address or
# route, and no namespace has a default route or NAT: traffic to the test subnet never leaves
# these namespaces, and nothing in them can reach any other address.
#
# SUBNET is the first three octets of the /24 (default 10.213.7); host i gets SUBNET.i. It is
# refused if the machine already uses it, so a test address can never shadow a real one.
# Run a program on a host with `ip netns exec PREFIX-1 COMMAND`.
# Needs root and iproute2 (`ip`).
set -Eeuo pipefail

readonly DEFAULT_SUBNET="10.213.7"
readonly MAX_HOSTS=250

usage() {
  echo "usage: $0 up PREFIX N [SUBNET] | down PREFIX  (PREFIX: letters, digits, _ or ., up to 24; N: 1..$MAX_HOSTS; SUBNET like $DEFAULT_SUBNET)" >&2
  exit 2
}

fail() {
  echo "netns-hosts: $*" >&2
  exit 1
}

check_prefix() {
  [[ "$1" =~ ^[A-Za-z0-9_.]{1,24}$ ]] || usage
}

require_tools() {
  command -v ip >/dev/null 2>&1 || fail "the 'ip' command (iproute2) is missing; install iproute2"
  [ "$(id -u)" -eq 0 ] || fail "must run as root (network namespaces need CAP_SYS_ADMIN)"
}

# Namespaces this script made for PREFIX: PREFIX-<number> and PREFIX-hub, nothing else.
owned_namespaces() {
  local prefix=$1 name
  ip netns list 2>/dev/null | while read -r name _; do
    if [[ "$name" == "$prefix-hub" || "$name" =~ ^"$prefix"-[0-9]+$ ]]; then
      echo "$name"
    fi
  done
}

down() {
  local prefix=$1 ns pids
  for ns in $(owned_namespaces "$prefix"); do
    pids=$(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')
    if [ -n "$pids" ]; then
      # Their namespace lives on (without a name) until they exit; the links go with the hub.
      echo "netns-hosts: processes still running in $ns: $pids" >&2
    fi
    # Deleting the hub deletes every bridge port, and with each port its veth peer.
    ip netns delete "$ns"
  done
}

up() {
  local prefix=$1 count=$2 subnet=$3 hub="$1-hub" i ns
  [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 1 ] && [ "$count" -le "$MAX_HOSTS" ] || usage
  [[ "$subnet" =~ ^10\.([0-9]{1,3})\.([0-9]{1,3})$ ]] || usage
  [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] || usage
  require_tools
  if [ -n "$(owned_namespaces "$prefix")" ]; then
    fail "namespaces $prefix-* exist already; run '$0 down $prefix' first"
  fi
  # An address in it, or a route covering it (other than the default route), means the
  # machine already uses it.
  if ip -4 -o addr show | grep -qF " $subnet." ||
    ip -4 route show match "$subnet.0/24" | grep -qv '^default'; then
    fail "subnet $subnet.0/24 is in use on this machine; pass another SUBNET"
  fi

  # A half-built set is removed again, so a failed `up` leaves nothing behind.
  trap 'down "$prefix"; echo "netns-hosts: up failed; removed what it had made" >&2' ERR
  ip netns add "$hub"
  ip -n "$hub" link set lo up
  ip -n "$hub" link add br0 type bridge
  ip -n "$hub" link set br0 up
  for i in $(seq 1 "$count"); do
    ns="$prefix-$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # Both ends are created directly in their namespaces: no name ever appears in the
    # machine's own namespace, so two prefixes cannot clash there.
    ip -n "$hub" link add "h$i" type veth peer name eth0 netns "$ns"
    ip -n "$hub" link set "h$i" master br0 up
    ip -n "$ns" addr add "$subnet.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  trap - ERR
  for i in $(seq 1 "$count"); do
    echo "$prefix-$i $subnet.$i"
  done
}

[ $# -ge 1 ] || usage
case "$1" in
  up)
    [ $# -eq 3 ] || [ $# -eq 4 ] || usage
    check_prefix "$2"
    up "$2" "$3" "${4:-$DEFAULT_SUBNET}"
    ;;
  down)
    [ $# -eq 2 ] || usage
    check_prefix "$2"
    require_tools
    down "$2"
    ;;
  *)
    usage
    ;;
esac
