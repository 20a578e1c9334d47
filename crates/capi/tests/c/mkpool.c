/* Test helper: create pools through Quarry's librados. Usage: mkpool POOL... */
#include <stdio.h>
#include <rados/librados.h>

int main(int argc, char **argv) {
  rados_t c;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  if (r == 0) r = rados_connect(c);
  if (r != 0) {
    fprintf(stderr, "mkpool: connect: %d\n", r);
    return 1;
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
