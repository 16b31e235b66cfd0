#!/bin/sh
# Builds native/prebuilt/linux-x64/image.node from native/*.c: a Node-API addon with Debian's
# libjpeg-turbo (2.1.5, x86-64 SIMD) linked in statically, so that the file needs nothing but
# glibc and a Node with Node-API 8 (Node 12.22 or later). Needs gcc, Node's headers and the static
# library: apt-get install gcc libjpeg62-turbo-dev (the headers come with Node, in include/node).
# The result is committed: users get it with the package and never build it (npm ci, npm test).
set -eu
cd "$(dirname "$0")/.."
node_include=${NODE_INCLUDE:-$(dirname "$(dirname "$(command -v node)")")/include/node}
[ -f "$node_include/node_api.h" ] || node_include=/usr/include/node
libjpeg=${LIBJPEG_A:-/usr/lib/x86_64-linux-gnu/libjpeg.a}
jpeg_include=${JPEG_INCLUDE:-/usr/include}
out=${NATIVE_OUT:-native/prebuilt/linux-x64} # elsewhere: the test that checks the committed file
mkdir -p "$out"
# Only Node-API's entry points are exported: libjpeg's own symbols stay inside the file, so they
# can clash with no other copy of libjpeg in the process (sharp's libvips carries one).
# -ffp-contract=off: resize.c must round where the JavaScript it mirrors rounds (see there).
gcc -std=c11 -O2 -ffp-contract=off -fPIC -shared -fvisibility=hidden -Wall -Wextra -Werror \
  -DNAPI_VERSION=8 -I"$node_include" -I"$jpeg_include" -I"$jpeg_include/x86_64-linux-gnu" \
  native/jpeg.c native/resize.c "$libjpeg" -lm \
  -Wl,--exclude-libs,ALL -Wl,-z,noexecstack -Wl,--as-needed -static-libgcc -s \
  -o "$out/image.node"
echo "built $out/image.node ($(wc -c < "$out/image.node") bytes)"
