# %preun of kron. $1: 0 when the package is being erased, 1 or more on upgrade.
# See docs/packaging.md.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now otpd.socket otpd.service kron-web.service || :
fi
if [ "$1" -eq 0 ] && grep -qs 'pam_kron\.so' /etc/pam.d/*; then
    # rpm cannot edit the stacks the administrator changed; warn loudly, because a stack
    # that requires a missing module refuses every login.
    echo "kron: WARNING: /etc/pam.d still names pam_kron.so:" >&2
    grep -ls 'pam_kron\.so' /etc/pam.d/* >&2
    echo "kron: remove those lines (or the authselect feature) or logins will fail." >&2
fi
exit 0
