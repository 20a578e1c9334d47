/* Test helper: create pools (mkpool POOL...) or a namespace
 * (mkpool --ns POOL NS) through Quarry's librados/librbd. */
#include <stdio.h>
#include <string.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

int main(int argc, char **argv) {
  rados_t c;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  if (r == 0) r = rados_connect(c);
  if (r != 0) {
    fprintf(stderr, "mkpool: connect: %d\n", r);
    return 1;
  }
  if (argc == 4 && strcmp(argv[1], "--ns") == 0) {
    rados_ioctx_t io;
    r = rados_ioctx_create(c, argv[2], &io);
    if (r == 0) r = rbd_namespace_create(io, argv[3]);
    if (r != 0) {
      fprintf(stderr, "mkpool: namespace %s/%s: %d\n", argv[2], argv[3], r);
      return 1;
    }
    rados_ioctx_destroy(io);
    rados_shutdown(c);
    return 0;
  }
  for (int i = 1; i < argc; i++) {
    r = rados_pool_create(c, argv[i]);
    if (r != 0 && r != -17) {
      fprintf(stderr, "mkpool: %s: %d\n", argv[i], r);
      return 1;
    }
  }
  rados_shutdown(c);
  return 0;
}
