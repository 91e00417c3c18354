# vmtui: build, test, benchmark, fuzz. Run "make help" for the targets.

GO       ?= go
FUZZTIME ?= 15s

.PHONY: all build test fmt-check vet guest demo bench fuzz clean clean-guest help

all: build

## build: build ./vmtui
build:
	$(GO) build -o vmtui .

## test: gofmt check, go vet, the test guest, and every test with the race detector (fuzz seeds included)
# Guests run under TCG: KVM guests hang on the machines this is tested on.
test: fmt-check vet guest
	VMTUI_ACCEL=tcg $(GO) test -race -timeout 30m ./...

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

## bench: run every benchmark script in bench/ (not tests: they print timings)
bench: build
	@set -e; for script in bench/*.sh; do echo "== $$script"; bash "$$script"; done

## fuzz: run each fuzz target for FUZZTIME (default 15s)
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for target in $$($(GO) test -list '^Fuzz' "$$pkg" | grep '^Fuzz' || true); do \
			echo "== $$pkg $$target ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
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
