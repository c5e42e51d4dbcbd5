# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared helpers for the image scripts (sourced, not run). Everything comes from Debian
# packages fetched with `apt-get download` through the host's configured apt sources.
#
# Variables it sets: IMAGES_DIR, WORK_DIR, OUT_DIR, IMAGES_VERSION.

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WORK_DIR=${STRATA_IMAGES_WORK:-$IMAGES_DIR/work}
OUT_DIR=${STRATA_IMAGES_OUT:-$IMAGES_DIR/out}
IMAGES_VERSION=$(tr -d ' \n' <"$IMAGES_DIR/VERSION")
# The cloud kernel's meta package; the concrete linux-image-<abi>-cloud-amd64 it depends on
# is what gets used.
KERNEL_META=${STRATA_KERNEL_META:-linux-image-cloud-amd64}

die() { echo "error: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

need_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 ||
      die "'$c' not found; run images/install-deps.sh (as root) to install the Debian packages"
  done
}

# pkg_version PKG -> the candidate version apt would download.
pkg_version() {
  local v
  v=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
  if [ -z "$v" ] || [ "$v" = "(none)" ]; then die "package $1 is not known to apt (run apt-get update?)"; fi
  echo "$v"
}

# kernel_package -> linux-image-<abi>-cloud-amd64 that the meta package depends on.
kernel_package() {
  local p
  p=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
      awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$p" ] || die "cannot resolve the kernel package behind $KERNEL_META (apt-cache depends)"
  echo "$p"
}

# fetch_unpack PKG -> prints the directory the package's .deb was unpacked into.
# Downloads into $WORK_DIR/debs (once per version), unpacks into $WORK_DIR/pkg/<pkg>_<ver>.
fetch_unpack() {
  local pkg=$1 ver deb dir
  ver=$(pkg_version "$pkg")
  mkdir -p "$WORK_DIR/debs" "$WORK_DIR/pkg"
  dir="$WORK_DIR/pkg/${pkg}_${ver//:/%3a}"
  deb=$(find "$WORK_DIR/debs" -maxdepth 1 -name "${pkg}_${ver//:/%3a}_*.deb" -print -quit)
  if [ -z "$deb" ]; then
    log "downloading $pkg=$ver"
    # apt's sandbox user may not be able to write here; download in a temp dir it owns.
    local tmp
    tmp=$(mktemp -d)
    chmod 0777 "$tmp"
    (cd "$tmp" && apt-get download -q "$pkg=$ver" >/dev/null 2>"$tmp/.err") ||
      { cat "$tmp/.err" >&2; rm -rf "$tmp"; die "apt-get download $pkg=$ver failed"; }
    mv "$tmp"/*.deb "$WORK_DIR/debs/"
    rm -rf "$tmp"
    deb=$(find "$WORK_DIR/debs" -maxdepth 1 -name "${pkg}_${ver//:/%3a}_*.deb" -print -quit)
  fi
  if [ ! -e "$dir/.unpacked" ]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir" || die "dpkg-deb -x $deb failed"
    touch "$dir/.unpacked"
  fi
  # Record for manifests: "<pkg> <ver> <sha256 of .deb>"
  echo "$pkg $ver $(sha256sum "$deb" | cut -d' ' -f1)" >>"${PKGS_USED:-$WORK_DIR/.pkgs-used}"
  echo "$dir"
}

# prepare_kernel -> sets KPKG, KVER (package version), KABI (module dir name), KDIR (unpacked),
# KMOD (module dir), KVMLINUZ. Runs depmod on the unpacked tree (the .deb has no modules.dep).
prepare_kernel() {
  need_cmd apt-get apt-cache dpkg-deb depmod
  KPKG=$(kernel_package)
  KVER=$(pkg_version "$KPKG")
  KDIR=$(fetch_unpack "$KPKG")
  KABI=${KPKG#linux-image-}
  KMOD="$KDIR/lib/modules/$KABI"
  KVMLINUZ="$KDIR/boot/vmlinuz-$KABI"
  [ -f "$KVMLINUZ" ] || die "no $KVMLINUZ in $KPKG"
  [ -d "$KMOD" ] || die "no module directory $KMOD in $KPKG"
  if [ ! -s "$KMOD/modules.dep" ]; then
    depmod -b "$KDIR" "$KABI" || die "depmod on the unpacked $KPKG failed"
  fi
}

# kernel_sde -> SOURCE_DATE_EPOCH taken from the kernel package's Debian changelog (first
# trailer line), so the images' timestamps follow the kernel release, not the build time.
kernel_sde() {
  local cl line
  cl=$(find "$KDIR/usr/share/doc" -name 'changelog*.gz' -print -quit)
  [ -n "$cl" ] || die "no changelog in $KPKG"
  line=$(zcat "$cl" | awk '/^ -- / {sub(/^.*>  /, ""); print; exit}')
  date -u -d "$line" +%s || die "cannot parse the changelog date '$line'"
}

# module_path NAME -> path (relative to $KMOD) of a modular driver, empty if none.
module_path() {
  local pat=${1//[-_]/[-_]}
  awk -F: -v re="/${pat}[.]ko([.][a-z]+)?\$" '$1 ~ re {print $1; exit}' "$KMOD/modules.dep"
}

# module_is_builtin NAME -> success if built into the kernel image.
module_is_builtin() {
  local pat=${1//[-_]/[-_]}
  grep -Eq "/${pat}[.]ko\$" "$KMOD/modules.builtin"
}

# module_closure NAME... -> module paths (relative to $KMOD), dependencies before users,
# each once. Builtin drivers are skipped; a name that is neither builtin nor a module fails.
module_closure() {
  local -A seen=()
  local -a order=()
  _mc_visit() {
    local p=$1 deps d i
    [ -n "${seen[$p]:-}" ] && return 0
    seen[$p]=1
    deps=$(awk -F': *' -v p="$p" '$1 == p {print $2; exit}' "$KMOD/modules.dep")
    local -a arr=()
    read -r -a arr <<<"$deps"
    # modules.dep lists the deepest dependency last; visit from the end.
    for ((i = ${#arr[@]} - 1; i >= 0; i--)); do
      d=${arr[$i]}
      _mc_visit "$d"
    done
    order+=("$p")
  }
  local n p
  for n in "$@"; do
    p=$(module_path "$n")
    if [ -z "$p" ]; then
      module_is_builtin "$n" && continue
      die "module $n is neither built into $KPKG nor shipped as a module"
    fi
    _mc_visit "$p"
  done
  printf '%s\n' "${order[@]}"
}

# install_modules ROOT NAME... -> copies the closure into ROOT/lib/modules/ and writes
# ROOT/lib/modules/load.list (insmod order, one path per line relative to /).
install_modules() {
  local root=$1 p
  shift
  mkdir -p "$root/lib/modules"
  : >"$root/lib/modules/load.list"
  while IFS= read -r p; do
    [ -n "$p" ] || continue
    install -D -m 0644 "$KMOD/$p" "$root/lib/modules/$(basename "$p")"
    echo "/lib/modules/$(basename "$p")" >>"$root/lib/modules/load.list"
  done < <(module_closure "$@")
}

# install_busybox ROOT -> static busybox at ROOT/bin/busybox plus applet symlinks.
install_busybox() {
  local root=$1 bb a
  bb=$(fetch_unpack busybox-static)
  install -D -m 0755 "$bb/bin/busybox" "$root/bin/busybox"
  while IFS= read -r a; do
    if [ -z "$a" ] || [ "$a" = bin/busybox ]; then continue; fi
    [ -e "$root/$a" ] && continue
    mkdir -p "$root/$(dirname "$a")"
    ln -s /bin/busybox "$root/$a"
  done < <("$root/bin/busybox" --list-full | LC_ALL=C sort)
}

# make_base_dirs ROOT -> the directories and /dev/console node every initramfs needs
# (the kernel opens /dev/console before /init runs; devtmpfs is mounted by /init).
make_base_dirs() {
  local root=$1
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,run,etc,root,mnt,var/run,var/tmp}
  [ -e "$root/dev/console" ] || mknod -m 0600 "$root/dev/console" c 5 1 ||
    die "mknod $root/dev/console failed (needs root)"
  [ -e "$root/dev/null" ] || mknod -m 0666 "$root/dev/null" c 1 3
  chmod 1777 "$root/tmp" "$root/var/tmp"
}

# make_cpio ROOT OUTFILE SDE -> reproducible gzip'd newc cpio of ROOT (sorted names,
# mtimes clamped to SDE, owner root, no gzip name/time).
make_cpio() {
  local root=$1 out=$2 sde=$3
  need_cmd cpio gzip
  find "$root" -exec touch -h -d "@$sde" {} +
  mkdir -p "$(dirname "$out")"
  (cd "$root" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --null --reproducible -H newc -o -R 0:0 --quiet) | gzip -n -9 >"$out.tmp"
  mv "$out.tmp" "$out"
}

# copy_with_libs ROOT PROGRAM [DEST] -> copies a dynamically linked program and every library
# ldd reports (keeping their paths, plus the ELF interpreter) into ROOT.
copy_with_libs() {
  local root=$1 prog=$2 dest=${3:-$2} lib
  [ -f "$prog" ] || die "--bin $prog: no such file"
  install -D -m 0755 "$prog" "$root/$dest"
  while IFS= read -r lib; do
    [ -n "$lib" ] || continue
    if [ ! -e "$root/$lib" ]; then
      install -D -m 0755 "$(readlink -f "$lib")" "$root/$lib"
    fi
  done < <(ldd "$prog" 2>/dev/null | awk '/=> \// {print $3} /^\t\// {print $1}' | LC_ALL=C sort -u)
}

# apt_mirror -> the first http(s) Debian mirror URI configured for the host's main suite
# (deb822 .sources or one-line sources.list), read at run time; never stored anywhere.
apt_mirror() {
  local suite=${1:-bookworm} f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '
      /^[[:space:]]*$/ { if (uri != "" && ok && deb) { print uri; found = 1; exit } uri = ""; ok = 0; deb = 0; next }
      /^URIs:/ { uri = $2 }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
      END { if (!found && uri != "" && ok && deb) print uri }' "$f"
  done | head -n1 | grep . && return 0
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v s="$suite" '$1 == "deb" && $3 == s {print $2; exit}' "$f"
  done | head -n1 | grep . && return 0
  die "no apt source for suite '$suite' found in /etc/apt/sources.list{,.d/*}"
}

# write_sha_lines DIR FILE... -> "sha256  name" lines for the manifest.
write_sha_lines() {
  local dir=$1 f
  shift
  for f in "$@"; do
    (cd "$dir" && sha256sum "$f")
  done
}

# check_reproducible OUT TAG BUILD_FN -> builds once more with BUILD_FN and fails unless
# OUT/MANIFEST (the sha256 of every output) is the same as after the first build.
check_reproducible() {
  local out=$1 tag=$2 build=$3
  cp "$out/MANIFEST" "$WORK_DIR/MANIFEST.$tag.first"
  : >"$PKGS_USED"
  "$build"
  if cmp -s "$WORK_DIR/MANIFEST.$tag.first" "$out/MANIFEST"; then
    log "reproducible: a second build gave identical sha256s"
  else
    diff "$WORK_DIR/MANIFEST.$tag.first" "$out/MANIFEST" >&2 || true
    die "not reproducible: the second build differs (see diff above)"
  fi
}
