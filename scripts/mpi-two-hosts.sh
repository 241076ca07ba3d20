#!/usr/bin/env bash
# coop's MPI engine across two "hosts" simulated on this machine.
#
# Two network namespaces joined by a veth pair, with addresses that exist only
# inside them, stand for two hosts; a stand-in for ssh (Open MPI's
# plm_rsh_agent) runs commands "on" a host with `ip netns exec NS unshare
# --uts --mount`, so each host has its own hostname. mpirun starts in the
# first namespace with a hostfile of both addresses and places ranks on both;
# ranks talk TCP over the veth pair. The filesystem is shared, as on a cluster.
#
# Checks, each against --engine sequential on the same input:
#   1. wordcount on a file (every rank maps it): same output, ranks on both hosts;
#   2. wordcount on standard input (rank 0 sends the text over TCP): same output;
#   3. matmul on two .npy files: the same C, byte for byte;
#   4. the data directory hidden on the second host: the job fails at once,
#      naming the rank, the host and the missing file.
# The namespaces are removed however the script ends.
#
# Usage: sudo scripts/mpi-two-hosts.sh [--release]
# Needs root (namespaces), iproute2, util-linux, Open MPI (mpirun), perl, and
# cargo (it builds coop-examples with --features mpi; CARGO_TARGET_DIR is honoured).
set -euo pipefail

profile=debug
case "${1:-}" in
  "") ;;
  --release) profile=release ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

die() { echo "mpi-two-hosts: $*" >&2; exit 1; }
step() { echo "== mpi-two-hosts: $*"; }

[[ $(id -u) == 0 ]] || die "must run as root: it creates network namespaces"
for tool in ip unshare mpirun perl cargo timeout; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

root=$(cd "$(dirname "$0")/.." && pwd)
ns_a="coop-a-$$" ns_b="coop-b-$$"
veth_a="cva$$" veth_b="cvb$$"
net=10.231.7
addr_a="$net.1" addr_b="$net.2"
work=$(mktemp -d /tmp/coop-two-hosts.XXXXXX)

# The script's own stderr, for messages from the exit trap, which may run
# while a command's stderr is redirected to a file.
exec 3>&2

cleanup() {
  local status=$?
  for ns in "$ns_a" "$ns_b"; do
    if ip netns list | grep -qw "$ns"; then
      # Anything still running "on" that host (a hung rank, an orted).
      ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null || true
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
  if [[ $status == 0 ]]; then
    step "passed" >&3
  else
    echo "mpi-two-hosts: FAILED (status $status)" >&3
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "building coop-examples --features mpi ($profile)"
release=()
[[ $profile == release ]] && release=(--release)
(cd "$root" && cargo build --locked -q -p coop-examples --features mpi --bins "${release[@]}")
bin="${CARGO_TARGET_DIR:-$root/target}/$profile"
[[ $bin == /* ]] || bin="$root/$bin"

step "two hosts: $ns_a ($addr_a, hostname coop-a) and $ns_b ($addr_b, hostname coop-b)"
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add "$veth_a" type veth peer name "$veth_b"
ip link set "$veth_a" netns "$ns_a"
ip link set "$veth_b" netns "$ns_b"
ip -n "$ns_a" addr add "$addr_a/24" dev "$veth_a"
ip -n "$ns_b" addr add "$addr_b/24" dev "$veth_b"
for ns in "$ns_a" "$ns_b"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns_a" link set "$veth_a" up
ip -n "$ns_b" link set "$veth_b" up
for _ in $(seq 50); do
  ip -n "$ns_a" link show "$veth_a" | grep -q LOWER_UP && break
  sleep 0.1
done
ip -n "$ns_a" link show "$veth_a" | grep -q LOWER_UP || die "the veth pair did not come up"

# mpirun's ssh: `agent [OPTIONS] HOST COMMAND...` runs COMMAND (a shell
# command line, as ssh would) on HOST. With COOP_HIDE_ON_B set, that
# directory is covered by an empty tmpfs on the second host: a file the
# first host has and the second lacks, as without a shared filesystem.
cat >"$work/rsh-agent" <<EOF
#!/bin/sh
while [ \$# -gt 0 ] && [ "\${1#-}" != "\$1" ]; do shift; done
host=\$1; shift
case \$host in
  $addr_a) ns=$ns_a name=coop-a ;;
  $addr_b) ns=$ns_b name=coop-b ;;
  *) echo "rsh-agent: unknown host \$host" >&2; exit 255 ;;
esac
hide=true
if [ "\$name" = coop-b ] && [ -n "\${COOP_HIDE_ON_B:-}" ]; then
  hide="mount -t tmpfs coop-hidden \$COOP_HIDE_ON_B"
fi
exec ip netns exec "\$ns" unshare --uts --mount sh -c "hostname \$name && \$hide && \$*"
EOF
chmod +x "$work/rsh-agent"
printf '%s slots=2\n%s slots=2\n' "$addr_a" "$addr_b" >"$work/hosts"

step "input: text and two matrices"
data="$work/data"
mkdir "$data"
perl -e '
  srand(7);
  my @syllables = qw(ka to ri me su no ha lu ve zo qi wa);
  for my $line (1 .. 60000) {
    my @words = map { join "", map { $syllables[int(rand() * rand() * 12)] } 1 .. 1 + int(rand(3)) } 1 .. 10;
    print join(" ", @words), "\n";
  }' >"$data/text.txt"
npy() { # npy FILE ROWS COLS FORTRAN SEED: f64 values in [-1, 1)
  perl -e '
    my ($rows, $cols, $fortran, $seed) = @ARGV;
    srand($seed);
    my $header = sprintf("{\x27descr\x27: \x27<f8\x27, \x27fortran_order\x27: %s, \x27shape\x27: (%d, %d), }",
                         $fortran ? "True" : "False", $rows, $cols);
    $header .= " " x ((64 - (10 + length($header) + 1) % 64) % 64) . "\n";
    binmode STDOUT;
    print "\x93NUMPY\x01\x00", pack("v", length $header), $header;
    print pack("d<*", map { rand() * 2 - 1 } 1 .. $rows * $cols);' "$2" "$3" "$4" "$5" >"$1"
}
npy "$data/a.npy" 611 301 0 1
npy "$data/b.npy" 301 467 1 2

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# mpirun on the first host, 4 ranks: 0 and 1 on coop-a, 2 and 3 on coop-b.
# In the background, so that Ctrl-C or a TERM interrupts `wait` and the exit
# trap removes the hosts (and whatever runs on them) at once.
on_two_hosts() {
  ip netns exec "$ns_a" unshare --uts sh -c 'hostname coop-a && exec "$@"' sh \
    timeout 120 mpirun -n 4 --hostfile "$work/hosts" \
      --mca plm_rsh_agent "$work/rsh-agent" --mca plm_rsh_no_tree_spawn 1 \
      --mca btl self,vader,tcp --mca btl_vader_single_copy_mechanism none \
      --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" \
      "$@" <&0 &
  wait $!
}

step "1. wordcount on a file mapped by every rank"
"$bin/wordcount" --engine sequential --all --format tsv "$data/text.txt" >"$work/wc-seq.tsv" 2>/dev/null
RUST_LOG=coop=info on_two_hosts "$bin/wordcount" --engine mpi --all --format tsv "$data/text.txt" \
  >"$work/wc-mpi.tsv" 2>"$work/wc-mpi.err" || { cat "$work/wc-mpi.err" >&2; die "wordcount failed"; }
# rank 0's log line "MPI engine started ranks=4 hosts=[...]" (colours removed)
hosts=$(sed 's/\x1b\[[0-9;]*m//g' "$work/wc-mpi.err" | grep -o 'hosts=\[[^]]*\]' | head -n 1 || true)
echo "   rank hosts: ${hosts#hosts=}"
[[ $hosts == *coop-a* && $hosts == *coop-b* ]] || { cat "$work/wc-mpi.err" >&2; die "ranks did not run on both hosts"; }
cmp -s "$work/wc-seq.tsv" "$work/wc-mpi.tsv" || die "wordcount output differs from --engine sequential"
echo "   $(wc -l <"$work/wc-mpi.tsv") distinct words, identical to --engine sequential"

step "2. wordcount on standard input (sent by rank 0 over TCP)"
on_two_hosts "$bin/wordcount" --engine mpi --all --format tsv <"$data/text.txt" \
  >"$work/wc-stdin.tsv" 2>"$work/wc-stdin.err" || { cat "$work/wc-stdin.err" >&2; die "wordcount on stdin failed"; }
cmp -s "$work/wc-seq.tsv" "$work/wc-stdin.tsv" || die "wordcount on stdin differs from --engine sequential"
echo "   identical to --engine sequential"

step "3. matmul on two .npy files"
"$bin/matmul" --engine sequential "$data/a.npy" "$data/b.npy" -o "$work/c-seq.npy" 2>/dev/null
on_two_hosts "$bin/matmul" --engine mpi "$data/a.npy" "$data/b.npy" -o "$work/c-mpi.npy" \
  2>"$work/mm.err" || { cat "$work/mm.err" >&2; die "matmul failed"; }
cmp -s "$work/c-seq.npy" "$work/c-mpi.npy" || die "matmul's C differs from --engine sequential"
echo "   C is identical, byte for byte ($(stat -c %s "$work/c-mpi.npy") bytes)"

step "4. the input missing on coop-b: the job fails with rank, host and file"
started=$SECONDS
status=0
COOP_HIDE_ON_B="$data" on_two_hosts "$bin/wordcount" --engine mpi "$data/text.txt" \
  >/dev/null 2>"$work/fail.err" || status=$?
error=$(grep -m 1 '^error: ' "$work/fail.err" || true)
echo "   exit status $status after $((SECONDS - started)) s: $error"
[[ $status != 0 && $status != 124 ]] || { cat "$work/fail.err" >&2; die "expected a failure, not status $status"; }
[[ $error == *"could not be opened on MPI rank "*"(host coop-b, pid "*"$data/text.txt: No such file or directory"* ]] \
  || { cat "$work/fail.err" >&2; die "the error does not name the rank on coop-b and the file"; }
