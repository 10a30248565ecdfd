# xpod %pre: the system user, before the files it owns land. A failure
# stops the install: the files would otherwise land owned by root.
set -e
if ! getent group xpod >/dev/null; then
    groupadd --system xpod
fi
if ! getent passwd xpod >/dev/null; then
    useradd --system --gid xpod --home-dir /var/lib/xpod --no-create-home \
        --shell /sbin/nologin --comment "xpod Solid pod server" xpod
fi
exit 0
