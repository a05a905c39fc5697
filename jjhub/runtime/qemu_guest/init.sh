#!/bin/sh
# The jjhub guest's init, run under tini: mount the kernel file systems,
# bring up the user-mode network, start sshd and the agent the host talks to.
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/jjhub
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd

hostname "$(cat /etc/hostname)"

# QEMU's user-mode network: fixed addresses, its own DNS forwarder.
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
echo "nameserver 10.0.2.3" > /etc/resolv.conf

# Host keys on first boot: ed25519 and ECDSA only (RSA-3072 takes seconds
# under TCG).
for type in ed25519 ecdsa; do
    key=/etc/ssh/ssh_host_${type}_key
    [ -f "$key" ] || ssh-keygen -q -t "$type" -N '' -f "$key"
    echo "HostKey $key"
done > /etc/ssh/sshd_config.d/10-jjhub-host-keys.conf
# Debian's sshd keeps its listener out of the OOM killer's way, not sessions.
SSHD_OOM_ADJUST=-1000 /usr/sbin/sshd

while true; do
    /usr/bin/python3 -u /usr/local/lib/jjhub/agent.py 2>&1 | tee -a /run/jjhub/agent.log > /dev/ttyS0
    sleep 1
done
