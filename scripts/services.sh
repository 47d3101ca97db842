# Sourced by scripts/run.sh and scripts/test.sh: make sure a PostgreSQL and a
# Redis answer on loopback, installing them from Debian's packages and starting
# them when they are missing. Servers already running are left as they are.
# Also `ensure_cfn_lint`, the template linter the test suite runs.
#
#   PG_PORT (5432), REDIS_PORT (6379)

PG_PORT="${PG_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

apt_install() {
    if [ -z "${APT_UPDATED:-}" ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # description, tries, command...
    local what="$1" tries="$2"
    shift 2
    for _ in $(seq "$tries"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "$what did not come up"
    return 1
}

ensure_postgres() {
    command -v pg_isready >/dev/null || apt_install postgresql-client
    if pg_isready -q -h 127.0.0.1 -p "$PG_PORT"; then return 0; fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        apt_install postgresql
        local version
        version="$(ls /etc/postgresql | sort -n | tail -1)"
        # A server we just installed: let local tools in without a password on
        # loopback, as the test and run scripts expect (never for other hosts).
        local hba="/etc/postgresql/$version/main/pg_hba.conf"
        sed -i -E 's/^(local|host)(\s+all\s+all\s+.*)(peer|scram-sha-256|md5)$/\1\2trust/' "$hba"
        sed -i -E 's/^(local\s+all\s+postgres\s+)peer$/\1trust/' "$hba"
    fi
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -n | tail -1)" main start
    wait_for PostgreSQL 100 pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
}

ensure_redis() {
    command -v redis-server >/dev/null || apt_install redis-server
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" --save "" \
        --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis 100 sh -c "redis-cli -h 127.0.0.1 -p $REDIS_PORT ping | grep -q PONG"
}

# cfn-lint with the SAM translator, pinned, in a virtualenv of the project's
# own (target/tools/cfn-lint), put first on PATH. Pinned because what the
# machine happens to have differs: cfn-lint 1.51 with aws-sam-translator 1.110
# cannot expand the HttpApi's `AWS::Include` of openapi.yaml (E0001). The
# venv's python3, also first on PATH, runs scripts/sam-translate.py with the
# translator (cfn-lint 1.58 itself no longer runs it).
CFN_LINT_VERSION=1.58.0
SAM_TRANSLATOR_VERSION=1.115.0
ensure_cfn_lint() {
    local venv="$PWD/target/tools/cfn-lint"
    if ! "$venv/bin/cfn-lint" --version 2>/dev/null | grep -qx "cfn-lint $CFN_LINT_VERSION" ||
        ! "$venv/bin/python" -c "import samtranslator" 2>/dev/null; then
        log "installing cfn-lint $CFN_LINT_VERSION and aws-sam-translator $SAM_TRANSLATOR_VERSION from PyPI into $venv"
        python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$venv"; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check \
            "cfn-lint==$CFN_LINT_VERSION" "aws-sam-translator==$SAM_TRANSLATOR_VERSION"
    fi
    export PATH="$venv/bin:$PATH"
}
