#!/usr/bin/env bash
# Inspects the Debian package scripts/package built (target/debian/):
# its files, conffiles, maintainer scripts and the binary inside it.
# Run by `scripts/package` and `scripts/package --check`.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
deb=$(ls -t target/debian/switchyard_"${version}"*_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
    echo "tests/package.sh: no target/debian/switchyard_${version}_*.deb; build it with scripts/package" >&2
    exit 1
fi

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}
# `has FILE TEXT...`: FILE contains each TEXT as a fixed string.
has() {
    local file=$1
    shift
    for text in "$@"; do
        grep -qF -- "$text" "$file" || fail "$(basename "$file") lacks: $text"
    done
}
lacks() {
    local file=$1
    shift
    for text in "$@"; do
        if grep -qF -- "$text" "$file"; then fail "$(basename "$file") should not contain: $text"; fi
    done
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "checking $deb ($(du -h "$deb" | cut -f1))"

# Files.
dpkg-deb --contents "$deb" | awk '{print $NF}' | sed 's|^\./|/|' >"$work/files"
for path in \
    /usr/bin/switchyard \
    /etc/switchyard/switchyard.toml \
    /usr/share/doc/switchyard/switchyard.toml.reference \
    /usr/share/doc/switchyard/copyright \
    /usr/share/bash-completion/completions/switchyard \
    /usr/share/zsh/vendor-completions/_switchyard \
    /usr/share/fish/vendor_completions.d/switchyard.fish; do
    grep -qx -- "$path" "$work/files" || fail "the package lacks $path"
done
unit=$(grep -E '^/(usr/)?lib/systemd/system/switchyard\.service$' "$work/files" || true)
[ -n "$unit" ] || fail "the package lacks switchyard.service under /lib/systemd/system"
if grep -q '^/var/lib/switchyard' "$work/files"; then
    fail "/var/lib/switchyard is made by postinst, not shipped (dpkg would remove it with the package)"
fi
dpkg-deb --contents "$deb" | grep -E ' \./usr/bin/switchyard$' | grep -qE '^-rwxr-xr-x (root/root|0/0) ' ||
    fail "/usr/bin/switchyard is not 0755 root:root"

# Control files.
dpkg-deb -e "$deb" "$work/control"
control=$work/control
[ "$(cat "$control/conffiles")" = "/etc/switchyard/switchyard.toml" ] ||
    fail "conffiles is not exactly /etc/switchyard/switchyard.toml: $(cat "$control/conffiles")"
has "$control/control" "Package: switchyard" "Version: $version" "Depends: " "adduser | passwd" "ca-certificates"
for script in postinst postrm prerm; do
    [ -x "$control/$script" ] || { fail "no executable $script"; continue; }
    sh -n "$control/$script" || fail "$script is not valid sh"
    lacks "$control/$script" "#DEBHELPER#"
done
has "$control/postinst" \
    'adduser --system --group' \
    'install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard' \
    'deb-systemd-helper enable switchyard.service' \
    'deb-systemd-invoke try-restart switchyard.service'
# Enabled, not started on a fresh install; on upgrade restarted only if it
# was running (try-restart).
if grep -qE 'deb-systemd-invoke (start|\$_dh_action) ' "$control/postinst"; then
    fail "postinst starts the service"
fi
has "$control/prerm" 'deb-systemd-invoke stop switchyard.service'
has "$control/postrm" \
    'if [ "$1" = "purge" ]' \
    'rm -rf /var/lib/switchyard' \
    'deluser --quiet --system switchyard' \
    'deb-systemd-helper purge switchyard.service'
# rm of the data happens only under purge: nothing before the purge test.
awk '/rm -rf \/var\/lib\/switchyard/ { exit !purge } /"\$1" = "purge"/ { purge = 1 }' "$control/postrm" ||
    fail "postrm removes /var/lib/switchyard outside purge"

# The files themselves.
dpkg-deb -x "$deb" "$work/root"
root=$work/root
has "$root$unit" \
    'ExecStart=/usr/bin/switchyard serve --config /etc/switchyard/switchyard.toml' \
    'User=switchyard' 'StateDirectory=switchyard' 'ProtectSystem=strict' \
    'ProtectHome=yes' 'NoNewPrivileges=yes' 'PrivateTmp=yes' \
    'ReadWritePaths=/var/lib/switchyard' 'CapabilityBoundingSet=' \
    'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'SystemCallFilter=@system-service'
binary=$root/usr/bin/switchyard
"$binary" --version | grep -qE "^switchyard $version \([0-9a-f]+ [0-9]{4}-[0-9]{2}-[0-9]{2}\)$" ||
    fail "--version says: $("$binary" --version)"
if readelf -S "$binary" | grep -qE '\.symtab|\.debug_'; then
    fail "/usr/bin/switchyard is not stripped"
fi
# The server accepts the packaged configuration, with its data dir.
checked=$(cd "$work" && "$binary" config check --config "$root/etc/switchyard/switchyard.toml" 2>&1) ||
    fail "config check refuses the packaged configuration: $checked"
grep -qF 'data_dir = "/var/lib/switchyard"' <<<"$checked" || fail "packaged data_dir: $checked"
grep -qE '^\s*complete -F _switchyard .* switchyard$' "$root/usr/share/bash-completion/completions/switchyard" ||
    fail "the bash completion does not register itself"

echo "binary: $(stat -c %s "$binary") bytes"
if [ "$failures" -gt 0 ]; then
    echo "tests/package.sh: $failures check(s) failed" >&2
    exit 1
fi
echo "tests/package.sh: all checks passed"
