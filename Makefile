# Holden v0.2's commands, on the Rust implementation, plus the container image.
#   make all     release build; bin/agent (the agent) and bin/pidfd_monitor
#   make static  a static holden-agent (crt-static on the gnu target, optimised for size):
#                bin/holden-agent-static
#   make image   make static, then the image holden-agent (FROM scratch) with podman, else docker
#   make image-demo  the same plus a static busybox as /bin/sh and the usual tools: the image
#                holden-agent-demo, in which the README's examples run as written
#   make install the release binaries, the man page, shell completions (bash, zsh, fish), the
#                systemd units and the example configuration under
#                $(DESTDIR)$(PREFIX) (PREFIX=/usr/local by default; units in
#                $(PREFIX)/lib/systemd/system, their paths rewritten to $(PREFIX)/bin)
#   make clean   removes bin/ and cargo's build output
# Binaries are replaced by rename, never written over: an agent running from bin/agent or an
# installed path goes on running the old file, and the next start runs the new one.
CARGO ?= cargo
TARGET ?= $(shell uname -m)-unknown-linux-gnu
ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= holden-agent
IMAGE_DEMO ?= holden-agent-demo
BUSYBOX ?= /bin/busybox

.PHONY: all static image image-demo image-demo-root install clean
PREFIX ?= /usr/local
DESTDIR ?=
UNITDIR ?= $(PREFIX)/lib/systemd/system
# place SRC DST: copy to a temporary name beside DST, then rename over it.
place = install -D -m 755 $(1) $(dir $(2)).$(notdir $(2)).new && mv -f $(dir $(2)).$(notdir $(2)).new $(2)

all:
	$(CARGO) build --release --bin holden-agent --bin pidfd_monitor --bin holden
	mkdir -p bin
	$(call place,target/release/holden-agent,bin/agent)
	$(call place,target/release/pidfd_monitor,bin/pidfd_monitor)

install:
	$(CARGO) build --release --bin holden-agent --bin holden
	$(call place,target/release/holden,$(DESTDIR)$(PREFIX)/bin/holden)
	$(call place,target/release/holden-agent,$(DESTDIR)$(PREFIX)/bin/holden-agent)
	for u in dist/systemd/*; do \
		install -D -m 644 $$u $(DESTDIR)$(UNITDIR)/$$(basename $$u) && \
		sed -i 's|/usr/bin/|$(PREFIX)/bin/|g' $(DESTDIR)$(UNITDIR)/$$(basename $$u) || exit 1; \
	done
	install -D -m 644 dist/holden.toml $(DESTDIR)$(PREFIX)/share/doc/holden/holden.toml.example
	mkdir -p $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	pages=$$(target/release/holden man --list) && [ -n "$$pages" ] && for p in $$pages; do \
		target/release/holden man $$p > $(DESTDIR)$(PREFIX)/share/man/man1/$$p.1 || exit 1; \
	done
	target/release/holden completions bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/holden
	target/release/holden completions zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_holden
	target/release/holden completions fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/holden.fish

# With --target, RUSTFLAGS reach only the target's code, not build scripts.
static:
	RUSTFLAGS="-C target-feature=+crt-static" $(CARGO) build --profile static -p holden-agent --target $(TARGET)
	mkdir -p bin
	$(call place,target/$(TARGET)/static/holden-agent,bin/holden-agent-static)
	@file bin/holden-agent-static 2>/dev/null || true
	@ls -l bin/holden-agent-static

image: static
	$(ENGINE) build -t $(IMAGE) -f Containerfile .

# The demo image's root: the static agent, busybox and a link to it for each of its applets.
image-demo-root: static
	@file -L $(BUSYBOX) 2>/dev/null | grep -q static || { echo "$(BUSYBOX) is not a static busybox: apt-get install busybox-static" >&2; exit 1; }
	rm -rf bin/image-demo
	mkdir -p bin/image-demo/bin bin/image-demo/usr/bin bin/image-demo/run/holden
	install -m 755 $(BUSYBOX) bin/image-demo/bin/busybox
	for a in $$($(BUSYBOX) --list); do [ "$$a" = busybox ] || ln -s busybox bin/image-demo/bin/$$a; done
	install -m 755 bin/holden-agent-static bin/image-demo/usr/bin/holden-agent

image-demo: image-demo-root
	$(ENGINE) build -t $(IMAGE_DEMO) -f Containerfile.demo bin/image-demo

clean:
	rm -rf bin
	$(CARGO) clean

# The tests on Debian's 6.1, 6.12 and 6.12-rt kernels in a qemu guest (README "VM tests"):
#   make vm-test KERNEL=6.12 [GUEST=podman] [BENCH=cgroup] [TEST=substring] [VM_SCRIPT=/abs/script.sh] [VM_SHELL=1]
KERNEL ?= 6.12
.PHONY: vm-test
vm-test:
	KERNEL="$(KERNEL)" GUEST="$(GUEST)" BENCH="$(BENCH)" TEST="$(TEST)" VM_SCRIPT="$(VM_SCRIPT)" VM_SHELL="$(VM_SHELL)" CARGO="$(CARGO)" bash vm/vm-test
