# bench/fleet.sh: the fleet part of `bench/run --fleet`, sourced inside its namespace after the
# private NSS, the bus and the local otpd are up. A loopback PostgreSQL with TLS (initdb as
# the postgres user under $work/pg, certificates from a CA made here with openssl), three otpd
# hosts in fleet mode (own bus, own state dir each, set up with `kronctl fleet init` and
# `add-host` as docs/fleet.md says), the same users and secrets in the local store and the
# fleet, then: sequential PAM logins local vs fleet, 64 concurrent callers spread over the three
# hosts (and over the local otpd alone, for comparison), the per-call breakdown on a host, and
# sequential logins on a host with offline packs (host d) against one without.
# Records go to $record like the rest; docs/performance.md ("Fleet mode") quotes them.

run_fleet() {
    # pgbin and pg stay global: the EXIT trap that stops the server needs them.
    local size=$1 port key
    pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    pg=$work/pg
    port=$(( 20000 + RANDOM % 20000 ))
    chmod 711 "$work"
    mkdir -p "$pg" && chown postgres: "$pg" && chmod 700 "$pg"

    say "fleet: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port with TLS"
    (cd "$pg" \
        && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 2 -subj /CN=kron-bench-ca 2>/dev/null \
        && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj /CN=kron-bench-db 2>/dev/null \
        && echo "subjectAltName=IP:127.0.0.1" > server.ext \
        && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -out server.pem -days 2 -extfile server.ext 2>/dev/null)
    chown postgres: "$pg"/server.* && chmod 600 "$pg/server.key"
    # The hosts' copy of the CA: otpd trusts a file only where root alone can change it and
    # every directory above it (StrictModes), and $pg is the postgres user's.
    install -m 644 "$pg/ca.pem" "$work/fleet-ca.pem"
    runuser -u postgres -- "$pgbin/initdb" -D "$pg/data" -U postgres -A trust -E UTF8 > /dev/null
    cat >> "$pg/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$pg'
ssl = on
ssl_cert_file = '$pg/server.pem'
ssl_key_file = '$pg/server.key'
CONF
    printf 'local all postgres trust\nhostssl kron all 127.0.0.1/32 scram-sha-256\n' > "$pg/data/pg_hba.conf"
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w start > /dev/null
    stop_pg() { runuser -u postgres -- "$pgbin/pg_ctl" -D "$pg/data" -m fast -w stop > /dev/null 2>&1 || true; }
    trap 'stop_pg; cleanup' EXIT
    key=$pg/kron-seed.key
    openssl rand -hex 32 > "$key" && chown postgres: "$key" && chmod 600 "$key"
    psql_su() { runuser -u postgres -- "$pgbin/psql" -X -q -h "$pg" -p "$port" -v ON_ERROR_STOP=1 "$@"; }
    psql_su -d postgres -c "CREATE ROLE kron_owner LOGIN CREATEROLE PASSWORD 'bench-owner'" \
        -c "GRANT pg_read_server_files TO kron_owner" -c "CREATE DATABASE kron OWNER kron_owner"
    psql_su -d kron -c "GRANT EXECUTE ON FUNCTION pg_read_file(text) TO kron_owner"
    install -m 600 /dev/null "$work/owner-password" && echo bench-owner > "$work/owner-password"
    local owner_url="postgresql://kron_owner@127.0.0.1:$port/kron?sslmode=verify-full"
    local kronctl=("$target/kronctl" --bus "$address")
    "${kronctl[@]}" fleet init --url "$owner_url" --ca-file "$work/fleet-ca.pem" \
        --owner-password-file "$work/owner-password" --key-file "$key"

    say "fleet: hosts a, b, c (own bus and state each)"
    fleet_buses=()
    fleet_pids=()
    for name in a b c; do
        # The measured numbers are of the online path: offline packs of thousands of bench
        # users would have the database hashing in the background (docs/fleet.md, "Offline
        # logins", for their cost). Host d, below, measures what offline logins add.
        start_fleet_host "$name" 0
    done

    say "fleet: $size users in the local store and in the fleet (the same secrets)"
    "$bench" gen-nss --out "$work/nss/passwd.in" --users "$size"
    makedb -o "$work/nss/misc/passwd.db" "$work/nss/passwd.in" > /dev/null
    rm -f "$work/nss/passwd.in"
    "$bench" import --bus "$address" --from 0 --to "$size" --record "$record" --size "$size"
    "$bench" import --bus "${fleet_buses[0]}" --from 0 --to "$size"
    echo '{"kind":"fleet-import","size":'"$size"'}' >> "$record"

    say "fleet: sequential PAM logins, local and fleet, same users"
    local common=(--confdir "$work/pam" --users "$size" --record "$record")
    "$bench" latency --module kron --service kb-kron --count "$logins" "${common[@]}"
    "$bench" latency --module kron-fleet --service kb-fleet-a --count "$logins" "${common[@]}"
    "$bench" breakdown --bus "$address" --users "$size" --skip "$logins" --count "$breakdown" \
        --record "$record"
    "$bench" breakdown --bus "${fleet_buses[0]}" --users "$size" --skip "$logins" \
        --count "$breakdown" --record "$work/fleet-breakdown.jsonl"
    sed 's/"kind":"breakdown"/"kind":"fleet-breakdown"/' "$work/fleet-breakdown.jsonl" >> "$record"

    # otpd connects to the database at its first login, and the logins above ran on host a
    # only: a few logins on b and c open their connections first, so the level below measures
    # serving hosts, not two TLS handshakes and password exchanges in its first moments. Users
    # from the end of the population, which the levels below reach last (the full run's fleet
    # level wraps around the population and so waits for a fresh time step first).
    local warm=$((size - 16))
    for name in b c; do
        "$bench" latency --module "kron-fleet-$name" --service "kb-fleet-$name" --count 8 \
            --skip "$warm" --confdir "$work/pam" --users "$size" --record "$work/fleet-warm.jsonl"
        warm=$((warm + 8))
    done

    say "fleet: 64 concurrent callers, local otpd alone, then spread over hosts a, b, c"
    "$bench" load --service kb-kron --confdir "$work/pam" --users "$size" \
        --skip "$((logins + breakdown))" --levels 64 --per-level "$per_level" --modes pam \
        --budget-secs "$level_budget" --otpd-pid "$otpd_pid" --bus-pid "$bus_pid" --record "$record"
    # The local level just wrote its store; its dirty pages would go to the disk about 30 s
    # later (vm.dirty_expire_centisecs), just as the full run's fleet level starts after its
    # wait for a fresh time step, and slow the database's WAL flushes in its first second.
    sync
    "$bench" load --service kb-fleet-a,kb-fleet-b,kb-fleet-c --confdir "$work/pam" \
        --users "$size" --skip "$((logins + breakdown))" --levels 64 --per-level "$per_level" \
        --modes pam --budget-secs "$level_budget" --otpd-pid "${fleet_pids[0]}" \
        --bus-pid "$bus_pid" --record "$work/fleet-load.jsonl"
    sed 's/"kind":"load"/"kind":"fleet-load"/' "$work/fleet-load.jsonl" >> "$record"

    # What offline logins (on by default) add to a login: host d keeps packs, with a window of
    # ten minutes so the database hashes 21 steps a user instead of 960 (docs/fleet.md, "Cost
    # on the database"); the login path is the same at any window. The same users log in on d
    # and on a (offline logins off), alternated, each run in a time step of its own.
    local offline_users=300 offline_skip=$((size - 16 - 300)) packs=0 round
    say "fleet: what offline logins add: host d (packs) against host a, $offline_users users"
    start_fleet_host d 600
    local same=(--count "$offline_users" --skip "$offline_skip" --wait-step --confdir "$work/pam"
                --users "$size")
    "$bench" latency --module kron-fleet-d-first --service kb-fleet-d "${same[@]}" \
        --record "$work/fleet-warm.jsonl"
    # Every pack full (its first runs out at least three quarters of the window ahead), so the
    # database is not still hashing them while d's logins are measured.
    local status ends
    for _ in $(seq 300); do
        status=$("$target/kronctl" --bus "${fleet_buses[3]}" --json fleet status)
        packs=$(grep -o '"pack_users":[0-9]*' <<< "$status" | cut -d: -f2)
        ends=$(grep -o '"pack_ends":[0-9]*' <<< "$status" | cut -d: -f2)
        [ "${packs:-0}" -ge "$offline_users" ] && [ "${ends:-0}" -ge $(( $(date +%s) + 450 )) ] \
            && break
        sleep 1
    done
    if [ "${packs:-0}" -lt "$offline_users" ]; then
        echo "bench/run --fleet: host d holds ${packs:-no} packs of $offline_users users" >&2
        exit 1
    fi
    for round in 1 2 3 4; do
        "$bench" latency --module "kron-fleet-offline-on-$round" --service kb-fleet-d \
            "${same[@]}" --record "$record"
        "$bench" latency --module "kron-fleet-offline-off-$round" --service kb-fleet-a \
            "${same[@]}" --record "$record"
    done
    cp "$record" "bench/fleet-results.jsonl"
    echo "bench/run --fleet: wrote bench/fleet-results.jsonl (docs/performance.md, Fleet mode)"
}

# Starts fleet host NAME (own bus, state dir, PAM service kb-fleet-NAME) with offline_window
# WINDOW, set up with `kronctl fleet add-host` as docs/fleet.md says; appends its bus address
# and otpd's pid to fleet_buses and fleet_pids.
start_fleet_host() {
    local name=$1 window=$2 bus=$work/fleet-$1/bus
    mkdir -p "$work/fleet-$name"
    write_bus_config "$work/fleet-$name/bus.conf" "$bus" "$PWD/packaging/dbus/io.kron.Otpd.conf"
    dbus-daemon --config-file="$work/fleet-$name/bus.conf" --nofork --nopidfile &
    pids+=($!)
    wait_for_socket "$bus"
    {
        printf 'state_dir = "%s"\nsocket = "%s"\ndefault_mode = "optional"\n' \
            "$work/fleet-$name/state" "$work/fleet-$name/otpd.sock"
        printf '[[group]]\nname = "kronbench"\nmode = "require"\n'
        "${kronctl[@]}" fleet add-host "$name" --url "$owner_url" --ca-file "$work/fleet-ca.pem" \
            --owner-password-file "$work/owner-password" \
            --password-file "$work/fleet-$name/password" | grep -v '^#'
        printf 'offline_window = %s\n' "$window"
    } > "$work/fleet-$name/otpd.toml"
    "$target/otpd" --config "$work/fleet-$name/otpd.toml" --bus "unix:path=$bus" \
        >> "$work/fleet-$name/otpd.log" 2>&1 &
    pids+=($!)
    fleet_pids+=($!)
    "$bench" wait-ready --bus "unix:path=$bus" --since-ns "$(date +%s%N)" > /dev/null
    fleet_buses+=("unix:path=$bus")
    # As installed: pam_kron reaches the host's otpd on its own socket, not the bus.
    printf 'auth required %s socket=%s\n' "$target/libpam_kron.so" "$work/fleet-$name/otpd.sock" \
        > "$work/pam/kb-fleet-$name"
}
