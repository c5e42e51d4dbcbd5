#!/usr/bin/env bash
# `make up`: a single-node appliance on loopback with its data under ./var.
set -euo pipefail
BIN=${BIN:-target/release/strata}
DATA=${STRATA_DATA_DIR:-$PWD/var}
LISTEN=${STRATA_LISTEN:-127.0.0.1:7440}
if [ ! -f "$DATA/node.toml" ]; then
  "$BIN" --data-dir "$DATA" init --listen "$LISTEN" --cluster-name strata-dev
fi
echo
echo "Starting strata (Ctrl-C stops it). In another terminal:"
echo "  $BIN --data-dir $DATA status"
echo "  $BIN --data-dir $DATA token create      # to add another node"
if [ -f images/out/guest/vmlinuz ]; then
  echo "  $BIN --data-dir $DATA vm create demo --kernel images/out/guest/vmlinuz \\"
  echo "      --initrd images/out/guest/initramfs.cpio.gz --wait 60   # a first VM"
  echo "  $BIN --data-dir $DATA vm console demo"
else
  echo "  make images-guest   # then: $BIN --data-dir $DATA vm create ... (see README)"
fi
API_HOST=${LISTEN%:*}
echo
echo "OpenStack API (Keystone, Nova, Glance, Cinder, Neutron; HTTPS, certificate from the"
echo "cluster CA $DATA/pki/ca.crt): https://$API_HOST:5000/identity/v3"
echo "First credentials: user admin, project admin, password in $DATA/admin-password"
echo "(written on the first start, readable by root only). For the openstack client:"
echo "  source <($BIN --data-dir $DATA openrc)    # sets OS_AUTH_URL, OS_CACERT, OS_PASSWORD, ..."
echo
echo "Web console: https://$API_HOST:5000/ (same user and password; the browser will ask"
echo "you to trust the cluster's certificate, or import $DATA/pki/ca.crt)."
echo
exec "$BIN" --data-dir "$DATA" serve --listen "$LISTEN"
