#!/usr/bin/env bash
# Builds libcrucible_cpu.so (the CPU backend's optional native kernels) into the directory given as $1, from the
# Maven build (cpu/pom.xml, generate-resources). Without a C compiler, or on a CPU architecture the kernels are not
# written for, it builds nothing and says so: the backend then keeps its Java kernels (see docs/serving.md).
set -euo pipefail
out="$1"
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/crucible_cpu.c"
cc="${CC:-cc}"
case "$(uname -m)" in
  x86_64|amd64) ;;
  *) echo "crucible native kernels: not built (written for x86-64, this is $(uname -m)); Java kernels only"; exit 0 ;;
esac
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "crucible native kernels: not built (no C compiler '$cc'; Debian: apt-get install gcc); Java kernels only"
  exit 0
fi
mkdir -p "$out"
# -ffp-contract=off: the kernels' f32 steps are exactly the ones written (no fused multiply-adds the contract in
# crucible_cpu.c does not name); no -ffast-math for the same reason.
# A compiler error is a bug in crucible_cpu.c, so it fails the build.
"$cc" -std=gnu11 -O3 -fPIC -shared -ffp-contract=off -fno-strict-aliasing -Wall -Werror \
  -o "$out/libcrucible_cpu.so.tmp" "$src"
mv -f "$out/libcrucible_cpu.so.tmp" "$out/libcrucible_cpu.so"
