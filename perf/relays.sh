# perf/relays.sh - the relay configurations the perf scripts compare, in one
# place, so perf/bench.sh and perf/profile.sh measure the same thing.
# Source it; each function prints a configuration on stdout.
#
#   broker_config SOCK ADMIN_SOCK BACKEND POOL CACHE(0|1) WORKERS
#     brokerd: log at warn, cache off (max_bytes 0) unless CACHE=1, a rate
#     limit and client cap that never bind, one backend "mock" with POOL
#     connections and a queue long enough for any client count here.
#   haproxy_config SOCK BACKEND MAXCONN THREADS
#     HAProxy 2.x TCP mode, Unix-socket frontend, one server with MAXCONN
#     connections (it queues the rest, as brokerd's pool does).

broker_config() {
  local cache='{"max_bytes":0}'
  [ "$5" = 1 ] && cache='{}'
  cat <<EOC
{"listen": "$1", "admin_listen": "$2", "workers": $6,
 "log": {"level": "warn"}, "max_clients": 100000, "cache": $cache,
 "rate_limit": {"rate": 10000000, "burst": 100000000},
 "backends": [{"name": "mock", "address": "$3", "pool_size": $4, "max_queue": 65536}]}
EOC
}

haproxy_config() {
  cat <<EOC
global
    maxconn 4096
    nbthread $4
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout queue 60s
frontend f
    bind unix@$1
    default_backend b
backend b
    server m $2 maxconn $3
EOC
}
