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
