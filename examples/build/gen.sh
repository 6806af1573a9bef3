#!/bin/sh
# Generates the sources of a small C program into $1: four modules and a main.
# Set SLOW=1 to make every step of the build take a few seconds (to try Ctrl+C).
set -eu
out=${1:-out}
mkdir -p "$out"
[ "${SLOW:-0}" = 1 ] && sleep 2
for n in 1 2 3 4; do
  cat > "$out/mod$n.c.tmp" <<C
int mod$n(int x) {
    int acc = 0;
    for (int i = 0; i <= x; i++) acc += i * $n;
    return acc;
}
C
  mv "$out/mod$n.c.tmp" "$out/mod$n.c"
done
cat > "$out/main.c" <<'C'
#include <stdio.h>
int mod1(int), mod2(int), mod3(int), mod4(int);
int main(void) {
    int total = mod1(10) + mod2(10) + mod3(10) + mod4(10);
    printf("built by tom-ledger: total = %d\n", total);
    return total == 550 ? 0 : 1;
}
C
