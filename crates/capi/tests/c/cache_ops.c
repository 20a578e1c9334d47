/* Test helper: the writeback cache around image operations, through the
 * C API as QEMU and libvirt use it. Writes are acknowledged from memory
 * (never flushed by the caller, max_dirty_age one hour), then:
 * a snapshot holds them, a second handle sees them after the first handle
 * wrote them back, discard/resize/rollback/invalidate give librbd's
 * answers. Prints "OK" and exits 0, or names the failed check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#define CHECK(cond, what)                                   \
  do {                                                      \
    if (!(cond)) {                                          \
      fprintf(stderr, "cache_ops: %s failed\n", what);      \
      return 1;                                             \
    }                                                       \
  } while (0)

static int all(const char *buf, size_t n, char v) {
  for (size_t i = 0; i < n; i++)
    if (buf[i] != v) return 0;
  return 1;
}

int main(void) {
  rados_t c;
  rados_ioctx_t io;
  rbd_image_t img, snap, other;
  char buf[8192], rd[8192];
  int order = 22;
  CHECK(rados_create(&c, NULL) == 0, "rados_create");
  CHECK(rados_conf_read_file(c, NULL) == 0, "conf_read_file");
  CHECK(rados_conf_set(c, "rbd_cache", "true") == 0, "conf_set rbd_cache");
  CHECK(rados_conf_set(c, "rbd_cache_policy", "writeback") == 0, "conf_set policy");
  CHECK(rados_conf_set(c, "rbd_cache_writethrough_until_flush", "false") == 0, "conf_set wtuf");
  CHECK(rados_conf_set(c, "rbd_cache_max_dirty_age", "3600") == 0, "conf_set age");
  CHECK(rados_connect(c) == 0, "connect");
  CHECK(rados_ioctx_create(c, "data", &io) == 0, "ioctx");
  CHECK(rbd_create(io, "cops", 64 << 20, &order) == 0, "create");
  CHECK(rbd_open(io, "cops", &img, NULL) == 0, "open");

  /* Acknowledged from memory, then a snapshot: it must hold the write. */
  memset(buf, 0xa1, sizeof buf);
  CHECK(rbd_write(img, 1000001, sizeof buf, buf) == sizeof buf, "write A");
  CHECK(rbd_snap_create(img, "s1") == 0, "snap_create");
  memset(buf, 0xb2, sizeof buf);
  CHECK(rbd_write(img, 1000001, sizeof buf, buf) == sizeof buf, "write B");
  CHECK(rbd_open(io, "cops", &snap, "s1") == 0, "open snapshot");
  CHECK(rbd_read(snap, 1000001, sizeof rd, rd) == sizeof rd, "read snapshot");
  CHECK(all(rd, sizeof rd, (char)0xa1), "snapshot holds the write acknowledged before it");
  CHECK(rbd_close(snap) == 0, "close snapshot");
  CHECK(rbd_read(img, 1000001, sizeof rd, rd) == sizeof rd, "read head");
  CHECK(all(rd, sizeof rd, (char)0xb2), "head reads its newest write");

  /* Another handle sees B once this handle wrote it back. */
  CHECK(rbd_flush(img) == 0, "flush");
  CHECK(rbd_open(io, "cops", &other, NULL) == 0, "open second handle");
  CHECK(rbd_read(other, 1000001, sizeof rd, rd) == sizeof rd, "read second handle");
  CHECK(all(rd, sizeof rd, (char)0xb2), "flushed write visible to another handle");

  /* The other handle writes; the first sees it after rbd_invalidate_cache
   * (its cached clean copy is dropped). */
  memset(buf, 0xc3, sizeof buf);
  CHECK(rbd_write(other, 1000001, sizeof buf, buf) == sizeof buf, "write C (other)");
  CHECK(rbd_flush(other) == 0, "flush other");
  CHECK(rbd_close(other) == 0, "close other");
  CHECK(rbd_invalidate_cache(img) == 0, "invalidate_cache");
  CHECK(rbd_read(img, 1000001, sizeof rd, rd) == sizeof rd, "read after invalidate");
  CHECK(all(rd, sizeof rd, (char)0xc3), "invalidate drops stale clean data");

  /* Discard of dirty data: zeros (the range is 64 KiB-granule aligned). */
  memset(buf, 0xd4, sizeof buf);
  CHECK(rbd_write(img, 65536, sizeof buf, buf) == sizeof buf, "write D");
  CHECK(rbd_discard(img, 65536, 65536) == 65536, "discard");
  CHECK(rbd_read(img, 65536, sizeof rd, rd) == sizeof rd, "read after discard");
  CHECK(all(rd, sizeof rd, 0), "discarded dirty data reads as zeros");

  /* Shrink then grow: cached bytes past the end are gone. */
  memset(buf, 0xe5, sizeof buf);
  CHECK(rbd_write(img, (60 << 20) + 3, sizeof buf, buf) == sizeof buf, "write E");
  CHECK(rbd_resize(img, 32 << 20) == 0, "shrink");
  CHECK(rbd_resize(img, 64 << 20) == 0, "grow");
  CHECK(rbd_read(img, (60 << 20) + 3, sizeof rd, rd) == sizeof rd, "read after grow");
  CHECK(all(rd, sizeof rd, 0), "bytes past a shrink read as zeros");

  /* Rollback: the cache must not keep the head's newer bytes. */
  CHECK(rbd_snap_rollback(img, "s1") == 0, "rollback");
  CHECK(rbd_read(img, 1000001, sizeof rd, rd) == sizeof rd, "read after rollback");
  CHECK(all(rd, sizeof rd, (char)0xa1), "rollback returns the snapshot's bytes");

  /* Close writes back: a new handle sees the last acknowledged write. */
  memset(buf, 0xf6, sizeof buf);
  CHECK(rbd_write(img, 7, sizeof buf, buf) == sizeof buf, "write F");
  CHECK(rbd_close(img) == 0, "close");
  CHECK(rbd_open(io, "cops", &img, NULL) == 0, "reopen");
  CHECK(rbd_read(img, 7, sizeof rd, rd) == sizeof rd, "read after reopen");
  CHECK(all(rd, sizeof rd, (char)0xf6), "close wrote back dirty data");
  CHECK(rbd_close(img) == 0, "close again");
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  printf("OK\n");
  return 0;
}
