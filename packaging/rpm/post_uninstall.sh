# %postun of kron. $1: 0 after erase, 1 or more after an upgrade. See docs/packaging.md.
# The store in /var/lib/kron is kept on erase (rpm has no purge): delete it by hand to forget
# every token. /etc/kron/otpd.toml, if changed, is kept as otpd.toml.rpmsave.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -ge 1 ]; then
        # Upgrade: the new otpd takes over; the store and config stay where they are.
        systemctl try-restart otpd.service kron-web.service || :
    fi
fi
exit 0
