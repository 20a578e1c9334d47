/* Test helper: one librbd client running a script of lock/I-O steps.
 * Usage: lockprobe POOL IMAGE STEP...
 * Steps (each prints one line "STEP rc=N" or a result):
 *   acquire | release | owner | owners | flush
 *   write:OFF:LEN:BYTE   rbd_write LEN bytes of BYTE at OFF
 *   read:OFF:LEN:BYTE    rbd_read and check every byte is BYTE ("ok"/"bad")
 *   touch:FILE           create FILE (a signal to the test)
 *   wait:FILE            wait until FILE exists (gives up after 120 s)
 *   break:OWNER          rbd_lock_break(EXCLUSIVE, OWNER)
 * Exit status 0 unless setup failed. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

static int wait_file(const char *f) {
  for (int i = 0; i < 12000; i++) {
    if (access(f, F_OK) == 0) return 0;
    usleep(10000);
  }
  return -ETIMEDOUT;
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  setvbuf(stdout, NULL, _IOLBF, 0);
  rados_t c;
  rados_ioctx_t io;
  rbd_image_t img;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  if (r == 0) r = rados_connect(c);
  if (r == 0) r = rados_ioctx_create(c, argv[1], &io);
  if (r == 0) r = rbd_open(io, argv[2], &img, NULL);
  if (r != 0) {
    fprintf(stderr, "lockprobe setup: %d\n", r);
    return 1;
  }
  for (int i = 3; i < argc; i++) {
    char *s = argv[i];
    unsigned long long off, len;
    unsigned int byte;
    if (strcmp(s, "acquire") == 0) {
      printf("acquire rc=%d\n", rbd_lock_acquire(img, RBD_LOCK_MODE_EXCLUSIVE));
    } else if (strcmp(s, "release") == 0) {
      printf("release rc=%d\n", rbd_lock_release(img));
    } else if (strcmp(s, "flush") == 0) {
      printf("flush rc=%d\n", rbd_flush(img));
    } else if (strcmp(s, "owner") == 0) {
      int o = -1;
      r = rbd_is_exclusive_lock_owner(img, &o);
      printf("owner rc=%d is_owner=%d\n", r, o);
    } else if (strcmp(s, "owners") == 0) {
      rbd_lock_mode_t mode;
      char *owners[4];
      size_t n = 4;
      r = rbd_lock_get_owners(img, &mode, owners, &n);
      printf("owners rc=%d", r);
      if (r == 0) {
        printf(" mode=%d", (int)mode);
        for (size_t k = 0; k < n; k++) printf(" %s", owners[k]);
        rbd_lock_get_owners_cleanup(owners, n);
      }
      printf("\n");
    } else if (sscanf(s, "write:%llu:%llu:%u", &off, &len, &byte) == 3) {
      char *b = malloc(len);
      memset(b, (int)byte, len);
      ssize_t w = rbd_write(img, off, len, b);
      free(b);
      printf("write rc=%zd\n", w < 0 ? w : (ssize_t)0);
    } else if (sscanf(s, "read:%llu:%llu:%u", &off, &len, &byte) == 3) {
      char *b = malloc(len);
      ssize_t n = rbd_read(img, off, len, b);
      int ok = n == (ssize_t)len;
      for (unsigned long long k = 0; ok && k < len; k++)
        if ((unsigned char)b[k] != byte) ok = 0;
      free(b);
      printf("read %s\n", ok ? "ok" : "bad");
    } else if (strncmp(s, "touch:", 6) == 0) {
      FILE *f = fopen(s + 6, "w");
      if (f) fclose(f);
      printf("touch rc=%d\n", f ? 0 : -errno);
    } else if (strncmp(s, "wait:", 5) == 0) {
      printf("wait rc=%d\n", wait_file(s + 5));
    } else if (strncmp(s, "break:", 6) == 0) {
      printf("break rc=%d\n", rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, s + 6));
    } else {
      fprintf(stderr, "unknown step %s\n", s);
      return 2;
    }
  }
  rbd_close(img);
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  return 0;
}
