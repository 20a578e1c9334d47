/* Control-plane timings through librbd itself (no CLI start-up in the figures):
 * connect, create a 10 GiB image, snapshot create, protect, N clones, open and
 * close each clone, then remove everything, timing each call (plus the median
 * of 10 more snapshot creates and removes, and the first snapshot of 5 more
 * fresh images, which also takes each one's exclusive lock). Whichever librbd the dynamic linker
 * picks (Debian's Ceph, or Quarry's via LD_LIBRARY_PATH) is used and its path
 * is printed, so the caller can check it ran the library it meant to.
 *
 * usage: cplane POOL NCLONES      (CEPH_CONF selects the cluster; client.admin)
 * Prints one JSON object on stdout; exit status 1 with a message on any error. */
#define _GNU_SOURCE
#include <link.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static char librbd_path[4096] = "?";
static int find_librbd(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  (void)data;
  if (info->dlpi_name && strstr(info->dlpi_name, "librbd"))
    snprintf(librbd_path, sizeof librbd_path, "%s", info->dlpi_name);
  return 0;
}

#define CHECK(what, expr)                                                       \
  do {                                                                          \
    int r_ = (expr);                                                            \
    if (r_ < 0) {                                                               \
      fprintf(stderr, "cplane: %s failed: %s (%d)\n", what, strerror(-r_), r_); \
      exit(1);                                                                  \
    }                                                                           \
  } while (0)

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: cplane POOL NCLONES\n");
    return 2;
  }
  const char *pool = argv[1];
  int n = atoi(argv[2]);
  if (n < 1 || n > 10000) {
    fprintf(stderr, "cplane: NCLONES must be 1..10000\n");
    return 2;
  }
  char parent[64], name[128];
  snprintf(parent, sizeof parent, "cplane-parent-%ld", (long)getpid());
  double t0 = now_ms();
  rados_t cluster;
  CHECK("rados_create", rados_create(&cluster, "admin"));
  CHECK("rados_conf_read_file", rados_conf_read_file(cluster, NULL));
  CHECK("rados_connect", rados_connect(cluster));
  rados_ioctx_t io;
  CHECK("rados_ioctx_create", rados_ioctx_create(cluster, pool, &io));
  double t_connect = now_ms() - t0;
  dl_iterate_phdr(find_librbd, NULL);

  int order = 22;
  uint64_t features = RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK |
                      RBD_FEATURE_OBJECT_MAP | RBD_FEATURE_FAST_DIFF |
                      RBD_FEATURE_DEEP_FLATTEN;
  t0 = now_ms();
  CHECK("rbd_create2", rbd_create2(io, parent, 10ULL << 30, features, &order));
  double t_create = now_ms() - t0;
  rbd_image_t img;
  CHECK("rbd_open", rbd_open(io, parent, &img, NULL));
  t0 = now_ms();
  CHECK("rbd_snap_create", rbd_snap_create(img, "s"));
  double t_snap = now_ms() - t0;
  t0 = now_ms();
  CHECK("rbd_snap_protect", rbd_snap_protect(img, "s"));
  double t_protect = now_ms() - t0;

  double *each = calloc(n, sizeof *each);
  double *each_rm = calloc(n, sizeof *each_rm);
  if (!each || !each_rm) return 1;
  double t_all = now_ms();
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "%s-c%d", parent, i);
    int o = 22;
    t0 = now_ms();
    CHECK("rbd_clone", rbd_clone(io, parent, "s", io, name, features, &o));
    each[i] = now_ms() - t0;
  }
  double t_clones = now_ms() - t_all;
  /* QEMU opens (and closes) one clone per VM boot. */
  double *each_open = calloc(n, sizeof *each_open);
  double *each_close = calloc(n, sizeof *each_close);
  if (!each_open || !each_close) return 1;
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "%s-c%d", parent, i);
    rbd_image_t c;
    t0 = now_ms();
    CHECK("rbd_open (clone)", rbd_open(io, name, &c, NULL));
    each_open[i] = now_ms() - t0;
    t0 = now_ms();
    CHECK("rbd_close (clone)", rbd_close(c));
    each_close[i] = now_ms() - t0;
  }
  t_all = now_ms();
  for (int i = 0; i < n; i++) {
    snprintf(name, sizeof name, "%s-c%d", parent, i);
    t0 = now_ms();
    CHECK("rbd_remove (clone)", rbd_remove(io, name));
    each_rm[i] = now_ms() - t0;
  }
  double t_rm_clones = now_ms() - t_all;
  t0 = now_ms();
  CHECK("rbd_snap_unprotect", rbd_snap_unprotect(img, "s"));
  double t_unprotect = now_ms() - t0;
  t0 = now_ms();
  CHECK("rbd_snap_remove", rbd_snap_remove(img, "s"));
  double t_snap_rm = now_ms() - t0;
  /* One snapshot is a noisy sample: take and remove a few more. */
  enum { SNAPS = 10 };
  double each_snap[SNAPS], each_snap_rm[SNAPS];
  for (int i = 0; i < SNAPS; i++) {
    char sn[32];
    snprintf(sn, sizeof sn, "t%d", i);
    t0 = now_ms();
    CHECK("rbd_snap_create", rbd_snap_create(img, sn));
    each_snap[i] = now_ms() - t0;
  }
  for (int i = 0; i < SNAPS; i++) {
    char sn[32];
    snprintf(sn, sizeof sn, "t%d", i);
    t0 = now_ms();
    CHECK("rbd_snap_remove", rbd_snap_remove(img, sn));
    each_snap_rm[i] = now_ms() - t0;
  }
  CHECK("rbd_close", rbd_close(img));
  t0 = now_ms();
  CHECK("rbd_remove", rbd_remove(io, parent));
  double t_rm = now_ms() - t0;
  /* An image's first snapshot also takes the exclusive lock: one sample of
   * it is noise, so a few more fresh images each take their first. */
  enum { FIRSTS = 5 };
  double each_first[FIRSTS];
  for (int i = 0; i < FIRSTS; i++) {
    snprintf(name, sizeof name, "%s-f%d", parent, i);
    int o = 22;
    CHECK("rbd_create2 (first-snapshot image)", rbd_create2(io, name, 1ULL << 30, features, &o));
    rbd_image_t f;
    CHECK("rbd_open (first-snapshot image)", rbd_open(io, name, &f, NULL));
    t0 = now_ms();
    CHECK("rbd_snap_create (first)", rbd_snap_create(f, "s"));
    each_first[i] = now_ms() - t0;
    CHECK("rbd_snap_remove (first)", rbd_snap_remove(f, "s"));
    CHECK("rbd_close (first-snapshot image)", rbd_close(f));
    CHECK("rbd_remove (first-snapshot image)", rbd_remove(io, name));
  }
  rados_ioctx_destroy(io);
  rados_shutdown(cluster);

  qsort(each, n, sizeof *each, cmp_d);
  qsort(each_rm, n, sizeof *each_rm, cmp_d);
  qsort(each_open, n, sizeof *each_open, cmp_d);
  qsort(each_close, n, sizeof *each_close, cmp_d);
  qsort(each_snap, SNAPS, sizeof *each_snap, cmp_d);
  qsort(each_snap_rm, SNAPS, sizeof *each_snap_rm, cmp_d);
  /* The parent's first snapshot is one more sample of the same kind. */
  double firsts[FIRSTS + 1];
  memcpy(firsts, each_first, sizeof each_first);
  firsts[FIRSTS] = t_snap;
  qsort(firsts, FIRSTS + 1, sizeof *firsts, cmp_d);
  printf("{\"librbd\": \"%s\", \"clones\": %d, \"connect_ms\": %.3f, \"create_10g_ms\": %.3f, "
         "\"snap_create_ms\": %.3f, \"snap_protect_ms\": %.3f, \"clones_total_ms\": %.3f, "
         "\"clone_median_ms\": %.3f, \"clone_max_ms\": %.3f, \"remove_clones_total_ms\": %.3f, "
         "\"remove_clone_median_ms\": %.3f, \"snap_unprotect_ms\": %.3f, \"snap_remove_ms\": %.3f, "
         "\"remove_image_ms\": %.3f, \"open_clone_median_ms\": %.3f, \"close_clone_median_ms\": %.3f, "
         "\"snap_create_median_ms\": %.3f, \"snap_remove_median_ms\": %.3f, "
         "\"snap_create_first_median_ms\": %.3f, \"snap_create_first_max_ms\": %.3f, "
         "\"snap_create_first_samples\": %d}\n",
         librbd_path, n, t_connect, t_create, t_snap, t_protect, t_clones, each[n / 2], each[n - 1],
         t_rm_clones, each_rm[n / 2], t_unprotect, t_snap_rm, t_rm, each_open[n / 2], each_close[n / 2],
         each_snap[SNAPS / 2], each_snap_rm[SNAPS / 2], (firsts[FIRSTS / 2] + firsts[(FIRSTS + 1) / 2]) / 2,
         firsts[FIRSTS], FIRSTS + 1);
  return 0;
}
