# Thin wrapper over meson and the scripts in scripts/: the two commands that
# matter are `make run` and `make test` (see README.md).
BUILD      ?= build
CONFIG     ?= etc/postern.yaml
FUZZ_SECS  ?= 300

.PHONY: all deps build run test fuzz bench format format-check clean

all: build

deps:
	@scripts/deps.sh

build:
	@scripts/build.sh $(BUILD)

run: deps build
	./$(BUILD)/posternd -c $(CONFIG) -v

test:
	@scripts/deps.sh
	@/usr/bin/python3 tests/run_all.py

fuzz: deps
	@scripts/fuzz.sh $(FUZZ_SECS)

bench:
	@scripts/deps.sh
	@/usr/bin/python3 bench/run.py

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	@clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-asan build-fuzz
