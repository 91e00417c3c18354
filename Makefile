# vmtui: build, test, benchmark, fuzz. Run "make help" for the targets.

GO       ?= go
# Each fuzz target runs for FUZZTIME; a new interesting input is minimized
# for at most FUZZMINIMIZETIME (Go's default, 60s per input, leaves the
# targets barely fuzzing: FuzzOpen ran 24 inputs in 3 minutes).
FUZZTIME ?= 1m
FUZZMINIMIZETIME ?= 10x

.PHONY: all build test fmt-check vet lint guest demo bench fuzz clean clean-guest help

all: build

## build: build ./vmtui
build:
	$(GO) build -o vmtui .

## test: gofmt check, go vet, staticcheck, the test guest, and every test with the race detector (fuzz seeds included)
# Guests run under TCG: KVM guests hang on the machines this is tested on.
# -count=1: the tests use QEMU, guests and files go test cannot see, so a
# cached result would say nothing about this run.
test: fmt-check vet lint guest
	VMTUI_ACCEL=tcg $(GO) test -race -count=1 -timeout 30m ./...

## demo: build vmtui and the test guest, define a VM named demo (not started) if none exists, open the TUI
demo: build guest
	bash guest/demo.sh

## guest: build the test guest (a Debian cloud kernel and a busybox initramfs) into .cache/guest
guest:
	bash guest/build.sh

fmt-check:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed on:"; echo "$$unformatted"; exit 1; fi
	@echo "gofmt: ok"

vet:
	$(GO) vet ./...

# staticcheck, fetched through the module proxy at a fixed version (nothing to install by hand).
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
lint:
	$(GO) run $(STATICCHECK) ./...

## bench: run every benchmark script in bench/ (not tests: they print timings)
bench: build
	@set -e; for script in bench/*.sh; do echo "== $$script"; bash "$$script"; done

## fuzz: run each fuzz target for FUZZTIME (default 1m), minimizing new inputs at most FUZZMINIMIZETIME (10x)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) "$$pkg"; \
		done; \
	done

clean:
	rm -f vmtui
	rm -rf bench/out

## clean-guest: remove the cached test guest (built again by the next make guest)
clean-guest:
	rm -rf .cache/guest

help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## /make /'
