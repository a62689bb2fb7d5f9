# Holden v0.2's commands, on the Rust implementation, plus the container image.
#   make all     release build; bin/agent (the agent) and bin/pidfd_monitor
#   make static  a static holden-agent (crt-static on the gnu target, optimised for size):
#                bin/holden-agent-static
#   make image   make static, then the image holden-agent (FROM scratch) with podman, else docker
#   make clean   removes bin/ and cargo's build output
CARGO ?= cargo
TARGET ?= $(shell uname -m)-unknown-linux-gnu
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= holden-agent

.PHONY: all static image clean
all:
	$(CARGO) build --release --bin holden-agent --bin pidfd_monitor --bin holden
	mkdir -p bin
	cp target/release/holden-agent bin/agent
	cp target/release/pidfd_monitor bin/pidfd_monitor

# With --target, RUSTFLAGS reach only the target's code, not build scripts.
static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile static -p holden-agent --target $(TARGET)
	mkdir -p bin
	cp target/$(TARGET)/static/holden-agent bin/holden-agent-static
	@file bin/holden-agent-static 2>/dev/null || true
	@ls -l bin/holden-agent-static

image: static
	$(ENGINE) build -t $(IMAGE) -f Containerfile .

clean:
	rm -rf bin
	$(CARGO) clean

# The tests on Debian's 6.1, 6.12 and 6.12-rt kernels in a qemu guest (README "VM tests"):
#   make vm-test KERNEL=6.12 [GUEST=podman] [BENCH=cgroup] [TEST=substring] [VM_SCRIPT=/abs/script.sh] [VM_SHELL=1]
KERNEL ?= 6.12
.PHONY: vm-test
vm-test:
	KERNEL="$(KERNEL)" GUEST="$(GUEST)" BENCH="$(BENCH)" TEST="$(TEST)" VM_SCRIPT="$(VM_SCRIPT)" VM_SHELL="$(VM_SHELL)" CARGO="$(CARGO)" bash vm/vm-test
