# xpod %postun ($1: 0 on erase, 1 on upgrade): restart on the new binary
# after an upgrade; after an erase, say where the pods are (never deleted).
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart xpod.service || :
    fi
fi
if [ "$1" -eq 0 ] && [ -d /var/lib/xpod ]; then
    echo "xpod: pod data is kept in /var/lib/xpod (pods, node key, administrator token, database)."
    echo "xpod: delete it yourself when it is no longer needed: rm -rf /var/lib/xpod"
fi
exit 0
