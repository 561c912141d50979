#!/bin/sh
# Builds a busybox-static rootfs image holding the standin binary and runs it under podman on
# the HOST (runc + cgroupfs, see shared/notes/sandbox.md), then checks it answers, obeys a
# fault written into its volume, and stops promptly on `podman stop` (SIGTERM to PID 1).
# Usage: standin/scripts/podman-smoke.sh [path/to/standin]   (default target/release/standin)
set -eu
BIN=${1:-target/release/standin}
WORK=$(mktemp -d /tmp/standin-smoke.XXXXXX)
PODMAN="podman --runtime runc --cgroup-manager cgroupfs"
# The host's hard RLIMIT_NOFILE is below podman's default: pass explicit ulimits.
ULIMITS="--ulimit nofile=1024:1024 --ulimit nproc=1024:1024"
IMAGE=localhost/standin-smoke:1
NAME=standin-smoke-$$
trap '$PODMAN rm -f -t 0 $NAME >/dev/null 2>&1 || true; $PODMAN rmi -f $IMAGE >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

# 1. rootfs: busybox-static applets + the binary + the shared libraries ldd lists.
ROOT=$WORK/rootfs
mkdir -p "$ROOT/bin" "$ROOT/tmp" "$ROOT/srv"
cp /bin/busybox "$ROOT/bin/busybox"            # from package busybox-static
chroot "$ROOT" /bin/busybox --install -s /bin
cp "$BIN" "$ROOT/standin"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
tar -C "$ROOT" -cf "$WORK/rootfs.tar" .

# 2. image: ENTRYPOINT is the binary; the runbook's command line would be appended (ignored).
$PODMAN import --change 'ENTRYPOINT ["/standin"]' \
    --change 'ENV STANDIN_LISTEN=http:8080' --change 'ENV STANDIN_NAME=smoke' \
    --change 'ENV STANDIN_DIR=/srv/smoke' "$WORK/rootfs.tar" $IMAGE
# The testbed's job in real runs: a CA in the volume, and the listeners per image.
mkdir -p "$WORK/vol/.standin"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=smoke-ca -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$WORK/vol/.standin/ca.key" -out "$WORK/vol/.standin/ca.pem" 2>/dev/null

# 3. run with a volume and the runbook-like arguments appended.
$PODMAN run -d --name $NAME $ULIMITS -v "$WORK/vol:/srv/smoke" \
    -e STANDIN_LISTEN=dns:53,http:8080,https:8443,tcp:9443,grpcs:9555 \
    -p 127.0.0.1:18080:8080 -p 127.0.0.1:18443:8443 -p 127.0.0.1:19443:9443 \
    -p 127.0.0.1:15353:53/udp -p 127.0.0.1:15353:53/tcp -p 127.0.0.1:19555:9555 \
    $IMAGE --config /srv/smoke/smoke.toml server
i=0; until [ -f "$WORK/vol/.standin/ready" ]; do i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done
curl -fsS http://127.0.0.1:18080/v1/health; echo
curl -fsS --cacert "$WORK/vol/.standin/ca.pem" --resolve mcq.svc.mcp.metacircular.net:18443:127.0.0.1 \
    https://mcq.svc.mcp.metacircular.net:18443/v1/health; echo
dig +short @127.0.0.1 -p 15353 mcq.svc.mcp.metacircular.net A
dig +short +tcp @127.0.0.1 -p 15353 google.com A
busybox nc 127.0.0.1 19443 </dev/null
openssl s_client -connect 127.0.0.1:19555 -alpn h2 -CAfile "$WORK/vol/.standin/ca.pem" \
    -servername mcp-master.svc.mcp.metacircular.net </dev/null 2>/dev/null | grep -E 'ALPN|Verify return code' 
echo 500 > "$WORK/vol/fault"; sleep 0.3
test "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18080/v1/health)" = 500
rm "$WORK/vol/fault"; sleep 0.3
curl -fsS http://127.0.0.1:18080/v2/; echo
start=$(date +%s%N)
$PODMAN stop -t 10 $NAME
echo "podman stop took $(( ($(date +%s%N) - start) / 1000000 )) ms"
echo "exit code: $($PODMAN inspect --format '{{.State.ExitCode}}' $NAME)"
$PODMAN logs $NAME
test "$($PODMAN inspect --format '{{.State.ExitCode}}' $NAME)" = 0
echo "smoke OK"
