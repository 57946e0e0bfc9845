# %post of kron. $1: 1 on first install, 2 or more on upgrade. See docs/packaging.md.
# rpm runs scriptlets with plain /bin/sh; every step fails soft (`|| :`) so that a missing
# helper cannot leave a half-done transaction, and says what went wrong.

# Members may manage other users' tokens (admin_group in /etc/kron/otpd.toml).
if ! getent group kron-admin >/dev/null; then
    groupadd -r kron-admin || echo "kron: could not create group kron-admin" >&2
fi

# kron-web runs as this user (its unit's User=), the one user besides root the D-Bus policy
# lets call the link methods. No home, no shell.
if ! getent passwd kron-web >/dev/null; then
    useradd -r -U -M -d / -s /sbin/nologin -c "kron one-time link page" kron-web ||
        echo "kron: could not create user kron-web" >&2
fi

# The store's directory, private from the start (the package cannot carry it, see the
# generate-rpm metadata in otpd/Cargo.toml). An existing one may hold tokens: left alone.
if [ ! -e /var/lib/kron ]; then
    mkdir -m 0700 /var/lib/kron || echo "kron: could not create /var/lib/kron" >&2
fi

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || :
    if [ "$1" -eq 1 ]; then
        # The login socket is enabled and listening whatever the preset policy says (Fedora's
        # disables everything not named): pam_kron reaches otpd only through it, so a stack
        # that names pam_kron would refuse every login after the next boot without it. It
        # starts nothing by itself; the first login starts otpd, D-Bus activation does for
        # kronctl. Whether otpd.service itself starts at boot is the preset policy's.
        systemctl --no-reload enable --now otpd.socket || :
        systemctl --no-reload preset otpd.service || :
    fi
fi

# Nothing touches the PAM stacks: enabling pam_kron is the administrator's step, with
# authselect or by hand (docs/packaging.md, "RPM systems and authselect").
exit 0
