# The two commands of the README: `make demo` and `make test`.
GO ?= go

.PHONY: test demo build lint fuzz

# relaunch static (see the README's Install); the demo as any app is built.
build:
	CGO_ENABLED=0 $(GO) build -o bin/relaunch .
	$(GO) build -o bin/demo ./testdata/demo

# Everything CI runs: formatting, vet, the darwin build, the whole suite with
# the race detector (end-to-end tests included), and a short fuzz run. The
# fuzz budget is a count (~15 s here), not a duration: Go 1.26's fuzzing
# coordinator can fail a duration run at its end with a bare "context
# deadline exceeded" and no crasher (golang/go#75804, fixed in Go 1.27).
test: lint
	$(GO) test -race -count=1 -timeout 15m ./...
	$(GO) test -run '^$$' -fuzz FuzzParseAddr -fuzztime 500000x ./sdlisten

lint:
	@out=$$(gofmt -l .); test -z "$$out" || { echo "gofmt: these need formatting: $$out"; exit 1; }
	$(GO) vet ./...
	GOOS=darwin $(GO) build ./...

# Runs the demo app under relaunch on 127.0.0.1:8080. In another terminal:
#   curl localhost:8080             # version=1 pid=… gen=1
#   kill -USR2 $$(cat bin/relaunch.pid)  # upgrade: gen=2 answers, nothing refused
demo: build
	bin/relaunch --listen 127.0.0.1:8080 --pidfile bin/relaunch.pid -- bin/demo -init-delay 300ms

# The handover benchmark (~8 minutes, on the machine at hand): relaunch's
# upgrades against a naive stop-then-start restart of the same app under the
# same load; writes bench/results.md (also printed) and bench/latency.png,
# which docs/performance.md quotes. `make bench BENCHFLAGS=-quick` is a smoke test.
# Then --workers (workers_bench_test.go): a CPU-bound handler with 1 worker
# against auto, and relaunch's CPU per upgrade by listeners and workers
# (-benchtime 20x for steadier figures).
# Not part of `make test`.
.PHONY: bench
bench:
	$(GO) run ./internal/bench -out bench $(BENCHFLAGS)
	$(GO) test -run '^$$' -bench 'WorkersThroughput|UpgradeCPU' -benchtime 1x -count 1 .
