# pgchorus — the two set-up commands of the README: `make demo` and `make test`.
SHELL := /bin/bash
export PATH := /opt/swift/usr/bin:$(PATH)

# What a fresh Debian 12 lacks to build, demo and test pgchorus (installed only when missing).
APT_PACKAGES := postgresql postgresql-client postgresql-contrib libpq-dev libmnl-dev libpcap-dev \
	pkg-config openssl python3-psycopg2 iproute2 libsqlite3-dev tcpdump bind9-utils bind9-dnsutils dnsmasq-base

SWIFT_FLAGS ?=
DEMO_ARGS ?=

.PHONY: all deps build demo test release clean

all: build

deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	swift build $(SWIFT_FLAGS)

# A local demo cluster: real PostgreSQL backends, pgchorusd in front, ready for psql.
demo: build
	.build/debug/pgchorus demo $(DEMO_ARGS)

# The whole test suite against real PostgreSQL servers.
test: deps
	swift build --build-tests $(SWIFT_FLAGS)
	swift test --skip-build $(SWIFT_FLAGS)

release: deps
	swift build -c release --static-swift-stdlib

clean:
	rm -rf .build
