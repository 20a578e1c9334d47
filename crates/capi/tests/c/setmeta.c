/* Test helper: set image metadata through Quarry's librbd.
 * Usage: setmeta POOL IMAGE KEY VALUE */
#include <stdio.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

int main(int argc, char **argv) {
  if (argc != 5) return 2;
  rados_t c;
  rados_ioctx_t io;
  rbd_image_t img;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  if (r == 0) r = rados_connect(c);
  if (r == 0) r = rados_ioctx_create(c, argv[1], &io);
  if (r == 0) r = rbd_open(io, argv[2], &img, NULL);
  if (r == 0) r = rbd_metadata_set(img, argv[3], argv[4]);
  if (r != 0) {
    fprintf(stderr, "setmeta: %d\n", r);
    return 1;
  }
  rbd_close(img);
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  return 0;
}
