/* Loopback round trip over 127.0.0.1 TCP (TCP_NODELAY): the floor under any
 * networked storage request on this machine; with "unix", over an abstract
 * Unix socket instead (the path Quarry's clients take to an OSD in their
 * network namespace). A child echoes every message; the parent times N
 * round trips of SIZE bytes.
 * usage: pingpong SIZE N [unix]     prints one JSON object. */
#include <arpa/inet.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int full(int fd, char *buf, size_t n, int wr) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = wr ? write(fd, buf + done, n - done) : read(fd, buf + done, n - done);
    if (r <= 0) return -1;
    done += (size_t)r;
  }
  return 0;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int unix_sock = argc == 4 && strcmp(argv[3], "unix") == 0;
  if (argc != 3 && !unix_sock) {
    fprintf(stderr, "usage: pingpong SIZE N [unix]\n");
    return 2;
  }
  long size = atol(argv[1]), n = atol(argv[2]);
  if (size < 1 || size > (1 << 24) || n < 1 || n > 10000000) {
    fprintf(stderr, "pingpong: SIZE 1..16M, N 1..10M\n");
    return 2;
  }
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  /* Abstract name (leading NUL), unique per process. */
  struct sockaddr_un u = {.sun_family = AF_UNIX};
  int ul = snprintf(u.sun_path + 1, sizeof u.sun_path - 1, "quarry-pingpong-%d", (int)getpid());
  socklen_t usz = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + ul);
  struct sockaddr *sa = unix_sock ? (struct sockaddr *)&u : (struct sockaddr *)&a;
  socklen_t salen = unix_sock ? usz : sizeof a;
  int ls = socket(unix_sock ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
  if (ls < 0 || bind(ls, sa, salen) || listen(ls, 1) ||
      (!unix_sock && getsockname(ls, (struct sockaddr *)&a, &al))) {
    perror("pingpong: listen");
    return 1;
  }
  char *buf = malloc(size);
  if (!buf) return 1;
  memset(buf, 'x', size);
  pid_t child = fork();
  if (child == 0) {
    int c = accept(ls, NULL, NULL);
    if (!unix_sock) setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    while (full(c, buf, size, 0) == 0 && full(c, buf, size, 1) == 0) {
    }
    _exit(0);
  }
  int s = socket(unix_sock ? AF_UNIX : AF_INET, SOCK_STREAM, 0);
  if (s < 0 || connect(s, sa, salen)) {
    perror("pingpong: connect");
    return 1;
  }
  if (!unix_sock) setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  double *rt = calloc(n, sizeof *rt);
  if (!rt) return 1;
  for (long i = 0; i < n + n / 10; i++) { /* first n/10: warm-up, not recorded */
    double t0 = now_us();
    if (full(s, buf, size, 1) || full(s, buf, size, 0)) {
      fprintf(stderr, "pingpong: connection lost\n");
      return 1;
    }
    if (i >= n / 10) rt[i - n / 10] = now_us() - t0;
  }
  close(s);
  waitpid(child, NULL, 0);
  double sum = 0;
  for (long i = 0; i < n; i++) sum += rt[i];
  qsort(rt, n, sizeof *rt, cmp_d);
  printf("{\"transport\": \"%s\", \"size\": %ld, \"n\": %ld, \"mean_us\": %.2f, \"p50_us\": %.2f, "
         "\"p99_us\": %.2f}\n",
         unix_sock ? "unix" : "tcp", size, n, sum / n, rt[n / 2], rt[(long)(n * 0.99)]);
  return 0;
}
