# Holden v0.2's commands, on the Rust implementation.
#   make all    release build; bin/agent (the agent) and bin/pidfd_monitor
#   make clean  removes bin/ and cargo's build output
CARGO ?= cargo

.PHONY: all clean
all:
	$(CARGO) build --release --bin holden-agent --bin pidfd_monitor --bin holden
	mkdir -p bin
	cp target/release/holden-agent bin/agent
	cp target/release/pidfd_monitor bin/pidfd_monitor

clean:
	rm -rf bin
	$(CARGO) clean
