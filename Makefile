# pgchorus — the two set-up commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

# What a fresh Debian 12 lacks to build, demo and test pgchorus (installed only when missing).
APT_PACKAGES := postgresql postgresql-client postgresql-contrib libpq-dev libmnl-dev libpcap-dev \
	pkg-config openssl python3-psycopg2 python3-psycopg python3-pip iproute2 libsqlite3-dev tcpdump bind9-utils bind9-dnsutils dnsmasq-base nftables

# What `make deb` and the package tests need besides.
DEB_PACKAGES := dpkg-dev binutils xz-utils lintian debootstrap systemd man-db

SWIFT_FLAGS ?=
DEMO_ARGS ?=

.PHONY: all deps deb-deps build demo test test-psycopg2 test-deb deb release release-product fuzz clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

deb-deps:
	@$(MAKE) --no-print-directory deps APT_PACKAGES="$(DEB_PACKAGES)"

build: deps
	swift build $(SWIFT_FLAGS)

# A local demo cluster: real PostgreSQL backends, pgchorusd in front, ready for psql.
demo: build
	.build/debug/pgchorus demo $(DEMO_ARGS)

# The whole test suite against real PostgreSQL servers, psycopg2's own test suite through three
# backends (compatibility stage), then the Debian package's tests. A failed run ends with a digest of
# its recorded issues (.ci/failure-digest.sh), the whole output stays in /tmp/pgchorus-swift-test.log.
test: deps deb-deps
	swift build --build-tests $(SWIFT_FLAGS)
	set -o pipefail; swift test --skip-build $(SWIFT_FLAGS) 2>&1 | tee /tmp/pgchorus-swift-test.log \
		|| { .ci/failure-digest.sh /tmp/pgchorus-swift-test.log; exit 1; }
	PGCHORUS_BIN=.build/debug PSYCOPG2_SUITE_OUT=/tmp/pgchorus-psycopg2-suite.md bench/psycopg2-suite.sh
	Packaging/test-deb.sh

# Only the compatibility stage: every psycopg2 test that passes directly passes through a
# 3-backend demo, whose backends end online and identical (needs a debug build).
test-psycopg2: deps
	swift build $(SWIFT_FLAGS)
	PGCHORUS_BIN=.build/debug PSYCOPG2_SUITE_OUT=/tmp/pgchorus-psycopg2-suite.md bench/psycopg2-suite.sh

# Only the package's tests (builds the .deb first).
test-deb: deps deb-deps
	Packaging/test-deb.sh

# .build/deb/pgchorus_<version>_<arch>.deb: see Packaging/README.md.
deb: deps deb-deps
	Packaging/build-deb.sh

# The protocol decoders under libFuzzer (Fuzz/, docs/security.md): the kept regression inputs, then
# FUZZ_RUNS new inputs per target (at most FUZZ_SECONDS each) from the captured-traffic corpus.
FUZZ_RUNS ?= 1000000
FUZZ_SECONDS ?= 600
fuzz: deps
	swift build -c release --package-path Fuzz --scratch-path .build/fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
	FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_SECONDS=$(FUZZ_SECONDS) Fuzz/run.sh

# Release builds of the two executables (the package ships pgchorus alone, also pgchorusd by the
# name it is started with; the benchmarks run .build/release/pgchorusd): Swift runtime linked
# statically, full RELRO, and no run-time exclusivity checks in any module, SwiftNIO's included
# (a sixth of pgchorusd's instructions per TPC-B transaction: BENCHMARKS.md; debug builds, which the
# tests run, keep them). Packaging/build-deb.sh builds with the same flags. By product: the test
# support targets need the test toolchain. `make release-product PRODUCT=relay-floor`: one more
# product with the same flags (bench/relay-floor.sh).
RELEASE_FLAGS = -c release --static-swift-stdlib -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now -Xswiftc -enforce-exclusivity=unchecked
release: deps
	swift build $(RELEASE_FLAGS) --product pgchorus
	swift build $(RELEASE_FLAGS) --product pgchorusd

release-product:
	swift build $(RELEASE_FLAGS) --product $(PRODUCT)

clean:
	rm -rf .build
