#!/bin/sh
# compile.sh SRC OBJ: one compiler step of the example build.
set -eu
[ "${SLOW:-0}" = 1 ] && sleep 3
exec cc -O2 -c "$1" -o "$2"
