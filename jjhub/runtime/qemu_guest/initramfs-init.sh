#!/bin/busybox sh
# The jjhub guest's first stage: load the modules that reach the root disk,
# mount it and hand over to the real root's init.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

while read -r module; do
    insmod "/lib/modules/$module" 2>/dev/null
done < /modules.order

tries=0
while [ ! -b /dev/vda ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        echo "jjhub: root disk /dev/vda did not appear" > /dev/ttyS0
        poweroff -f
    fi
    sleep 0.1
done

mount -t ext4 -o rw,noatime /dev/vda /newroot || poweroff -f
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /usr/bin/tini -s -- /usr/local/sbin/jjhub-init
