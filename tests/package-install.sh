#!/usr/bin/env bash
# Installs, upgrades, removes and purges the Debian package inside a
# throwaway debian:bookworm-slim container (docker or podman), never on this
# machine: `scripts/package --install-check`. Checks what a Debian admin
# expects: the user and 0750 data dir made on install, the service able to
# run as that user with the packaged configuration, data and an edited
# conffile kept across an upgrade and a remove, both gone after a purge.
set -euo pipefail
cd "$(dirname "$0")/.."

engine=${CONTAINER_ENGINE:-$(command -v podman || command -v docker || true)}
if [ -z "$engine" ]; then
    echo "tests/package-install.sh: needs docker or podman" >&2
    exit 1
fi
image=${PACKAGE_TEST_IMAGE:-docker.io/library/debian:bookworm-slim}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=target/debian/switchyard_${version}-1_amd64.deb
[ -f "$deb" ] || { echo "no $deb; build it with scripts/package" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$deb" "$work/first.deb"
# The upgrade: the same build as revision 2. cargo-deb clears target/debian
# of older packages as it writes one, so the first is put back.
cargo deb --no-build --no-strip --locked --deb-revision 2 --output "$work/second.deb" >/dev/null
[ -f "$deb" ] || cp "$work/first.deb" "$deb"

cat >"$work/inside.sh" <<'INSIDE'
set -eu
export DEBIAN_FRONTEND=noninteractive
fail() { echo "FAIL: $*" >&2; exit 1; }
mode() { stat -c '%a %U:%G' "$1"; }

apt-get update -qq
apt-get install -y -qq /x/first.deb >/dev/null 2>&1
getent passwd switchyard >/dev/null || fail "no switchyard user"
[ "$(mode /var/lib/switchyard)" = "750 switchyard:switchyard" ] || fail "data dir: $(mode /var/lib/switchyard)"
[ -L /etc/systemd/system/multi-user.target.wants/switchyard.service ] || fail "unit not enabled"

# The service's command, as its user (no systemd in the container).
su -s /bin/sh switchyard -c 'cd /var/lib/switchyard && echo $$ >/tmp/serve.pid &&
    exec switchyard serve --config /etc/switchyard/switchyard.toml >/tmp/serve.log 2>&1' &
for _ in $(seq 1 100); do switchyard healthcheck >/dev/null 2>&1 && break; sleep 0.1; done
switchyard healthcheck || fail "the service did not come up: $(cat /tmp/serve.log)"
pid=$(cat /tmp/serve.pid)
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "the service did not stop on SIGTERM"
[ -s /var/lib/switchyard/switchyard.redb ] || fail "no database written"
token=$(cat /var/lib/switchyard/admin_token)

echo '# edited by the admin' >>/etc/switchyard/switchyard.toml
apt-get install -y -qq /x/second.deb >/dev/null 2>&1
dpkg -s switchyard | grep -qx 'Version: 0.1.0-2' || fail "not upgraded"
grep -qx '# edited by the admin' /etc/switchyard/switchyard.toml || fail "upgrade lost the conffile edit"
[ "$(cat /var/lib/switchyard/admin_token)" = "$token" ] || fail "upgrade lost the data"

apt-get remove -y -qq switchyard >/dev/null
[ -s /var/lib/switchyard/switchyard.redb ] || fail "remove deleted the data"
getent passwd switchyard >/dev/null || fail "remove deleted the user"
[ -f /etc/switchyard/switchyard.toml ] || fail "remove deleted the conffile"

apt-get purge -y -qq switchyard >/dev/null
[ ! -e /var/lib/switchyard ] || fail "purge left /var/lib/switchyard"
getent passwd switchyard >/dev/null && fail "purge left the user"
getent group switchyard >/dev/null && fail "purge left the group"
[ ! -e /etc/switchyard/switchyard.toml ] || fail "purge left the conffile"
echo "install, upgrade, remove and purge behave"
INSIDE

"$engine" run --rm -v "$work:/x:ro" "$image" sh /x/inside.sh
