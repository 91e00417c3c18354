# vmtui: build, test, benchmark, fuzz. Run "make help" for the targets.

GO       ?= go
FUZZTIME ?= 15s

.PHONY: all build test fmt-check vet bench fuzz clean help

all: build

## build: build ./vmtui
build:
	$(GO) build -o vmtui .

## test: gofmt check, go vet, and every test with the race detector (fuzz seeds included)
test: fmt-check vet
	$(GO) test -race ./...

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

help:
	@grep -h '^## ' $(MAKEFILE_LIST) | sed 's/^## /make /'
