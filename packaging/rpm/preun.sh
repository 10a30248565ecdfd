# xpod %preun ($1: 0 on erase, 1 on upgrade): stop and disable on erase only.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable xpod.service || :
    if [ -d /run/systemd/system ]; then
        systemctl stop xpod.service || :
    fi
fi
exit 0
