#!/bin/busybox sh
# The lab's init: PID 1 of the emulated arm64 host.
# It mounts the usual file systems, loads the modules the lab needs, then runs the script
# that `elvisor lab run` passed on the kernel command line (elvisor_run=, base64) and
# reports its exit status on the console before powering off.

/bin/busybox --install -s
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# The initramfs ("rootfs") cannot be pivot_root'ed away from, which sandboxing programs
# (passt) do: move to a tmpfs first, as a host booted from a disk would have a real root.
if [ ! -e /.elvisor-lab-root ]; then
    mkdir -p /newroot
    mount -t tmpfs -o mode=0755 tmpfs /newroot
    for entry in /* /.[!.]*; do
        case "$entry" in /newroot|/proc|/sys|/dev|/.[!.]\*) ;; *) cp -a "$entry" /newroot/ ;; esac
    done
    mkdir -p /newroot/proc /newroot/sys /newroot/dev
    touch /newroot/.elvisor-lab-root
    exec switch_root /newroot /init
fi

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname elvisor-lab
ip link set lo up

while read -r module; do
    insmod "/usr/lib/modules/lab/$module.ko" || echo "lab: could not load module $module"
done < /etc/elvisor-lab/modules

# A network identity like a real host's, with nothing behind it: dummy0 (made by the dummy
# module) with an address and a default route, for the user-mode networking of guests (passt
# copies the host's addresses and routes). Ping sockets for every group: passt's ICMP.
ip addr add 10.0.2.15/24 dev dummy0
ip link set dummy0 up
ip route add default via 10.0.2.2 dev dummy0
echo "0 2147483647" > /proc/sys/net/ipv4/ping_group_range
echo "nameserver 10.0.2.3" > /etc/resolv.conf

run= nonce= interactive=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        elvisor_run=*) run="${arg#elvisor_run=}" ;;
        elvisor_nonce=*) nonce="${arg#elvisor_nonce=}" ;;
        elvisor_interactive=1) interactive=1 ;;
    esac
done

if [ -z "$run" ]; then
    echo "lab: no command given (elvisor_run= is missing); starting a shell"
    setsid cttyhack sh
    poweroff -f
fi

echo "$run" | base64 -d > /run/elvisor-run.sh
if [ -n "$interactive" ]; then
    setsid cttyhack sh /run/elvisor-run.sh
    status=$?
else
    # no terminal on either side: input empty, output through a pipe (as `ssh host cmd`
    # gives it), so programs do not talk to a terminal nobody answers
    stty -onlcr < /dev/console
    { sh /run/elvisor-run.sh < /dev/null; echo $? > /run/elvisor-status; } 2>&1 | cat
    status=$(cat /run/elvisor-status)
fi
printf '\036elvisor-lab-exit-%s %d\n' "$nonce" "$status"
sync
poweroff -f
