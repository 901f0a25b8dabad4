#!/usr/bin/env bash
# Installs cio from a build directory into a temporary prefix, moves the whole
# prefix elsewhere (cio.pc must be relocatable), then builds and runs a small
# program against the moved copy with pkg-config, shared and static. When
# cio-pg was built (cio-pg.pc installed), a program that uses it is built and
# run the same way (it needs no server: it checks that a connection to a port
# nothing listens on fails cleanly).
#
#   scripts/check_install.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: check_install.sh BUILD_DIR}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/first" >/dev/null
mv "$tmp/first" "$tmp/moved"
pc=$(dirname "$(find "$tmp/moved" -name cio.pc | head -1)")
cat >"$tmp/prog.c" <<'C'
#include <cio.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static int main_task(void *arg, void **result)
{
    (void)arg; (void)result;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
        return -1;
    char buf[3] = {0};
    int rc = cio_sock_sendall(sv[0], "ok", 2, 0, NULL);
    if (rc == 0 && cio_sock_recv(sv[1], buf, 2, 0) == 2 && cio_sleep(0.001) == 0)
        printf("%s on %s\n", buf, cio_loop_backend(cio_get_running_loop()));
    cio_close(sv[0]);
    cio_close(sv[1]);
    return strcmp(buf, "ok") ? -1 : 0;
}

int main(void) { return cio_run(main_task, NULL) == 0 ? 0 : 1; }
C
export PKG_CONFIG_PATH="$pc"
# The prefix is found from the .pc file's own place, not the configure-time one.
grep -q "$tmp/moved" <(pkg-config --variable=libdir cio) || {
  echo "install: cio.pc does not follow its prefix: $(pkg-config --variable=libdir cio)"; exit 1; }
# shellcheck disable=SC2046
cc -o "$tmp/prog" "$tmp/prog.c" $(pkg-config --cflags --libs cio) -Wl,-rpath,"$(pkg-config --variable=libdir cio)"
# shellcheck disable=SC2046
cc -o "$tmp/prog_static" "$tmp/prog.c" $(pkg-config --cflags cio) \
   "$(pkg-config --variable=libdir cio)/libcio.a" $(pkg-config --libs-only-l --static cio | sed 's/-lcio//')
for b in epoll uring; do
  CIO_BACKEND=$b "$tmp/prog" >/dev/null
  CIO_BACKEND=$b "$tmp/prog_static" >/dev/null
done
echo "install: relocated prefix, pkg-config build (shared and static) ran on both backends"

[ -f "$pc/cio-pg.pc" ] || exit 0
# cio-pg: its own header, library and pkg-config name; only cio.h and
# cio-pg.h are installed, and cio-pg.pc follows the prefix too.
[ "$(pkg-config --variable=libdir cio-pg)" = "$(pkg-config --variable=libdir cio)" ] || {
  echo "install: cio-pg.pc does not follow its prefix: $(pkg-config --variable=libdir cio-pg)"; exit 1; }
cat >"$tmp/prog_pg.c" <<'C'
#include <cio-pg.h>
#include <errno.h>
#include <stdio.h>

static int main_task(void *arg, void **result)
{
    (void)arg; (void)result;
    cio_pg_t *c = (cio_pg_t *)&c;
    /* Nothing listens on port 1 of the loopback: the connection is refused. */
    int rc = cio_pg_connect(&c, "host=127.0.0.1 port=1 dbname=cio", 10.0);
    if (rc >= 0 || c != NULL) {
        fprintf(stderr, "cio-pg: connect to a closed port returned %d\n", rc);
        cio_pg_close(c);
        return -1;
    }
    printf("cio-pg: %s (%s)\n", cio_strerror(rc), cio_pg_connect_error());
    return rc == -ECONNREFUSED ? 0 : -1;
}

int main(void) { return cio_run(main_task, NULL) == 0 ? 0 : 1; }
C
# shellcheck disable=SC2046
cc -o "$tmp/prog_pg" "$tmp/prog_pg.c" $(pkg-config --cflags --libs cio-pg) \
   -Wl,-rpath,"$(pkg-config --variable=libdir cio-pg)"
# Static cio and cio-pg; libpq stays shared (Debian ships no static
# libpgcommon/libpgport, which a static libpq needs).
# shellcheck disable=SC2046
cc -o "$tmp/prog_pg_static" "$tmp/prog_pg.c" $(pkg-config --cflags cio-pg) \
   "$(pkg-config --variable=libdir cio)/libcio-pg.a" "$(pkg-config --variable=libdir cio)/libcio.a" \
   $(pkg-config --libs-only-l --static cio | sed 's/-lcio//') $(pkg-config --libs libpq)
for b in epoll uring; do
  CIO_BACKEND=$b "$tmp/prog_pg" >/dev/null
  CIO_BACKEND=$b "$tmp/prog_pg_static" >/dev/null
done
echo "install: cio-pg built with pkg-config (shared and static) against the moved prefix, ran on both backends"
