#!/bin/sh
# mcrecover testbed: PID 1 of fresh pid+mount+net+uts namespaces until it execs systemd.
# $1 = the sandbox's host-side state dir (everything to install is under $1/seed); $2 = stage.
# Stage 1 moves PID 1 into the sandbox's own cgroup (v2) and re-executes itself in a new cgroup
# namespace rooted there, so each sandbox's systemd has a cgroup tree of its own.
set -eu
state="$1"
seed="$state/seed"
if [ "${2:-1}" = 1 ]; then
    mount --make-rprivate /
    umount -l /sys/fs/cgroup
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
    cg="/sys/fs/cgroup/$(cat "$seed/cgroup")"
    mkdir -p "$cg"
    echo 0 > "$cg/cgroup.procs"
    umount /sys/fs/cgroup
    exec unshare --cgroup /bin/sh "$0" "$state" 2
fi
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /sys/fs/cgroup/testbed-exec   # where commands run from outside (Sandbox::run) live
# Rootless podman 4.3 treats every line of /proc/self/cgroup as a v2 path; on this hybrid kernel
# the v1 lines ("N:ctrl:/") resolve to the cgroup root, which must then belong to the user or
# podman escapes into a scope of its own (and a Type=notify quadlet unit loses its conmon).
# On a pure-v2 production host that check sees only the unit's own (delegated) cgroup.
if [ -s "$seed/cgroup-owner" ]; then chown "$(cat "$seed/cgroup-owner")" /sys/fs/cgroup; fi
ip link set lo up
# The node's production addresses (seed/addresses, one per line; rift's by default). A link to
# another sandbox (Sandbox::link) routes the other node's addresses over a veth pair.
if [ -s "$seed/addresses" ]; then addresses="$(cat "$seed/addresses")"; else addresses="192.168.88.181 100.95.252.120"; fi
for a in $addresses; do
    case "$a" in
        *:*) ip -6 addr add "$a/128" dev lo ;;
        *) ip addr add "$a/32" dev lo ;;
    esac
done
sysctl -q -w net.ipv4.ip_unprivileged_port_start=0
# Ephemeral (client) ports above every port the example platform publishes (up to 58080):
# with the default range (32768-60999) a probe's source port, kept for 60 s in TIME_WAIT, can
# sit on a port a container is about to publish (seen: "listen tcp4 127.0.0.1:48116: bind:
# address already in use"). Per network namespace, so only this sandbox's.
sysctl -q -w net.ipv4.ip_local_port_range="60000 65000"
hostname "$(cat "$seed/hostname")"
# Base trixie (seed/rootfs names its root filesystem): an overlay on it (upper layer on a tmpfs of
# this sandbox; the tree itself is never written), the kernel filesystems, /dev, and the state dir
# at its host path (rootful podman storage, logs), then pivot_root into it. Everything below (and
# systemd) then runs from trixie's /usr.
if [ -s "$seed/rootfs" ]; then
    lower="$(cat "$seed/rootfs")"
    new="$state/root"
    mkdir -p "$new" "$state/layer"
    mount -t tmpfs -o mode=0755 tmpfs "$state/layer"
    mkdir -p "$state/layer/upper" "$state/layer/work"
    mount -t overlay overlay \
        -o "lowerdir=$lower,upperdir=$state/layer/upper,workdir=$state/layer/work" "$new"
    mount -t proc proc "$new/proc"
    mount -t sysfs sysfs "$new/sys"
    mount -t cgroup2 cgroup2 "$new/sys/fs/cgroup"
    mount --rbind /dev "$new/dev"
    mkdir -p "$new$state"
    mount --bind "$state" "$new$state"
    if [ -d "$seed/etc-base" ]; then cp -a "$seed/etc-base/." "$new/etc/"; fi
    cd "$new"
    mkdir -p oldroot
    pivot_root . oldroot
    cd /
    umount -l /oldroot
    rmdir /oldroot 2>/dev/null || true
fi
if [ -e /etc/hostname ]; then mount --bind "$seed/hostname" /etc/hostname; fi
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
# podman's container locks live in /dev/shm (libpod_lock, 2048 of them): a private one per sandbox,
# or every sandbox allocates from (and `system refresh` frees) the host's and the others' (seen:
# "allocating lock for new container: exceeded num_locks (2048)").
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /etc/containers
mount -t tmpfs -o mode=0755 tmpfs /srv
# A journal of its own (persistent storage kind, so per-user journal files exist and rootless
# `podman logs` works), in RAM: never the host's /var/log/journal.
mkdir -p /var/log/journal
mount -t tmpfs -o mode=2755 tmpfs /var/log/journal
cp -a "$seed/run/." /run/
cp -a "$seed/etc-containers/." /etc/containers/
cp -a "$seed/srv/." /srv/
mount --make-rshared /
echo ok > "$state/init-ready"
export container=mcrecover-testbed
exec /lib/systemd/systemd --system --unit=sandbox.target </dev/null >>"$state/systemd.out" 2>&1
