/* Test helper: librados watch/notify through the C API.
 * Usage:
 *   notifyprobe POOL OBJ watch READY DONE
 *     registers two watches on OBJ: A (rados_watch2) acks every notify
 *     with "ack:<payload>", B (rados_aio_watch) never acks. Prints
 *     "watching GID COOKIE_A COOKIE_B", creates READY, waits for DONE
 *     (120 s at most), then prints "got N <payloads...>",
 *     "check rc=N" for A, "unwatch rc=N" x2, "check_after rc=N", "flush rc=N".
 *   notifyprobe POOL OBJ errwatch READY DONE
 *     registers one watch (rados_watch2, acking as A above) whose error
 *     callback records its first call and creates READY.err; prints
 *     "watching GID COOKIE" (also written to READY.ids), creates READY,
 *     waits for DONE (120 s at
 *     most), then prints "error same_cookie=0|1 err=N" (err=0: never
 *     called), "got N <payloads...>", "check rc=N", "unwatch rc=N".
 *   notifyprobe POOL OBJ notify PAYLOAD TIMEOUT_MS
 *     rados_notify2 then rados_aio_notify; for each prints
 *     "notify rc=N acks=N [GID:COOKIE:PAYLOAD]... timeouts=N [GID:COOKIE]..."
 * Exit status 0 unless setup failed. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <rados/librados.h>

static rados_ioctx_t io;
static const char *obj;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char got[4096];
static int ngot;

static void cb_ack(void *arg, uint64_t notify_id, uint64_t handle, uint64_t notifier_id,
                   void *data, size_t len) {
  (void)arg;
  (void)notifier_id;
  char reply[600];
  int n = snprintf(reply, sizeof reply, "ack:%.*s", (int)(len > 512 ? 512 : len), (char *)data);
  pthread_mutex_lock(&mu);
  size_t used = strlen(got);
  snprintf(got + used, sizeof got - used, " %.*s", (int)(len > 512 ? 512 : len), (char *)data);
  ngot++;
  pthread_mutex_unlock(&mu);
  /* Ack from inside the callback, as librados users do. */
  rados_notify_ack(io, obj, notify_id, handle, reply, n);
}

static void cb_silent(void *arg, uint64_t notify_id, uint64_t handle, uint64_t notifier_id,
                      void *data, size_t len) {
  (void)arg; (void)notify_id; (void)handle; (void)notifier_id; (void)data; (void)len;
}

static void errcb(void *pre, uint64_t cookie, int err) {
  (void)pre;
  fprintf(stderr, "watch error cookie=%llu err=%d\n", (unsigned long long)cookie, err);
}

static uint64_t err_cookie;
static int err_seen;
static char err_file[4096];

static void errcb_record(void *pre, uint64_t cookie, int err) {
  (void)pre;
  pthread_mutex_lock(&mu);
  if (err_seen == 0) {
    err_cookie = cookie;
    err_seen = err;
    FILE *f = fopen(err_file, "w");
    if (f) fclose(f);
  }
  pthread_mutex_unlock(&mu);
}

static int wait_file(const char *f) {
  for (int i = 0; i < 12000; i++) {
    if (access(f, F_OK) == 0) return 0;
    usleep(10000);
  }
  return -ETIMEDOUT;
}

static void print_reply(const char *what, int rc, char *buf, size_t len) {
  struct notify_ack_t *acks = NULL;
  struct notify_timeout_t *tos = NULL;
  size_t na = 0, nt = 0;
  printf("%s rc=%d", what, rc);
  if (buf == NULL) {
    printf(" nobuf\n");
    return;
  }
  int d = rados_decode_notify_response(buf, len, &acks, &na, &tos, &nt);
  if (d < 0) {
    printf(" decode=%d\n", d);
    rados_buffer_free(buf);
    return;
  }
  printf(" acks=%zu", na);
  for (size_t i = 0; i < na; i++)
    printf(" %llu:%llu:%.*s", (unsigned long long)acks[i].notifier_id,
           (unsigned long long)acks[i].cookie, (int)acks[i].payload_len,
           acks[i].payload ? acks[i].payload : "");
  printf(" timeouts=%zu", nt);
  for (size_t i = 0; i < nt; i++)
    printf(" %llu:%llu", (unsigned long long)tos[i].notifier_id, (unsigned long long)tos[i].cookie);
  printf("\n");
  rados_free_notify_response(acks, na, tos);
  rados_buffer_free(buf);
}

int main(int argc, char **argv) {
  if (argc < 6) return 2;
  setvbuf(stdout, NULL, _IOLBF, 0);
  rados_t c;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  if (r == 0) r = rados_connect(c);
  if (r == 0) r = rados_ioctx_create(c, argv[1], &io);
  obj = argv[2];
  if (r == 0) r = rados_write_full(io, obj, "x", 1);
  if (r != 0) {
    fprintf(stderr, "notifyprobe setup: %d\n", r);
    return 1;
  }
  if (strcmp(argv[3], "watch") == 0) {
    uint64_t a = 0, b = 0;
    r = rados_watch2(io, obj, &a, cb_ack, errcb, NULL);
    if (r != 0) { printf("watch2 rc=%d\n", r); return 1; }
    rados_completion_t comp;
    rados_aio_create_completion2(NULL, NULL, &comp);
    r = rados_aio_watch(io, obj, comp, &b, cb_silent, errcb, NULL);
    if (r == 0) { rados_aio_wait_for_complete(comp); r = rados_aio_get_return_value(comp); }
    rados_aio_release(comp);
    if (r != 0) { printf("aio_watch rc=%d\n", r); return 1; }
    printf("watching %llu %llu %llu\n", (unsigned long long)rados_get_instance_id(c),
           (unsigned long long)a, (unsigned long long)b);
    FILE *f = fopen(argv[4], "w");
    if (f) fclose(f);
    if (wait_file(argv[5]) != 0) { printf("timeout waiting for %s\n", argv[5]); return 1; }
    printf("flush rc=%d\n", rados_watch_flush(c));
    pthread_mutex_lock(&mu);
    printf("got %d%s\n", ngot, got);
    pthread_mutex_unlock(&mu);
    int ck = rados_watch_check(io, a);
    printf("check rc=%d\n", ck >= 0 ? 0 : ck);
    printf("unwatch rc=%d\n", rados_unwatch2(io, a));
    printf("unwatch rc=%d\n", rados_unwatch2(io, b));
    printf("check_after rc=%d\n", rados_watch_check(io, a));
    printf("unwatch_again rc=%d\n", rados_unwatch2(io, a));
  } else if (strcmp(argv[3], "errwatch") == 0) {
    snprintf(err_file, sizeof err_file, "%s.err", argv[4]);
    uint64_t a = 0;
    r = rados_watch2(io, obj, &a, cb_ack, errcb_record, NULL);
    if (r != 0) { printf("watch2 rc=%d\n", r); return 1; }
    printf("watching %llu %llu\n", (unsigned long long)rados_get_instance_id(c),
           (unsigned long long)a);
    char ids[4096];
    snprintf(ids, sizeof ids, "%s.ids", argv[4]);
    FILE *f = fopen(ids, "w");
    if (f) {
      fprintf(f, "%llu %llu\n", (unsigned long long)rados_get_instance_id(c),
              (unsigned long long)a);
      fclose(f);
    }
    f = fopen(argv[4], "w");
    if (f) fclose(f);
    if (wait_file(argv[5]) != 0) { printf("timeout waiting for %s\n", argv[5]); return 1; }
    rados_watch_flush(c);
    pthread_mutex_lock(&mu);
    printf("error same_cookie=%d err=%d\n", err_seen != 0 && err_cookie == a, err_seen);
    printf("got %d%s\n", ngot, got);
    pthread_mutex_unlock(&mu);
    int ck = rados_watch_check(io, a);
    printf("check rc=%d\n", ck >= 0 ? 0 : ck);
    printf("unwatch rc=%d\n", rados_unwatch2(io, a));
  } else if (strcmp(argv[3], "notify") == 0) {
    const char *p = argv[4];
    uint64_t t = strtoull(argv[5], NULL, 10);
    char *buf = NULL;
    size_t len = 0;
    r = rados_notify2(io, obj, p, (int)strlen(p), t, &buf, &len);
    print_reply("notify", r, buf, len);
    rados_completion_t comp;
    rados_aio_create_completion2(NULL, NULL, &comp);
    buf = NULL;
    len = 0;
    r = rados_aio_notify(io, obj, comp, "again", 5, t, &buf, &len);
    if (r == 0) { rados_aio_wait_for_complete(comp); r = rados_aio_get_return_value(comp); }
    rados_aio_release(comp);
    print_reply("aio_notify", r, buf, len);
    /* Bad input: a garbled reply buffer and a negative length. */
    char junk[3] = {1, 2, 3};
    struct notify_ack_t *acks;
    struct notify_timeout_t *tos;
    size_t na, nt;
    printf("decode_bad rc=%d\n", rados_decode_notify_response(junk, 3, &acks, &na, &tos, &nt));
    printf("notify_neg rc=%d\n", rados_notify2(io, obj, "x", -1, t, NULL, NULL));
  } else {
    return 2;
  }
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  return 0;
}
