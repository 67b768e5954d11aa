#!/usr/bin/env bash
# make deb: pgchorus_<version>_<arch>.deb from a release build with the Swift runtime linked statically.
# Depends: is computed by dpkg-shlibdeps from the binaries' real shared-library needs.
# Output: .build/deb/pgchorus_<version>_<arch>.deb (override with DEB_OUT=dir).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
export LC_ALL=C.UTF-8
umask 022

OUT=${DEB_OUT:-.build/deb}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SRC=Packaging/debian

UPSTREAM=$(sed -n 's/.*static let current = "\(.*\)".*/\1/p' Sources/State/Support/Version.swift)
CHANGELOG_VERSION=$(sed -n '1s/^pgchorus (\(.*\)) .*/\1/p' "$SRC/changelog")
VERSION=$CHANGELOG_VERSION
if [ "${CHANGELOG_VERSION%-*}" != "$UPSTREAM" ]; then
    echo "build-deb: $SRC/changelog is at $CHANGELOG_VERSION but Sources/State/Support/Version.swift says $UPSTREAM;" >&2
    echo "build-deb: add a changelog entry for $UPSTREAM first." >&2
    exit 1
fi
MAINTAINER=$(sed -n 's/^ -- \(.*>\)  .*/\1/p' "$SRC/changelog" | head -1)
ARCH=$(dpkg --print-architecture)

echo "== release build (static Swift runtime, full RELRO, no run-time exclusivity checks: the Makefile's RELEASE_FLAGS)"
RELEASE_FLAGS=(-c release --static-swift-stdlib -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now -Xswiftc -enforce-exclusivity=unchecked)
# One binary: pgchorus is also the daemon when started as pgchorusd (/usr/sbin/pgchorusd links to it).
swift build "${RELEASE_FLAGS[@]}" --product pgchorus
BIN=$(swift build "${RELEASE_FLAGS[@]}" --show-bin-path)

echo "== man page generator (swift-argument-parser's generate-manual)"
swift build -c release --package-path .build/checkouts/swift-argument-parser --scratch-path .build/argument-parser-tools \
    --product generate-manual >/dev/null
GENERATE_MANUAL=.build/argument-parser-tools/release/generate-manual

ROOT="$OUT/root"
rm -rf "$ROOT"
install -d -m 0755 "$ROOT/DEBIAN" "$ROOT/usr/sbin" "$ROOT/usr/bin" "$ROOT/etc/pgchorus" "$ROOT/lib/systemd/system" \
    "$ROOT/usr/share/doc/pgchorus" "$ROOT/usr/share/man/man1" "$ROOT/usr/share/man/man8" \
    "$ROOT/usr/share/bash-completion/completions"

echo "== staging"
install -m 0755 "$BIN/pgchorus" "$ROOT/usr/bin/pgchorus"
ln -s ../bin/pgchorus "$ROOT/usr/sbin/pgchorusd"
strip --remove-section=.comment --remove-section=.note --strip-unneeded "$ROOT/usr/bin/pgchorus"

# Group and mode of the configuration are set in postinst (the pgchorus group does not exist yet).
install -m 0640 "$SRC/pgchorus.toml" "$ROOT/etc/pgchorus/pgchorus.toml"
install -m 0640 "$SRC/users.txt" "$ROOT/etc/pgchorus/users.txt"
install -m 0644 "$SRC/pgchorusd.service" "$ROOT/lib/systemd/system/pgchorusd.service"

MAN=$(mktemp -d)
trap 'rm -rf "$MAN"' EXIT
DATE=$(date -u -d "$(sed -n 's/^ -- .*>  \(.*\)$/\1/p' "$SRC/changelog" | head -1)" +%Y-%m-%d)
"$GENERATE_MANUAL" "$ROOT/usr/bin/pgchorus" --section 1 --date "$DATE" --authors "the pgchorus developers" --output-directory "$MAN"
"$GENERATE_MANUAL" "$ROOT/usr/sbin/pgchorusd" --section 8 --date "$DATE" --authors "the pgchorus developers" --output-directory "$MAN"
# mdoc wants .Pp, not empty lines, between the paragraphs of a discussion.
sed 's/^$/.Pp/' "$MAN/pgchorus.1" | gzip -9n > "$ROOT/usr/share/man/man1/pgchorus.1.gz"
sed 's/^$/.Pp/' "$MAN/pgchorusd.8" | gzip -9n > "$ROOT/usr/share/man/man8/pgchorusd.8.gz"
# A completion file is sourced, not run: no #! line.
"$ROOT/usr/bin/pgchorus" --generate-completion-script bash | sed '1{/^#!/d}' > "$ROOT/usr/share/bash-completion/completions/pgchorus"
chmod 0644 "$ROOT/usr/share/bash-completion/completions/pgchorus"

DOC="$ROOT/usr/share/doc/pgchorus"
install -m 0644 "$SRC/copyright" "$DOC/copyright"
gzip -9n -c "$SRC/changelog" > "$DOC/changelog.Debian.gz"
install -m 0644 README.md docs/configuration.md docs/operations.md docs/replication.md "$DOC/"
install -m 0644 Packaging/README.md "$DOC/README.Debian"

install -m 0755 "$SRC/postinst" "$SRC/prerm" "$SRC/postrm" "$ROOT/DEBIAN/"
install -m 0644 "$SRC/conffiles" "$ROOT/DEBIAN/conffiles"

echo "== dependencies (dpkg-shlibdeps)"
SHLIBS=$(mktemp -d)
mkdir -p "$SHLIBS/debian"
printf 'Source: pgchorus\n\nPackage: pgchorus\nArchitecture: any\n' > "$SHLIBS/debian/control"
SUBSTVARS=$(cd "$SHLIBS" && dpkg-shlibdeps -O "$ROOT/usr/bin/pgchorus")
rm -rf "$SHLIBS"
SHLIBS_DEPENDS=${SUBSTVARS#shlibs:Depends=}
# adduser for the maintainer scripts; the libraries are what the binaries really link.
DEPENDS="adduser, $SHLIBS_DEPENDS"
echo "Depends: $DEPENDS"

INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@MAINTAINER@|$MAINTAINER|" \
    -e "s|@INSTALLED_SIZE@|$INSTALLED_SIZE|" -e "s|@DEPENDS@|$DEPENDS|" "$SRC/control.in" > "$ROOT/DEBIAN/control"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f ! -path './etc/*' -printf '%P\n' | LC_ALL=C sort \
    | xargs md5sum > DEBIAN/md5sums)
chmod 0644 "$ROOT/DEBIAN/md5sums" "$ROOT/DEBIAN/control"

DEB="$OUT/pgchorus_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "== built $DEB ($(du -h "$DEB" | cut -f1))"
