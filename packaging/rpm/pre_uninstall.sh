# %preun of kron. $1: 0 when the package is being erased, 1 or more on upgrade.
# See docs/packaging.md.
#
# rpm cannot edit the stacks the administrator changed (by hand or with authselect), and a
# stack that requires a missing module refuses every login: while one names pam_kron.so (on
# a line that is not a comment), erasing stops here, nothing changed yet, unless
# KRON_REMOVE_ANYWAY=1.
if [ "$1" -eq 0 ]; then
    stacks=$(grep -lEs '^[[:space:]]*[^#[:space:]].*pam_kron\.so' /etc/pam.d/*)
    if [ -n "$stacks" ]; then
        echo "kron: these PAM stacks still name pam_kron.so:" >&2
        echo "$stacks" | sed 's/^/kron:   /' >&2
        if [ "${KRON_REMOVE_ANYWAY:-}" != 1 ]; then
            echo "kron: without the module every login through them would fail. Take those" >&2
            echo "kron: lines (or the authselect feature) out first, or erase kron anyway with" >&2
            echo "kron: KRON_REMOVE_ANYWAY=1." >&2
            exit 1
        fi
        echo "kron: WARNING: erased anyway (KRON_REMOVE_ANYWAY=1): logins through them will fail." >&2
    fi
    if [ -d /run/systemd/system ]; then
        systemctl --no-reload disable --now otpd.socket otpd.service kron-web.service || :
    fi
fi
exit 0
