# goinit: make build | test | demo | bench | lint
GO      ?= go
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# asyncpreemptoff=1 as the binary's default GODEBUG: the Go runtime then never
# sends itself SIGURG, so goinit can forward SIGURG (signals.PreemptOffLDFlags).
LDFLAGS := -s -w -X main.version=$(VERSION) -X=runtime.godebugDefault=asyncpreemptoff=1 -X=main.godebugDefault=asyncpreemptoff=1
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck

.PHONY: build test lint deps demo demo-agent bench bench-quick clean

## build: the static goinit binary in bin/goinit
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/goinit ./init
	@! command -v file >/dev/null || file bin/goinit | grep -q 'statically linked' || { echo 'bin/goinit is not static' >&2; exit 1; }

## deps: install what the tests need (Debian packages, pm2, staticcheck); idempotent
deps:
	bash scripts/install-deps.sh

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2

## lint: gofmt, go vet and staticcheck must be clean
lint: $(STATICCHECK)
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo 'gofmt: files above are not formatted' >&2; exit 1; }
	$(GO) vet ./...
	$(STATICCHECK) ./...
	cd deploy && $(GO) vet ./... && $(STATICCHECK) ./...

## test: every test, as root on a real kernel (PID namespaces, runc, cgroup v1, a cgroup v2 VM);
## the bench harness's tiny run comes last, alone, so its load does not skew timing tests
test: deps lint
	$(GO) test -count=1 -timeout 25m $$($(GO) list ./... | grep -v /bench)
	cd deploy && $(GO) test -count=1 ./...
	$(GO) test -count=1 -timeout 10m ./bench/...

## demo: goinit as PID 1 of a new PID namespace running 2 workers of the example server
demo: build
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/goserver ./examples/goserver
	bash examples/demo.sh bin/goinit bin/goserver

## demo-agent: goinit as PID 1 with the Node agent beside 2 workers; the agent broadcasts a config version they serve
demo-agent: build
	bash examples/agent/demo.sh bin/goinit

## bench: goinit side by side with tini, dumb-init, Node cluster and pm2 (BENCH_QUICK=1 for a 1.5-minute run)
bench:
	bash bench/install-peers.sh
	$(GO) run ./bench/cmd/goinit-bench

clean:
	rm -rf bin
