#!/usr/bin/env bash
# Installs the Debian packages the image scripts need (as root), or says what is missing
# (otherwise); the list lives in scripts/install-deps.sh --images. busybox-static and the
# cloud kernel are fetched with `apt-get download`, not installed.
exec "$(dirname "${BASH_SOURCE[0]}")/../scripts/install-deps.sh" --images
