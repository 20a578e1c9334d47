/* Test helper: connect through librados as client.admin (conf file from
 * CEPH_CONF, CEPH_ARGS applied by rados_create) and print NAME=VALUE of
 * rados_conf_get for each argument after connecting. An argument
 * "-s NAME=VALUE" calls rados_conf_set before connecting instead. */
#include <stdio.h>
#include <string.h>
#include <rados/librados.h>

int main(int argc, char **argv) {
  rados_t c;
  int r = rados_create(&c, NULL);
  if (r == 0) r = rados_conf_read_file(c, NULL);
  for (int i = 1; r == 0 && i + 1 < argc; i++) {
    if (strcmp(argv[i], "-s") == 0) {
      char kv[512];
      snprintf(kv, sizeof kv, "%s", argv[i + 1]);
      char *eq = strchr(kv, '=');
      if (!eq) return 2;
      *eq = 0;
      r = rados_conf_set(c, kv, eq + 1);
      i++;
    }
  }
  if (r == 0) r = rados_connect(c);
  if (r != 0) {
    fprintf(stderr, "conf_get: connect: %d\n", r);
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-s") == 0) {
      i++;
      continue;
    }
    char buf[4096];
    r = rados_conf_get(c, argv[i], buf, sizeof buf);
    if (r != 0) {
      fprintf(stderr, "conf_get: %s: %d\n", argv[i], r);
      return 1;
    }
    printf("%s=%s\n", argv[i], buf);
  }
  rados_shutdown(c);
  return 0;
}
