#!/bin/sh
# Run a command as in a container with a read-only root filesystem: in a private mount
# namespace (unshare --mount), DATA_DIR becomes a fresh tmpfs (the image's /data volume)
# and every other mount is remounted read-only. Nothing outside the namespace changes.
# Usage (as root): unshare --mount --propagation private sh read_only_root.sh DATA_DIR CMD...
set -eu
data_dir=$1
shift
mount -t tmpfs -o mode=0700,size=64m vault-data "$data_dir"
awk '{print $5}' /proc/self/mountinfo | while read -r mount_point; do
  case "$mount_point" in
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | "$data_dir") continue ;;
  esac
  mount -o remount,bind,ro "$mount_point" 2>/dev/null || true
done
exec "$@"
