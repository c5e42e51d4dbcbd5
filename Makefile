# The README's two commands are `make up` and `make test`.
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: up test deps build release lint bench clean

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
test: deps
	$(CARGO) test --locked -- --test-threads=1

lint: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Store vs etcd on three namespaces (needs root); results also in target/bench/.
bench:
	@scripts/install-deps.sh --bench
	$(CARGO) bench --locked --bench store_vs_etcd

clean:
	$(CARGO) clean
