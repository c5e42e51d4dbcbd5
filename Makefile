# The README's two commands are `make up` and `make test`.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: up test deps build release lint bench clean images images-guest images-tiny images-test usb

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --locked

release: deps
	$(CARGO) build --locked --release

## Start a single-node appliance on loopback (data under ./var).
up: release
	@scripts/up.sh

## Everything: unit tests, in-process cluster tests and the network-namespace cluster tests.
test: deps images-guest images-tiny
	$(CARGO) test --locked -- --test-threads=1

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Store vs etcd and volume I/O vs fio/qemu-nbd on three namespaces, and Strata's VMM vs
## QEMU/KVM in a nested test host
## (needs root); results also in target/bench/.
bench:
	@scripts/install-deps.sh --bench
	$(CARGO) bench --locked --bench store_vs_etcd
	$(CARGO) bench --locked --bench volume_vs_fio
	$(CARGO) bench --locked --bench overlay_vs_vxlan
	$(CARGO) bench --locked --bench api_latency
	@images/install-deps.sh
	images/build-guest.sh
	images/build-tiny.sh
	$(CARGO) bench --locked --bench vmm_vs_qemu

clean:
	$(CARGO) clean

## The installer: one hybrid ISO/USB image (BIOS, UEFI, Secure Boot) from Debian packages,
## with the release binary; installer/out/strata-installer.iso (write it with dd).
usb: release
	installer/build.sh $(if $(CONFIG),--config $(CONFIG))

## Guest images from Debian packages (root): test guest, strata-tiny cloud image, Debian
## rootfs (into images/out/).
images:
	@images/install-deps.sh
	images/build-guest.sh
	images/build-tiny.sh
	images/build-rootfs.sh

## Only the small busybox test guest (kernel + initramfs).
images-guest:
	@images/install-deps.sh
	images/build-guest.sh

## strata-tiny: a small CirrOS-like cloud image (GRUB for BIOS and UEFI, config drive or
## metadata service, SSH keys, dropbear), qcow2 and raw.
images-tiny:
	@images/install-deps.sh
	images/build-tiny.sh

## QEMU/KVM boots the test guest inside the nested-KVM test host (TCG); prints STRATA-BENCH.
images-test: images-guest
	images/testhost/build.sh --with-qemu --scenario images/testhost/scenarios/qemu-kvm-guest.sh \
		--out images/out/testhost/qemu-kvm-guest.cpio.gz
	images/testhost/run.sh --initrd images/out/testhost/qemu-kvm-guest.cpio.gz \
		--log images/out/testhost/qemu-kvm-guest.log
