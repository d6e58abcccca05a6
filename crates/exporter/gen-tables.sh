#!/bin/sh
# Regenerates src/tables.rs (syscall and errno names) from the kernel UAPI
# headers (Debian: linux-libc-dev). Run from crates/exporter.
set -eu
inc=${INCLUDE:-/usr/include}
{
echo "//! Generated from the kernel UAPI headers of linux-libc-dev"
echo "//! (\`asm/unistd_64.h\`, \`asm-generic/errno-base.h\`, \`asm-generic/errno.h\`)"
echo "//! by \`crates/exporter/gen-tables.sh\`. Do not edit."
echo
echo "/// x86_64 syscall numbers and names (\`__NR_<name>\`)."
echo "#[cfg(target_arch = \"x86_64\")]"
echo "pub static SYSCALLS: &[(u64, &str)] = &["
grep -E '^#define[[:space:]]+__NR_[a-z0-9_]+[[:space:]]+[0-9]+' "$inc/x86_64-linux-gnu/asm/unistd_64.h" \
  | awk '{sub("__NR_","",$2); printf "    (%s, \"%s\"),\n", $3, $2}'
echo "];"
echo
echo "/// Syscall numbers are per architecture; only x86_64 is tabled so far."
echo "#[cfg(not(target_arch = \"x86_64\"))]"
echo "pub static SYSCALLS: &[(u64, &str)] = &[];"
echo
echo "/// Linux errno values and their first name (aliases such as EWOULDBLOCK,"
echo "/// defined as another name, are left out)."
echo "pub static ERRNOS: &[(u64, &str)] = &["
cat "$inc/asm-generic/errno-base.h" "$inc/asm-generic/errno.h" \
  | grep -E '^#define[[:space:]]+E[A-Z0-9]+[[:space:]]+[0-9]+' \
  | awk '{printf "    (%s, \"%s\"),\n", $3, $2}'
echo "];"
} > src/tables.rs
