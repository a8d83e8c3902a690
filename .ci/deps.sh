#!/usr/bin/env bash
# The Debian packages the tests need (`make deps`, used by `make test` and so by CI):
#   softhsm2    the PKCS#11 master-key tests (a real SoftHSM2 token)
#   prometheus  promtool, which checks and unit-tests the alert rules in deploy/
#   postgresql  initdb/pg_ctl for the throwaway PostgreSQL cluster of the storage tests
#   protoc-gen-go, protoc-gen-go-grpc  the Go client stubs of buf.gen.yaml
# Installed when missing and running as root; otherwise one line naming them, and exit 1.
set -euo pipefail
missing=()
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v protoc-gen-go >/dev/null 2>&1 || missing+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null 2>&1 || missing+=(protoc-gen-go-grpc)
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "make test needs the Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
# The server binaries only: no main cluster is created, so no system PostgreSQL starts.
mkdir -p /etc/postgresql-common
[ -e /etc/postgresql-common/createcluster.conf ] ||
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
