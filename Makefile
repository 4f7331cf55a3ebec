# elvisor: `make demo` boots the demo, `make test` runs every test (in the lab where needed).
# Both install what they need first (Debian packages through apt, Python packages into .venv).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: all setup host-packages demo test fuzz lint format clean guests

all: test

host-packages:
	@tools/setup-host

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

setup: host-packages $(VENV)/.installed

demo: setup
	@tools/demo

test: setup guests
	@tools/run-tests

# The property-based tests of the virtio models, with over 100 000 hostile guests.
fuzz: setup
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/unit/test_virtio_fuzz.py -q \
		--hypothesis-show-statistics

lint: setup
	$(BIN)/ruff check src tests tools benchmarks
	$(BIN)/ruff format --check src tests tools benchmarks
	$(BIN)/mypy

format: setup
	$(BIN)/ruff format src tests tools benchmarks
	$(BIN)/ruff check --fix src tests tools benchmarks

clean:
	rm -rf build $(VENV) .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -prune -exec rm -rf {} +

# Test guests: tiny AArch64 programs (tests/guests/*.S), as ELF files and raw binaries loaded
# at GUEST_LOAD_ADDR. Built on the host (the lab has no cross tools), used inside the lab.
CROSS := aarch64-linux-gnu-
GUEST_LOAD_ADDR := 0x40080000
GUEST_SOURCES := $(wildcard tests/guests/*.S)
GUEST_ELFS := $(GUEST_SOURCES:tests/guests/%.S=build/guests/%.elf)
GUEST_BINS := $(GUEST_ELFS:.elf=.bin)

# Programs for the default Linux guest (tests/guests/linux/*.c): static, without a C library.
GUEST_PROGRAMS := $(patsubst tests/guests/linux/%.c,build/guests/linux/%,$(wildcard tests/guests/linux/*.c))

guests: host-packages $(GUEST_ELFS) $(GUEST_BINS) $(GUEST_PROGRAMS)

build/guests/linux/%: tests/guests/linux/%.c
	@mkdir -p $(@D)
	$(CROSS)gcc -Wall -Wextra -Werror -Os -static -nostdlib -ffreestanding -fno-stack-protector \
		-o $@ $<

build/guests/%.elf: tests/guests/%.S tests/guests/common.inc
	@mkdir -p $(@D)
	$(CROSS)as -I tests/guests -o build/guests/$*.o $<
	$(CROSS)ld -Ttext=$(GUEST_LOAD_ADDR) -o $@ build/guests/$*.o

build/guests/%.bin: build/guests/%.elf
	$(CROSS)objcopy -O binary $< $@
