"""The aarch64 lane: ExecuTorch artifacts run on ARM's kernels under qemu-user, on an x86 host."""
