# xpod %post ($1: 1 on install, 2 on upgrade).
chgrp xpod /etc/xpod
chmod 0750 /etc/xpod
# Trusted release keys of `xpod self-update` (public keys only).
install -d -m 0755 /etc/xpod/update-keys
# The unit's StateDirectory; made now so that the command line finds it
# before the first start. An existing one is left as it is.
if [ ! -e /var/lib/xpod ]; then
    install -d -o xpod -g xpod -m 0700 /var/lib/xpod
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    # Enabled even where systemd is not running (an image being built).
    systemctl --no-reload enable xpod.service || :
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload || :
        systemctl start xpod.service || :
    fi
fi
exit 0
