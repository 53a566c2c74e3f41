#!/usr/bin/env bash
# bench/run.sh — the benchmark README's figures come from.
#
#   sudo bench/run.sh                         # RUNS=3 MTUS="1500 9000" T=5
#   sudo RUNS=1 T=3 MTUS=1500 bench/run.sh    # a quick look
#
# Builds myproto and quicperf, makes two network namespaces joined by a veth
# pair (mpb_a/mpb_va <-> mpb_b/mpb_vb, 198.51.100.1/24 <-> .2/24, addresses
# that exist only inside them), starts `myproto perf -s` (on Ethernet and the
# UDP bearer; a second one on the UDP bearer without offload; a third with
# receive rings, RING bytes, 8M unless set) and `quicperf
# -s` in mpb_b and runs every client in mpb_a, each a process of its own
# with the default GOMAXPROCS. NA and NB rename the namespaces. Each test runs RUNS times at each MTU; the table
# shows medians, and every run's JSON is kept in bench/results/STAMP/.
# The namespaces go away on exit, Ctrl-C included.
#
# Needs root (ip netns, nftables, taskset on the server), iproute2, nft and
# jq (installed with apt-get when missing), and Go. System calls per frame
# need tracefs (mounted here if it is not) and perf events, which root has.
# Absolute figures move ±30 % between machines and with load: compare rows
# of one table, never tables of different runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"

RUNS=${RUNS:-3}
MTUS=${MTUS:-"1500 9000"}
T=${T:-5}                      # seconds per test
LOSS_BYTES=${LOSS_BYTES:-128M} # what the 5 % loss test sends

if [ "$(id -u)" -ne 0 ]; then
	echo "bench/run.sh needs root (network namespaces, nftables, taskset): sudo $0" >&2
	exit 1
fi
if ! command -v nft >/dev/null || ! command -v jq >/dev/null || ! command -v ip >/dev/null; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 nftables jq >/dev/null
fi
mountpoint -q /sys/kernel/tracing 2>/dev/null || mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=bench/results/$STAMP
BIN=$OUT/bin
mkdir -p "$BIN"
go build -o "$BIN/myproto" ./cmd/myproto
(cd bench/quic && go build -o "../../$BIN/quicperf" .)

NA=${NA:-mpb_a} NB=${NB:-mpb_b} VA=mpb_va VB=mpb_vb
MACB=02:42:00:00:00:02
IPB=198.51.100.2
SRV="" QSRV="" USRV="" RSRV=""
PERFC=("$BIN/myproto" perf -c "[$MACB]")
# Receive rings (Config.ReceiveRing) on both ends: a third server, port 5203.
RING=${RING:-8M}
PERFR=("$BIN/myproto" perf -c "[$MACB]" -p 5203 --ring "$RING")
# The UDP bearer: the server's IP address, at the bearer port; the second
# server's bearer without GSO/GRO is at 34998, its myproto port 5202.
PERFU=("$BIN/myproto" perf -c "$IPB")
PERFUN=("$BIN/myproto" perf -c "[$IPB#34998%udp]" -p 5202 --no-offload)
inA() { nsenter --net=/run/netns/$NA "$@"; }

cleanup() {
	[ -n "$SRV" ] && kill "$SRV" 2>/dev/null && wait "$SRV" 2>/dev/null
	[ -n "$QSRV" ] && kill "$QSRV" 2>/dev/null && wait "$QSRV" 2>/dev/null
	[ -n "$USRV" ] && kill "$USRV" 2>/dev/null && wait "$USRV" 2>/dev/null
	[ -n "$RSRV" ] && kill "$RSRV" 2>/dev/null && wait "$RSRV" 2>/dev/null
	SRV="" QSRV="" USRV="" RSRV=""
	ip netns del $NA 2>/dev/null || true # deleting a namespace deletes its end of the pair
	ip netns del $NB 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cleanup
ip netns add $NA
ip netns add $NB
ip link add $VA netns $NA address 02:42:00:00:00:01 type veth peer name $VB netns $NB address $MACB
ip -n $NA addr add 198.51.100.1/24 dev $VA
ip -n $NB addr add $IPB/24 dev $VB
for ns in $NA $NB; do ip -n $ns link set lo up; done
ip -n $NA link set $VA up
ip -n $NB link set $VB up
# The client closes first, so TIME_WAIT piles up there in the TCP
# connection-rate test: give it room.
inA sysctl -qw net.ipv4.ip_local_port_range="1024 65000" net.ipv4.tcp_tw_reuse=1

# Results: V["metric mtu"] holds one value per run.
declare -A V
add() { V["$1 $2"]="${V["$1 $2"]:-} $3"; }

# client NAME MTU ARGS...: runs myproto perf -c in mpb_a, keeps its JSON in
# $OUT/NAME-MTU-RUN.json and echoes the file name ("" if it failed).
client() {
	local name=$1 mtu=$2
	shift 2
	local f=$OUT/$name-$mtu-$RUN.json
	if timeout 300 nsenter --net=/run/netns/$NA "$@" >"$f" 2>"$f.err"; then
		echo "$f"
	else
		echo "  $name at MTU $mtu failed: $(tail -1 "$f.err")" >&2
		echo ""
	fi
}

# pin CPU | unpin: the server's threads, all of them.
pin() { taskset -a -p -c "$1" "$SRV" >/dev/null; }
unpin() { taskset -a -p -c 0-$(($(nproc) - 1)) "$SRV" >/dev/null; }

# loss PERCENT: drop that share of myproto's frames arriving on either end.
loss() {
	for ns in $NA:$VA $NB:$VB; do
		local n=${ns%%:*} dev=${ns##*:}
		nsenter --net=/run/netns/$n nft -f - <<-EOF
			table netdev mpbloss
			delete table netdev mpbloss
		EOF
		[ "$1" -gt 0 ] || continue
		nsenter --net=/run/netns/$n nft -f - <<-EOF
			table netdev mpbloss {
				chain ingress {
					type filter hook ingress device "$dev" priority 0; policy accept;
					meta protocol 0x88b5 numgen random mod 100 < $1 drop
				}
			}
		EOF
	done
}

# lossudp PERCENT: drop that share of the IPv4 UDP datagrams (the UDP
# bearer's) arriving on either end.
lossudp() {
	for ns in $NA:$VA $NB:$VB; do
		local n=${ns%%:*} dev=${ns##*:}
		nsenter --net=/run/netns/$n nft -f - <<-EOF
			table netdev mpblossu
			delete table netdev mpblossu
		EOF
		[ "$1" -gt 0 ] || continue
		nsenter --net=/run/netns/$n nft -f - <<-EOF
			table netdev mpblossu {
				chain ingress {
					type filter hook ingress device "$dev" priority 0; policy accept;
					meta protocol ip ip protocol udp numgen random mod 100 < $1 drop
				}
			}
		EOF
	done
}

# j FILE FILTER: a number from a JSON report ("" when the file is missing).
j() { [ -n "$1" ] && jq -r "$2 // empty" "$1" || true; }

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for MTU in $MTUS; do
	ip -n $NA link set $VA mtu "$MTU"
	ip -n $NB link set $VB mtu "$MTU"
	# nsenter execs the program, so $! is the server's own pid.
	MYPROTO_NAME=bench-server nsenter --net=/run/netns/$NB "$BIN/myproto" perf -s --udp --tcp-listen $IPB:5201 \
		>"$OUT/server-$MTU.log" 2>&1 &
	SRV=$!
	MYPROTO_NAME=bench-server-nooffload MYPROTO_UDP_LOCAL=$IPB:34998 nsenter --net=/run/netns/$NB \
		"$BIN/myproto" perf -s -p 5202 --udp --no-offload >"$OUT/server-nooffload-$MTU.log" 2>&1 &
	USRV=$!
	MYPROTO_NAME=bench-server-ring nsenter --net=/run/netns/$NB \
		"$BIN/myproto" perf -s -p 5203 --ring "$RING" >"$OUT/server-ring-$MTU.log" 2>&1 &
	RSRV=$!
	nsenter --net=/run/netns/$NB "$BIN/quicperf" -s $IPB:4433 -certfile "$OUT/quic.der" >"$OUT/quic-$MTU.log" 2>&1 &
	QSRV=$!
	for _ in $(seq 50); do
		grep -q "listening on tcp" "$OUT/server-$MTU.log" && grep -q listening "$OUT/quic-$MTU.log" &&
			grep -q "UDP bearer" "$OUT/server-nooffload-$MTU.log" &&
			grep -q "listening" "$OUT/server-ring-$MTU.log" && break
		sleep 0.1
	done
	for RUN in $(seq "$RUNS"); do
		echo "== MTU $MTU, run $RUN of $RUNS" >&2
		f=$(client raw "$MTU" "${PERFC[@]}" --raw -t "$T" -J)
		add raw_bps "$MTU" "$(j "$f" .myproto.raw.bits_per_second)"
		add raw_fps "$MTU" "$(j "$f" .myproto.raw.frames_per_second)"
		add raw_drops "$MTU" "$(j "$f" .myproto.raw.ring_drops)"
		add raw_cpu_snd "$MTU" "$(j "$f" .myproto.cpu.client.cpu_ns_per_frame)"
		add raw_cpu_rcv "$MTU" "$(j "$f" .myproto.cpu.server.cpu_ns_per_frame)"

		f=$(client bulk "$MTU" "${PERFC[@]}" -t "$T" -J --tcp $IPB)
		add mp_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add mp_retx "$MTU" "$(j "$f" .myproto.sender.retransmits)"
		add tcp_bps "$MTU" "$(j "$f" .tcp.receiver.bits_per_second)"
		for side in client server; do
			add "cpu_$side" "$MTU" "$(j "$f" .myproto.cpu.$side.cpu_ns_per_frame)"
			add "ctx_$side" "$MTU" "$(j "$f" .myproto.cpu.$side.ctx_switches_per_frame)"
			add "sys_$side" "$MTU" "$(j "$f" "if .myproto.cpu.$side.syscalls < 0 then empty else .myproto.cpu.$side.syscalls_per_frame end")"
			add "tcp_cpu_$side" "$MTU" "$(j "$f" .tcp.cpu.$side.cpu_ns_per_frame)"
		done

		f=$(client ring "$MTU" "${PERFR[@]}" -t "$T" -J)
		add ring_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add ring_cpu_client "$MTU" "$(j "$f" .myproto.cpu.client.cpu_ns_per_frame)"
		add ring_cpu_server "$MTU" "$(j "$f" .myproto.cpu.server.cpu_ns_per_frame)"
		f=$(client ring-rr "$MTU" "${PERFR[@]}" --rr -t "$T" -J)
		add ring_rr50 "$MTU" "$(j "$f" .myproto.latency.p50_us)"

		f=$(client p16 "$MTU" "${PERFC[@]}" -P 16 -t "$T" -J)
		add mp16_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"

		f=$(client tls "$MTU" "${PERFC[@]}" --tls -t "$T" -J --tcp $IPB)
		add mptls_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add tcptls_bps "$MTU" "$(j "$f" .tcp.receiver.bits_per_second)"

		q=$OUT/quic-$MTU-$RUN.json
		if timeout 120 nsenter --net=/run/netns/$NA "$BIN/quicperf" -c $IPB:4433 -certfile "$OUT/quic.der" -t "${T}s" >"$q" 2>"$q.err"; then
			add quic_bps "$MTU" "$(j "$q" .bits_per_second)"
		else
			echo "  quic at MTU $MTU failed: $(tail -1 "$q.err")" >&2
		fi

		f=$(client rr "$MTU" "${PERFC[@]}" --rr -t "$T" -J --tcp $IPB)
		add mp_rr50 "$MTU" "$(j "$f" .myproto.latency.p50_us)"
		add mp_rr99 "$MTU" "$(j "$f" .myproto.latency.p99_us)"
		add tcp_rr50 "$MTU" "$(j "$f" .tcp.latency.p50_us)"
		add tcp_rr99 "$MTU" "$(j "$f" .tcp.latency.p99_us)"
		f=$(client rawrr "$MTU" "${PERFC[@]}" --raw --rr -t "$T" -J)
		add raw_rr50 "$MTU" "$(j "$f" .myproto.latency.p50_us)"

		# Both processes on one vCPU: no cross-CPU wake-ups.
		pin 0
		f=$(client rr-pinned "$MTU" taskset -c 0 "${PERFC[@]}" --rr -t "$T" -J --tcp $IPB)
		add mp_rr50_pin "$MTU" "$(j "$f" .myproto.latency.p50_us)"
		add tcp_rr50_pin "$MTU" "$(j "$f" .tcp.latency.p50_us)"
		f=$(client rawrr-pinned "$MTU" taskset -c 0 "${PERFC[@]}" --raw --rr -t "$T" -J)
		add raw_rr50_pin "$MTU" "$(j "$f" .myproto.latency.p50_us)"
		unpin

		f=$(client crr "$MTU" "${PERFC[@]}" --crr -t "$T" -J --tcp $IPB)
		add mp_crr "$MTU" "$(j "$f" .myproto.latency.per_second)"
		add tcp_crr "$MTU" "$(j "$f" .tcp.latency.per_second)"

		loss 5
		f=$(client loss5 "$MTU" "${PERFC[@]}" -n "$LOSS_BYTES" -J)
		loss 0
		add loss_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add loss_retx "$MTU" "$(j "$f" .myproto.sender.retransmits)"

		# The UDP bearer (SPEC.md §18), against the same TCP and quic-go.
		f=$(client udp "$MTU" "${PERFU[@]}" -t "$T" -J)
		add udp_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add udp_retx "$MTU" "$(j "$f" .myproto.sender.retransmits)"
		add udp_cpu_client "$MTU" "$(j "$f" .myproto.cpu.client.cpu_ns_per_frame)"
		add udp_cpu_server "$MTU" "$(j "$f" .myproto.cpu.server.cpu_ns_per_frame)"
		f=$(client udp-nooffload "$MTU" "${PERFUN[@]}" -t "$T" -J)
		add udpn_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add udpn_cpu_client "$MTU" "$(j "$f" .myproto.cpu.client.cpu_ns_per_frame)"
		add udpn_cpu_server "$MTU" "$(j "$f" .myproto.cpu.server.cpu_ns_per_frame)"
		f=$(client udp-tls "$MTU" "${PERFU[@]}" --tls -t "$T" -J)
		add udptls_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		f=$(client udp-rr "$MTU" "${PERFU[@]}" --rr -t "$T" -J)
		add udp_rr50 "$MTU" "$(j "$f" .myproto.latency.p50_us)"
		add udp_rr99 "$MTU" "$(j "$f" .myproto.latency.p99_us)"
		lossudp 5
		f=$(client udp-loss5 "$MTU" "${PERFU[@]}" -n "$LOSS_BYTES" -J)
		lossudp 0
		add udp_loss_bps "$MTU" "$(j "$f" .myproto.receiver.bits_per_second)"
		add udp_loss_retx "$MTU" "$(j "$f" .myproto.sender.retransmits)"
	done
	kill "$SRV" "$QSRV" "$USRV" "$RSRV" 2>/dev/null || true
	wait "$SRV" "$QSRV" "$USRV" "$RSRV" 2>/dev/null || true
	SRV="" QSRV="" USRV="" RSRV=""
done

# med METRIC MTU: the median of the runs' values, "" if none.
med() {
	local vals
	vals=$(tr ' ' '\n' <<<"${V["$1 $2"]:-}" | grep -v '^$' | sort -g || true)
	[ -n "$vals" ] || return 0
	local n
	n=$(wc -l <<<"$vals")
	sed -n "$(((n + 1) / 2))p" <<<"$vals"
}
# fmt KIND VALUE: gbit, k (thousands), us, ns (as µs), x (ratio), n (count),
# f (2 decimals); "–" for no value.
fmt() {
	[ -n "$2" ] || { echo "–"; return; }
	case $1 in
	gbit) awk -v v="$2" 'BEGIN{printf "%.2f Gbit/s", v/1e9}' ;;
	k) awk -v v="$2" 'BEGIN{printf "%.0fk", v/1e3}' ;;
	us) awk -v v="$2" 'BEGIN{printf "%.0f µs", v}' ;;
	ns) awk -v v="$2" 'BEGIN{printf "%.2f µs", v/1e3}' ;;
	n) awk -v v="$2" 'BEGIN{printf "%.0f", v}' ;;
	f) awk -v v="$2" 'BEGIN{printf "%.2f", v}' ;;
	esac
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf " (%.2f×)", a/b}' || true; }
row() { # LABEL then one cell per MTU from the function cell_MTU
	local label=$1 fn=$2 line
	line="| $label |"
	for MTU in $MTUS; do line+=" $($fn "$MTU") |"; done
	echo "$line"
}
c_raw() { echo "$(fmt gbit "$(med raw_bps $1)"), $(fmt k "$(med raw_fps $1)") frames/s, $(fmt n "$(med raw_drops $1)") ring drops"; }
c_mp() { echo "$(fmt gbit "$(med mp_bps $1)")$(ratio "$(med mp_bps $1)" "$(med raw_bps $1)") of raw, $(fmt n "$(med mp_retx $1)") retransmissions"; }
c_ring() { echo "$(fmt gbit "$(med ring_bps $1)")$(ratio "$(med ring_bps $1)" "$(med raw_bps $1)") of raw,$(ratio "$(med ring_bps $1)" "$(med mp_bps $1)") without; CPU per frame $(fmt ns "$(med ring_cpu_client $1)") / $(fmt ns "$(med ring_cpu_server $1)"); rr p50 $(fmt us "$(med ring_rr50 $1)")"; }
c_mp16() { echo "$(fmt gbit "$(med mp16_bps $1)")$(ratio "$(med mp16_bps $1)" "$(med mp_bps $1)") of one"; }
c_tcp() { echo "$(fmt gbit "$(med tcp_bps $1)"); myproto$(ratio "$(med mp_bps $1)" "$(med tcp_bps $1)")"; }
c_mptls() { echo "$(fmt gbit "$(med mptls_bps $1)")"; }
c_tcptls() { echo "$(fmt gbit "$(med tcptls_bps $1)"); myproto$(ratio "$(med mptls_bps $1)" "$(med tcptls_bps $1)")"; }
c_quic() { echo "$(fmt gbit "$(med quic_bps $1)"); TLS over myproto$(ratio "$(med mptls_bps $1)" "$(med quic_bps $1)")"; }
c_rr() { echo "$(fmt us "$(med mp_rr50 $1)") / $(fmt us "$(med mp_rr99 $1)"); TCP $(fmt us "$(med tcp_rr50 $1)") / $(fmt us "$(med tcp_rr99 $1)")"; }
c_rawrr() { echo "$(fmt us "$(med raw_rr50 $1)")"; }
c_pin() { echo "myproto $(fmt us "$(med mp_rr50_pin $1)"), TCP $(fmt us "$(med tcp_rr50_pin $1)"), raw $(fmt us "$(med raw_rr50_pin $1)")"; }
c_crr() { echo "$(fmt n "$(med mp_crr $1)") vs TCP $(fmt n "$(med tcp_crr $1)")$(ratio "$(med mp_crr $1)" "$(med tcp_crr $1)")"; }
c_loss() { echo "$(fmt gbit "$(med loss_bps $1)"), $(fmt n "$(med loss_retx $1)") retransmissions"; }
c_cpu() { echo "$(fmt ns "$(med cpu_client $1)") / $(fmt ns "$(med cpu_server $1)")"; }
c_ctx() { echo "$(fmt f "$(med ctx_client $1)") / $(fmt f "$(med ctx_server $1)")"; }
c_sys() { echo "$(fmt f "$(med sys_client $1)") / $(fmt f "$(med sys_server $1)")"; }
c_tcpcpu() { echo "$(fmt ns "$(med tcp_cpu_client $1)") / $(fmt ns "$(med tcp_cpu_server $1)")"; }
c_udp() { echo "$(fmt gbit "$(med udp_bps $1)");$(ratio "$(med udp_bps $1)" "$(med mp_bps $1)") the Ethernet bearer,$(ratio "$(med udp_bps $1)" "$(med tcp_bps $1)") kernel TCP; $(fmt n "$(med udp_retx $1)") retransmissions"; }
c_udpn() { echo "$(fmt gbit "$(med udpn_bps $1)"); with offload$(ratio "$(med udp_bps $1)" "$(med udpn_bps $1)") this"; }
c_udptls() { echo "$(fmt gbit "$(med udptls_bps $1)");$(ratio "$(med udptls_bps $1)" "$(med quic_bps $1)") quic-go,$(ratio "$(med udptls_bps $1)" "$(med tcptls_bps $1)") TLS over TCP"; }
c_udprr() { echo "$(fmt us "$(med udp_rr50 $1)") / $(fmt us "$(med udp_rr99 $1)")"; }
c_udploss() { echo "$(fmt gbit "$(med udp_loss_bps $1)"), $(fmt n "$(med udp_loss_retx $1)") retransmissions"; }
c_udpcpu() { echo "$(fmt ns "$(med udp_cpu_client $1)") / $(fmt ns "$(med udp_cpu_server $1)"); no offload $(fmt ns "$(med udpn_cpu_client $1)") / $(fmt ns "$(med udpn_cpu_server $1)")"; }
c_rawcpu() { echo "$(fmt ns "$(med raw_cpu_snd $1)") / $(fmt ns "$(med raw_cpu_rcv $1)")"; }

{
	echo "myproto benchmark, $STAMP: $(nproc) vCPUs, Linux $(uname -r), $(go version | cut -d' ' -f3);"
	echo "veth between two namespaces, server and client in separate processes; medians of $RUNS run(s) of ${T} s;"
	echo "load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg)."
	echo
	echo "| |$(for m in $MTUS; do printf ' MTU %s |' "$m"; done)"
	echo "|---|$(for _ in $MTUS; do printf -- '---|'; done)"
	row "raw ceiling: sendmmsg flood → TPACKET_V3 ring" c_raw
	row "myproto bulk, 1 connection" c_mp
	row "myproto bulk with receive rings (--ring $RING)" c_ring
	row "myproto bulk, -P 16" c_mp16
	row "kernel TCP bulk, 1 connection" c_tcp
	row "TLS 1.3 over myproto" c_mptls
	row "TLS 1.3 over kernel TCP" c_tcptls
	row "quic-go, one stream (TLS 1.3)" c_quic
	row "1-byte request/response p50 / p99" c_rr
	row "1-byte raw frame ping-pong p50, Go's poller" c_rawrr
	row "rr p50, both processes on vCPU 0 (taskset)" c_pin
	row "connections/s (dial, 1 byte echoed, close)" c_crr
	row "myproto bulk at 5 % loss (nft, both ends), $LOSS_BYTES" c_loss
	row "myproto bulk: CPU per frame, sender / receiver" c_cpu
	row "myproto bulk: context switches per frame, sender / receiver" c_ctx
	row "myproto bulk: system calls per frame, sender / receiver" c_sys
	row "kernel TCP bulk: CPU per GSO packet, sender / receiver" c_tcpcpu
	row "raw flood: CPU per frame, sender / receiver" c_rawcpu
	row "UDP bearer bulk, 1 connection (GSO/GRO)" c_udp
	row "UDP bearer bulk, no offload" c_udpn
	row "TLS 1.3 over myproto, UDP bearer" c_udptls
	row "UDP bearer 1-byte request/response p50 / p99" c_udprr
	row "UDP bearer bulk at 5 % loss (nft, both ends), $LOSS_BYTES" c_udploss
	row "UDP bearer bulk: CPU per frame, sender / receiver" c_udpcpu
	echo
	echo "Frames are counted in the busier direction. On veth the receive softirq mostly runs on the"
	echo "sender's CPU and is charged to the sender. JSON of every run: $OUT/"
} | tee "$OUT/table.md"
