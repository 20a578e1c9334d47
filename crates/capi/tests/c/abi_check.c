/* Compiled at test time against Debian's real librbd/librados headers and
 * linked against Quarry's library (installed under both sonames). Checks
 * struct layouts and runs a create/write/read/snapshot/clone/aio/poll
 * sequence. Usage: abi_check POOL  (CEPH_CONF must name a Quarry config). */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

static int failures = 0;
#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);          \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, "\n");                                                   \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define EQ(a, b) CHECK((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

static pthread_t main_thread;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int callbacks = 0;
static int cb_on_caller = 0;
static ssize_t last_ret = 12345;

static void release_cb(rbd_completion_t c, void *arg) {
  (void)arg;
  pthread_mutex_lock(&mu);
  callbacks++;
  if (pthread_equal(pthread_self(), main_thread)) cb_on_caller++;
  last_ret = rbd_aio_get_return_value(c);
  if (!rbd_aio_is_complete(c)) cb_on_caller += 100;
  pthread_mutex_unlock(&mu);
  rbd_aio_release(c); /* QEMU releases inside the callback */
}

static int flag_cb(rbd_completion_t c, void *arg) { (void)c; *(int *)arg = 1; return 0; }
static void mark_cb(rbd_completion_t c, void *arg) { (void)c; *(volatile int *)arg = 1; }

struct diffs { int n; uint64_t last_end; int bad; };
static int diff_cb(uint64_t off, size_t len, int exists, void *arg) {
  struct diffs *d = arg;
  if (off < d->last_end) d->bad++;
  d->last_end = off + len;
  d->n++;
  (void)exists;
  return 0;
}
static int abort_cb(uint64_t off, size_t len, int exists, void *arg) {
  (void)off; (void)len; (void)exists; (void)arg;
  return -9000;
}

static void wait_callbacks(int n) {
  for (int i = 0; i < 5000; i++) {
    pthread_mutex_lock(&mu);
    int c = callbacks;
    pthread_mutex_unlock(&mu);
    if (c >= n) return;
    usleep(1000);
  }
}

int main(int argc, char **argv) {
  main_thread = pthread_self();
  const char *pool = argc > 1 ? argv[1] : "data";

  /* ---- layouts (x86_64 values of Ceph 16.2.15) ---- */
  EQ(sizeof(rbd_image_info_t), 160);
  EQ(offsetof(rbd_image_info_t, obj_size), 8);
  EQ(offsetof(rbd_image_info_t, num_objs), 16);
  EQ(offsetof(rbd_image_info_t, order), 24);
  EQ(offsetof(rbd_image_info_t, block_name_prefix), 28);
  EQ(offsetof(rbd_image_info_t, parent_pool), 56);
  EQ(offsetof(rbd_image_info_t, parent_name), 64);
  EQ(sizeof(rbd_snap_info_t), 24);
  EQ(offsetof(rbd_snap_info_t, name), 16);
  EQ(sizeof(rbd_image_spec_t), 16);
  EQ(sizeof(rbd_linked_image_spec_t), 48);
  EQ(offsetof(rbd_linked_image_spec_t, trash), 40);
  EQ(sizeof(rbd_snap_spec_t), 24);
  EQ(sizeof(rbd_group_info_t), 16);
  EQ(offsetof(rbd_group_info_t, pool), 8);
  EQ(sizeof(rbd_group_image_info_t), 24);
  EQ(offsetof(rbd_group_image_info_t, state), 16);
  EQ(sizeof(rbd_group_snap_info_t), 16);
  EQ(offsetof(rbd_group_snap_info_t, state), 8);
  EQ(sizeof(rbd_snap_group_namespace_t), 24);
  EQ(offsetof(rbd_snap_group_namespace_t, group_snap_name), 16);
  EQ(sizeof(struct rados_pool_stat_t), 16 * 8);
  EQ(sizeof(struct rados_cluster_stat_t), 32);

  int maj, min, ext;
  rbd_version(&maj, &min, &ext);
  EQ(maj, 1); EQ(min, 16);
  rados_version(&maj, &min, &ext);
  EQ(maj, 3);

  /* ---- connection and config ---- */
  rados_t cluster;
  EQ(rados_create(&cluster, NULL), 0);
  EQ(rados_conf_read_file(cluster, "/nonexistent/ceph.conf"), -ENOENT);
  EQ(rados_conf_read_file(cluster, NULL), 0);
  EQ(rados_conf_set(cluster, "no_such_option", "1"), -ENOENT);
  EQ(rados_conf_set(cluster, "rbd_cache", "maybe"), -EINVAL);
  EQ(rados_conf_set(cluster, "rbd-cache", "true"), -ENOENT);
  EQ(rados_conf_set(cluster, "rbd_cache_size", "32M"), 0);
  char buf[256];
  EQ(rados_conf_get(cluster, "rbd_cache_size", buf, sizeof buf), 0);
  CHECK(strcmp(buf, "33554432") == 0, "rbd_cache_size=%s", buf);
  EQ(rados_conf_get(cluster, "rbd_cache", buf, 2), -ENAMETOOLONG);
  EQ(rados_connect(cluster), 0);
  rados_ioctx_t io;
  EQ(rados_ioctx_create(cluster, "no_such_pool", &io), -ENOENT);
  EQ(rados_ioctx_create(cluster, pool, &io), 0);

  /* ---- raw objects ---- */
  EQ(rados_write(io, "obj1", "hello", 5, 0), 0);
  char rb[16] = {0};
  EQ(rados_read(io, "obj1", rb, sizeof rb, 0), 5);
  CHECK(memcmp(rb, "hello", 5) == 0, "object data");
  EQ(rados_remove(io, "obj1"), 0);
  EQ(rados_remove(io, "obj1"), -ENOENT);

  /* ---- rados aio: operations on one object keep submission order ---- */
  {
    enum { N = 200, SPAN = 1 << 18, MAXLEN = 8192 };
    static char model[SPAN + MAXLEN], got[SPAN + MAXLEN], bufs[N][MAXLEN];
    rados_completion_t cs[N];
    memset(model, 0, sizeof model);
    EQ(rados_write(io, "ordered", model, sizeof model, 0), 0);
    srand(7);
    for (int i = 0; i < N; i++) {
      int off = rand() % SPAN, len = 1 + rand() % MAXLEN;
      for (int k = 0; k < len; k++) bufs[i][k] = (char)(i * 13 + k + 1);
      memcpy(model + off, bufs[i], len);
      EQ(rados_aio_create_completion(NULL, NULL, NULL, &cs[i]), 0);
      EQ(rados_aio_write(io, "ordered", cs[i], bufs[i], len, off), 0);
    }
    for (int i = 0; i < N; i++) {
      EQ(rados_aio_wait_for_complete(cs[i]), 0);
      EQ(rados_aio_get_return_value(cs[i]), 0);
      rados_aio_release(cs[i]);
    }
    rados_completion_t rc;
    EQ(rados_aio_create_completion(NULL, NULL, NULL, &rc), 0);
    EQ(rados_aio_read(io, "ordered", rc, got, sizeof got, 0), 0);
    EQ(rados_aio_wait_for_complete(rc), 0);
    EQ(rados_aio_get_return_value(rc), sizeof got);
    rados_aio_release(rc);
    CHECK(memcmp(model, got, sizeof got) == 0, "rados aio writes applied in order");
    rados_write_op_t op = rados_create_write_op();
    rados_write_op_zero(op, 0, 4096);
    EQ(rados_aio_create_completion(NULL, NULL, NULL, &rc), 0);
    EQ(rados_aio_write_op_operate(op, io, rc, "ordered", NULL, 0), 0);
    EQ(rados_aio_wait_for_complete(rc), 0);
    EQ(rados_aio_get_return_value(rc), 0);
    rados_aio_release(rc);
    rados_release_write_op(op);
    EQ(rados_read(io, "ordered", got, 4096, 0), 4096);
    CHECK(got[0] == 0 && got[4095] == 0, "write_op_zero");
    EQ(rados_remove(io, "ordered"), 0);
  }

  /* ---- images ---- */
  int order = 0;
  rbd_remove(io, "abi1");
  EQ(rbd_create(io, "abi1", 16 << 20, &order), 0);
  EQ(order, 22);
  EQ(rbd_create(io, "abi1", 16 << 20, &order), -EEXIST);
  rbd_image_t img;
  EQ(rbd_open(io, "nosuch", &img, NULL), -ENOENT);
  EQ(rbd_open(io, "abi1", &img, NULL), 0);
  rbd_image_info_t info;
  memset(&info, 0x55, sizeof info);
  EQ(rbd_stat(img, &info, sizeof info), 0);
  EQ(info.size, 16 << 20);
  EQ(info.obj_size, 4 << 20);
  EQ(info.num_objs, 4);
  EQ(info.order, 22);
  EQ(info.parent_pool, -1);
  CHECK(strncmp(info.block_name_prefix, "rbd_data.", 9) == 0, "prefix %s", info.block_name_prefix);
  EQ(info.parent_name[0], 0);
  uint64_t u;
  EQ(rbd_get_size(img, &u), 0); EQ(u, 16 << 20);
  EQ(rbd_get_parent_info(img, NULL, 0, NULL, 0, NULL, 0), -ENOENT);

  char wbuf[8192], rbuf[8192];
  memset(wbuf, 0xab, sizeof wbuf);
  EQ(rbd_write(img, 4095, sizeof wbuf, wbuf), sizeof wbuf);
  EQ(rbd_read(img, 4095, sizeof rbuf, rbuf), sizeof rbuf);
  CHECK(memcmp(wbuf, rbuf, sizeof wbuf) == 0, "sync read-back");
  /* crossing the end is clipped, starting at the end is EINVAL */
  EQ(rbd_read(img, (16 << 20) - 100, sizeof rbuf, rbuf), 100);
  EQ(rbd_write(img, 16 << 20, 10, wbuf), -EINVAL);
  EQ(rbd_flush(img), 0);

  /* ---- aio: callback on our thread, released inside it ---- */
  rbd_completion_t c;
  memset(wbuf, 0xcd, sizeof wbuf);
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_write(img, 1 << 20, sizeof wbuf, wbuf, c), 0);
  wait_callbacks(1);
  EQ(callbacks, 1); EQ(last_ret, 0);
  struct iovec iov[2] = {{rbuf, 100}, {rbuf + 100, sizeof rbuf - 100}};
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_readv(img, iov, 2, 1 << 20, c), 0);
  wait_callbacks(2);
  EQ(last_ret, sizeof rbuf);
  CHECK(memcmp(wbuf, rbuf, sizeof wbuf) == 0, "aio readv data");
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_read(img, (16 << 20) - 10, 100, rbuf, c), 0);
  wait_callbacks(3);
  EQ(last_ret, 10);
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_flush(img, c), 0);
  wait_callbacks(4);
  EQ(last_ret, 0);
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_write_zeroes(img, 0, 4096, c, 0, 0), 0);
  wait_callbacks(5);
  EQ(last_ret, 0);
  EQ(rbd_aio_create_completion(NULL, release_cb, &c), 0);
  EQ(rbd_aio_write(img, 1ULL << 40, 10, wbuf, c), 0);
  wait_callbacks(6);
  EQ(last_ret, -EINVAL);
  EQ(cb_on_caller, 0);

  /* ---- wait_for_complete with a caller-released completion ---- */
  volatile int marked = 0;
  EQ(rbd_aio_create_completion((void *)&marked, mark_cb, &c), 0);
  EQ(rbd_aio_discard(img, 8 << 20, 4 << 20, c), 0);
  EQ(rbd_aio_wait_for_complete(c), 0);
  EQ(marked, 1);
  EQ(rbd_aio_is_complete(c), 1);
  EQ(rbd_aio_get_return_value(c), 0);
  rbd_aio_release(c);

  /* ---- poll mode (fio): eventfd + rbd_poll_io_events ---- */
  int efd = eventfd(0, EFD_SEMAPHORE);
  EQ(rbd_set_image_notification(img, efd, 7), -EINVAL);
  EQ(rbd_set_image_notification(img, efd, EVENT_TYPE_EVENTFD), 0);
  int done1 = 0;
  EQ(rbd_aio_create_completion(&done1, (rbd_callback_t)mark_cb, &c), 0);
  EQ(rbd_aio_write(img, 0, 4096, wbuf, c), 0);
  struct pollfd pfd = {efd, POLLIN, 0};
  EQ(poll(&pfd, 1, 5000), 1);
  rbd_completion_t got[4];
  EQ(rbd_poll_io_events(img, got, 4), 1);
  CHECK(got[0] == c, "polled completion is ours");
  EQ(rbd_aio_get_arg(got[0]), &done1);
  EQ(done1, 1);
  uint64_t v;
  EQ(read(efd, &v, 8), 8);
  rbd_aio_release(got[0]);
  EQ(rbd_poll_io_events(img, got, 4), 0);

  /* ---- write-around: overlapping aio writes keep submit order, reads
   * see acknowledged writes, flush covers them ---- */
  {
    enum { N = 300, SPAN = 1 << 20, MAXLEN = 32768 };
    static char model[SPAN + MAXLEN], got2[SPAN + MAXLEN], bufs[N][MAXLEN];
    rbd_image_t w;
    rbd_completion_t comps[N];
    /* Writes acknowledged early by one handle are visible to another
     * handle only after a flush (librbd: exclusive-lock hand-off flushes). */
    EQ(rbd_flush(img), 0);
    EQ(rbd_open(io, "abi1", &w, NULL), 0);
    EQ(rbd_flush(w), 0); /* leaves writethrough_until_flush mode */
    EQ(rbd_read(w, 0, sizeof model, model), sizeof model);
    srand(42);
    for (int i = 0; i < N; i++) {
      uint64_t off = (uint64_t)(rand() % 200) * 4096 + rand() % 4096;
      size_t len = 1 + rand() % MAXLEN;
      for (size_t k = 0; k < len; k++) bufs[i][k] = (char)(i * 7 + k);
      memcpy(model + off, bufs[i], len);
      EQ(rbd_aio_create_completion(NULL, NULL, &comps[i]), 0);
      EQ(rbd_aio_write(w, off, len, bufs[i], comps[i]), 0);
      if (i % 50 == 49) {
        /* a read in the middle sees everything submitted before it */
        EQ(rbd_read(w, 0, sizeof got2, got2), sizeof got2);
        CHECK(memcmp(model, got2, sizeof got2) == 0, "read-your-writes at %d", i);
        for (size_t q = 0; q < sizeof got2; q++)
          if (model[q] != got2[q]) {
            fprintf(stderr, "  first difference at %zu: expected %02x, got %02x\n", q,
                    (unsigned char)model[q], (unsigned char)got2[q]);
            break;
          }
      }
    }
    rbd_completion_t fc;
    EQ(rbd_aio_create_completion(NULL, NULL, &fc), 0);
    EQ(rbd_aio_flush(w, fc), 0);
    EQ(rbd_aio_wait_for_complete(fc), 0);
    EQ(rbd_aio_get_return_value(fc), 0);
    rbd_aio_release(fc);
    for (int i = 0; i < N; i++) {
      EQ(rbd_aio_is_complete(comps[i]), 1);
      EQ(rbd_aio_get_return_value(comps[i]), 0);
      rbd_aio_release(comps[i]);
    }
    EQ(rbd_close(w), 0);
    EQ(rbd_open(io, "abi1", &w, NULL), 0);
    EQ(rbd_read(w, 0, sizeof got2, got2), sizeof got2);
    CHECK(memcmp(model, got2, sizeof got2) == 0, "data after flush and reopen");
    EQ(rbd_close(w), 0);
    memset(wbuf, 0xcd, sizeof wbuf);
    EQ(rbd_write(img, 0, 4096, wbuf), 4096); /* restore for the snapshot checks */
  }

  /* ---- snapshots ---- */
  EQ(rbd_snap_create(img, "s1"), 0);
  EQ(rbd_snap_create(img, "s1"), -EEXIST);
  EQ(rbd_snap_create(img, "s2"), 0);
  rbd_snap_info_t snaps[8];
  int max = 1;
  EQ(rbd_snap_list(img, snaps, &max), -ERANGE);
  EQ(max, 3);
  EQ(rbd_snap_list(img, snaps, &max), 2);
  CHECK(strcmp(snaps[0].name, "s1") == 0 && strcmp(snaps[1].name, "s2") == 0, "snap names");
  CHECK(snaps[2].name == NULL, "sentinel");
  EQ(snaps[0].size, 16 << 20);
  rbd_snap_list_end(snaps);
  memset(wbuf, 0xef, 4096);
  EQ(rbd_write(img, 0, 4096, wbuf), 4096);
  rbd_image_t snapimg;
  EQ(rbd_open(io, "abi1", &snapimg, "nosnap"), -ENOENT);
  EQ(rbd_open(io, "abi1", &snapimg, "s1"), 0);
  EQ(rbd_write(snapimg, 0, 4096, wbuf), -EROFS);
  EQ(rbd_read(snapimg, 0, 4096, rbuf), 4096);
  CHECK(rbuf[0] == (char)0xcd, "snapshot keeps old data (%x)", (unsigned char)rbuf[0]);
  EQ(rbd_close(snapimg), 0);
  EQ(rbd_snap_rollback(img, "s1"), 0);
  EQ(rbd_read(img, 0, 4096, rbuf), 4096);
  CHECK(rbuf[0] == (char)0xcd, "rollback restored data (%x)", (unsigned char)rbuf[0]);
  EQ(rbd_snap_remove(img, "s2"), 0);
  EQ(rbd_snap_remove(img, "s2"), -ENOENT);

  /* ---- diff_iterate2 ---- */
  struct diffs d = {0, 0, 0};
  EQ(rbd_diff_iterate2(img, NULL, 0, 16 << 20, 1, 1, diff_cb, &d), 0);
  CHECK(d.n > 0 && d.bad == 0, "diff callbacks n=%d bad=%d", d.n, d.bad);
  EQ(rbd_diff_iterate2(img, NULL, 0, 16 << 20, 1, 1, abort_cb, NULL), -9000);

  /* ---- clones ---- */
  EQ(rbd_snap_protect(img, "s1"), 0);
  int prot = 0;
  EQ(rbd_snap_is_protected(img, "s1", &prot), 0);
  EQ(prot, 1);
  rbd_remove(io, "abi1c");
  int corder = 0;
  EQ(rbd_clone(io, "abi1", "s1", io, "abi1c", 1, &corder), 0);
  rbd_image_t child;
  EQ(rbd_open(io, "abi1c", &child, NULL), 0);
  char pp[64], pn[64], ps[64];
  EQ(rbd_get_parent_info(child, pp, sizeof pp, pn, sizeof pn, ps, sizeof ps), 0);
  CHECK(strcmp(pn, "abi1") == 0 && strcmp(ps, "s1") == 0, "parent %s@%s", pn, ps);
  EQ(rbd_get_parent_info(child, NULL, 0, NULL, 0, NULL, 0), 0);
  EQ(rbd_read(child, 1 << 20, 4096, rbuf), 4096);
  CHECK(rbuf[0] == (char)0xcd, "clone reads parent data");
  uint64_t overlap = 0;
  EQ(rbd_get_overlap(child, &overlap), 0);
  EQ(overlap, 16 << 20);
  EQ(rbd_flatten(child), 0);
  EQ(rbd_get_parent_info(child, NULL, 0, NULL, 0, NULL, 0), -ENOENT);
  EQ(rbd_close(child), 0);

  rbd_image_spec_t specs[16];
  size_t nspecs = 16;
  EQ(rbd_list2(io, specs, &nspecs), 0);
  CHECK(nspecs >= 2, "list2 count %zu", nspecs);
  rbd_image_spec_list_cleanup(specs, nspecs);

  int enc = rbd_encryption_load(img, RBD_ENCRYPTION_FORMAT_LUKS1, NULL, 0);
  CHECK(enc == -EINVAL, "encryption load without options %d", enc);
  rbd_encryption_luks1_format_options_t luks1 = {
      RBD_ENCRYPTION_ALGORITHM_AES256, "pass", 4};
  enc = rbd_encryption_load(img, RBD_ENCRYPTION_FORMAT_LUKS1, &luks1,
                            sizeof(luks1) - 1);
  CHECK(enc == -EINVAL, "encryption load, options of the wrong size %d", enc);
  enc = rbd_encryption_load(img, RBD_ENCRYPTION_FORMAT_LUKS1, &luks1,
                            sizeof(luks1));
  CHECK(enc == -EINVAL, "encryption load of an image without header %d", enc);

  /* ---- consistency groups ---- */
  {
    int64_t pool_id = rados_ioctx_get_id(io);
    EQ(rbd_group_create(io, NULL), -EINVAL);
    EQ(rbd_group_create(io, "abig"), 0);
    EQ(rbd_group_create(io, "abig"), -EEXIST);
    char gnames[16];
    size_t gsize = 1;
    EQ(rbd_group_list(io, gnames, &gsize), -ERANGE);
    EQ(gsize, 5);
    gsize = sizeof gnames;
    EQ(rbd_group_list(io, gnames, &gsize), 5);
    CHECK(strcmp(gnames, "abig") == 0, "group list %s", gnames);

    rbd_group_info_t gi;
    EQ(rbd_get_group(img, &gi, sizeof gi - 1), -ERANGE);
    EQ(rbd_get_group(img, NULL, sizeof gi), -EINVAL);
    EQ(rbd_get_group(img, &gi, sizeof gi), 0);
    CHECK(gi.pool == -1 && gi.name && gi.name[0] == 0, "not in a group");
    rbd_group_info_cleanup(&gi, sizeof gi);
    EQ(rbd_group_image_add(io, "abig", io, "abi1"), 0);
    EQ(rbd_group_image_add(io, "abig", io, "abi1"), -EEXIST);
    EQ(rbd_get_group(img, &gi, sizeof gi), 0);
    CHECK(gi.pool == pool_id && strcmp(gi.name, "abig") == 0, "group %s", gi.name);
    rbd_group_info_cleanup(&gi, sizeof gi);

    rbd_group_image_info_t gim[2];
    size_t ng = 0;
    EQ(rbd_group_image_list(io, "abig", gim, sizeof gim[0], &ng), -ERANGE);
    EQ(ng, 1);
    ng = 2;
    EQ(rbd_group_image_list(io, "abig", gim, sizeof gim[0] + 1, &ng), -ERANGE);
    ng = 2;
    EQ(rbd_group_image_list(io, "abig", gim, sizeof gim[0], &ng), 0);
    EQ(ng, 1);
    CHECK(strcmp(gim[0].name, "abi1") == 0 && gim[0].pool == pool_id &&
              gim[0].state == RBD_GROUP_IMAGE_STATE_ATTACHED,
          "group image %s", gim[0].name);
    rbd_group_image_list_cleanup(gim, sizeof gim[0], ng);

    EQ(rbd_group_snap_create2(io, "abig", "gs", 1 << 7), -EINVAL);
    EQ(rbd_group_snap_create2(io, "abig", "gs", RBD_SNAP_CREATE_SKIP_QUIESCE), 0);
    EQ(rbd_group_snap_create2(io, "abig", "gs", 0), -EEXIST);
    rbd_group_snap_info_t gsn[2];
    size_t nsn = 2;
    EQ(rbd_group_snap_list(io, "abig", gsn, sizeof gsn[0] - 1, &nsn), -ERANGE);
    nsn = 2;
    EQ(rbd_group_snap_list(io, "abig", gsn, sizeof gsn[0], &nsn), 0);
    EQ(nsn, 1);
    CHECK(strcmp(gsn[0].name, "gs") == 0 && gsn[0].state == RBD_GROUP_SNAP_STATE_COMPLETE,
          "group snap %s %d", gsn[0].name, (int)gsn[0].state);
    rbd_group_snap_list_cleanup(gsn, sizeof gsn[0], nsn);

    /* The image's snapshot of it, in the group namespace. */
    rbd_snap_info_t sl[16];
    int maxs = 16, groups = 0;
    uint64_t gsid = 0;
    int n = rbd_snap_list(img, sl, &maxs);
    CHECK(n > 0, "snap list %d", n);
    for (int i = 0; i < n; i++) {
      rbd_snap_namespace_type_t t = -1;
      EQ(rbd_snap_get_namespace_type(img, sl[i].id, &t), 0);
      if (t == RBD_SNAP_NAMESPACE_TYPE_GROUP) {
        groups++;
        gsid = sl[i].id;
      } else {
        EQ(t, RBD_SNAP_NAMESPACE_TYPE_USER);
        rbd_snap_group_namespace_t un;
        EQ(rbd_snap_get_group_namespace(img, sl[i].id, &un, sizeof un), -EINVAL);
      }
    }
    if (n > 0) rbd_snap_list_end(sl);
    EQ(groups, 1);
    rbd_snap_group_namespace_t gns;
    EQ(rbd_snap_get_group_namespace(img, gsid, &gns, sizeof gns - 1), -ERANGE);
    EQ(rbd_snap_get_group_namespace(img, 1ull << 60, &gns, sizeof gns), -ENOENT);
    EQ(rbd_snap_get_group_namespace(img, gsid, &gns, sizeof gns), 0);
    CHECK(gns.group_pool == pool_id && strcmp(gns.group_name, "abig") == 0 &&
              strcmp(gns.group_snap_name, "gs") == 0,
          "group namespace %s@%s", gns.group_name, gns.group_snap_name);
    rbd_snap_group_namespace_cleanup(&gns, sizeof gns);

    EQ(rbd_group_snap_rename(io, "abig", "gs", "gs2"), 0);
    EQ(rbd_group_snap_rollback(io, "abig", "gs"), -ENOENT);
    EQ(rbd_group_snap_remove(io, "abig", "gs2"), 0);
    EQ(rbd_group_snap_remove(io, "abig", "gs2"), -ENOENT);
    EQ(rbd_group_rename(io, "abig", "abig2"), 0);
    EQ(rbd_group_image_remove(io, "abig2", io, "abi1"), 0);
    EQ(rbd_group_image_remove(io, "abig2", io, "abi1"), -ENOENT);
    EQ(rbd_group_remove(io, "abig2"), 0);
    EQ(rbd_group_remove(io, "abig2"), -ENOENT);
    gsize = sizeof gnames;
    EQ(rbd_group_list(io, gnames, &gsize), 0);
  }

  bool exists = true;
  EQ(rbd_namespace_exists(io, "nons", &exists), 0);
  EQ(exists, 0);
  EQ(rbd_namespace_exists(io, "", &exists), -EINVAL);

  EQ(rbd_resize(img, 32 << 20), 0);
  EQ(rbd_get_size(img, &u), 0); EQ(u, 32 << 20);
  EQ(rbd_close(img), 0);
  EQ(rbd_remove(io, "abi1c"), 0);

  rados_ioctx_destroy(io);
  rados_shutdown(cluster);
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("abi_check OK\n");
  return 0;
}
