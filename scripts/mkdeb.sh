#!/bin/sh
# Build the binary Debian package build/deb/socks5d_DEBVERSION_ARCH.deb from
# the release binaries (make deb), with dpkg-deb: the packaging files are in
# dist/debian/, the package version is the top entry of
# dist/debian/changelog, which must be the version socks5d --version says
# with a Debian revision (0.1.0-1).
#
# Usage: VERSION=0.1.0 scripts/mkdeb.sh   (the Makefile passes VERSION)
set -eu

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

DEB=dist/debian
OUT=build/deb
PKG=$OUT/root
WORK=$OUT/work

die() {
	echo "mkdeb: $*" >&2
	exit 1
}

[ -x build/socks5d ] && [ -x build/pipoClient ] || die "build/socks5d and build/pipoClient are missing (run make first)"

debver="$(dpkg-parsechangelog -l $DEB/changelog -S Version)"
upstream="${debver%-*}"
[ -z "${VERSION:-}" ] || [ "$VERSION" = "$upstream" ] ||
	die "the Makefile says version $VERSION but $DEB/changelog's top entry is $debver: add an entry"
binver="$(build/socks5d --version)"
[ "$binver" = "socks5d $upstream" ] ||
	die "build/socks5d --version says '$binver', $DEB/changelog says $debver: rebuild (make clean all)"
arch="$(dpkg --print-architecture)"

# Reproducible: every timestamp is the changelog entry's.
SOURCE_DATE_EPOCH="$(dpkg-parsechangelog -l $DEB/changelog -S Timestamp)"
export SOURCE_DATE_EPOCH

rm -rf "$OUT"
umask 022
install -d "$PKG/DEBIAN" "$WORK/debian" \
	"$PKG/usr/sbin" "$PKG/usr/bin" \
	"$PKG/usr/share/man/man1" "$PKG/usr/share/man/man5" "$PKG/usr/share/man/man8" \
	"$PKG/usr/share/doc/socks5d" "$PKG/usr/share/lintian/overrides" "$PKG/lib/systemd/system"

# Release binaries without their debugging symbols (as dh_strip does).
install -m 0755 build/socks5d "$PKG/usr/sbin/socks5d"
install -m 0755 build/pipoClient "$PKG/usr/bin/pipoClient"
strip --remove-section=.comment --remove-section=.note --strip-unneeded \
	"$PKG/usr/sbin/socks5d" "$PKG/usr/bin/pipoClient"

for m in pipoClient.1 socks5d.conf.5 socks5d.8; do
	sec="${m##*.}"
	gzip -9n <"man/$m" >"$PKG/usr/share/man/man$sec/$m.gz"
	chmod 0644 "$PKG/usr/share/man/man$sec/$m.gz"
done

install -m 0644 "$DEB/copyright" "$PKG/usr/share/doc/socks5d/copyright"
gzip -9n <"$DEB/changelog" >"$PKG/usr/share/doc/socks5d/changelog.Debian.gz"
chmod 0644 "$PKG/usr/share/doc/socks5d/changelog.Debian.gz"
install -m 0644 "$DEB/lintian-overrides" "$PKG/usr/share/lintian/overrides/socks5d"
install -m 0644 dist/socks5d.service "$PKG/lib/systemd/system/socks5d.service"

# The configuration: root's only until postinst has created the service
# user and hands the directory and file to it.
install -d -m 0750 "$PKG/etc/socks5d"
install -m 0640 dist/socks5d.conf "$PKG/etc/socks5d/socks5d.conf"

install -m 0644 "$DEB/conffiles" "$PKG/DEBIAN/conffiles"
for s in preinst postinst prerm postrm; do
	install -m 0755 "$DEB/$s" "$PKG/DEBIAN/$s"
done

# Depends: the libraries' packages (dpkg-shlibdeps reads debian/control of
# the directory it runs in: a minimal one), and adduser for postinst.
cat >"$WORK/debian/control" <<EOF
Source: socks5d

Package: socks5d
Architecture: any
EOF
shlibs="$(cd "$WORK" && dpkg-shlibdeps -O -e"$ROOT/$PKG/usr/sbin/socks5d" -e"$ROOT/$PKG/usr/bin/pipoClient" 2>"$ROOT/$WORK/shlibdeps.log")" ||
	die "dpkg-shlibdeps failed: $(cat "$WORK/shlibdeps.log")"
shlibs="${shlibs#shlibs:Depends=}"
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no libraries"
depends="adduser, $shlibs"

# Installed-Size in KiB, as dpkg-gencontrol counts it (files, links and
# directories, 1 KiB each at least) from what is installed (not DEBIAN/).
size="$(cd "$PKG" && find . -path ./DEBIAN -prune -o \( -type f -o -type l -o -type d \) -print0 |
	xargs -0 stat -c '%s' | awk '{ n += int(($1 + 1023) / 1024); if ($1 == 0) n += 1 } END { print n }')"

sed -e "s/@VERSION@/$debver/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
	-e "s/@DEPENDS@/$depends/" "$DEB/control.in" >"$PKG/DEBIAN/control"
grep -q '@[A-Z_]*@' "$PKG/DEBIAN/control" && die "control has an unfilled field"

# md5sums of every file but the conffile (dpkg keeps its sum elsewhere).
(cd "$PKG" && find . \( -path ./DEBIAN -o -path ./etc \) -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
	xargs md5sum) >"$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/control" "$PKG/DEBIAN/md5sums"

# Every file root's in the archive; mtimes clamped to SOURCE_DATE_EPOCH.
find "$PKG" -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
deb="$OUT/socks5d_${debver}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$deb" >/dev/null
echo "$deb"
