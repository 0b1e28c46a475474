#!/usr/bin/env bash
# Starts the local services the test suites talk to, when they are not running already:
# PostgreSQL (127.0.0.1:5432) and NATS with JetStream (127.0.0.1:4222). On a machine
# without them installed it says so and goes on: the suites that need them skip with
# that reason, and the embedded default (SQLite) needs no server at all.
set -uo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_up() {
    for _ in $(seq 1 50); do up "$1" && return 0; sleep 0.2; done
    return 1
}

if up 5432; then
    echo "services: PostgreSQL already up on 127.0.0.1:5432"
elif command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    wait_up 5432 && echo "services: started PostgreSQL" || echo "services: PostgreSQL did not come up"
else
    echo "services: PostgreSQL is not installed here; its suites will skip"
fi

# The PostgreSQL suites connect as role quickpay (CREATEDB: each test module makes and
# drops a database of its own) to database quickpay_test. The two-phase commit suites
# need prepared transactions, which a stock cluster disables (max_prepared_transactions
# = 0) and which only a restart enables: done here, once, so the tests never restart a
# server themselves.
pg_setup() {
    local psql=(psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
    "${psql[@]}" -c "SELECT 1" >/dev/null 2>&1 || { echo "services: PostgreSQL not answering"; return 0; }
    "${psql[@]}" -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'quickpay') THEN
            CREATE ROLE quickpay LOGIN CREATEDB;
        END IF; END \$\$;"
    if [ -z "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = 'quickpay_test'")" ]; then
        "${psql[@]}" -c "CREATE DATABASE quickpay_test OWNER quickpay"
        echo "services: created database quickpay_test"
    fi
    local prepared
    prepared=$("${psql[@]}" -c "SHOW max_prepared_transactions")
    if [ "$prepared" = "0" ]; then
        "${psql[@]}" -c "ALTER SYSTEM SET max_prepared_transactions = 64"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main restart
        wait_up 5432 && sleep 0.5
        echo "services: max_prepared_transactions now $("${psql[@]}" -c "SHOW max_prepared_transactions") (restarted PostgreSQL)"
    fi
}
if up 5432 && command -v psql >/dev/null; then
    pg_setup
fi

if up 4222; then
    echo "services: NATS already up on 127.0.0.1:4222"
elif [ -x /usr/sbin/nats-server ]; then
    mkdir -p /var/lib/nats-server
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_up 4222 && echo "services: started NATS" || echo "services: NATS did not come up"
else
    echo "services: NATS is not installed here; its suites will skip"
fi
exit 0
