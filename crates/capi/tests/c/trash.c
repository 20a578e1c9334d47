/* rbd_trash_* through Quarry's librbd, as OpenStack's drivers use them:
 * move (refused while open), list (ERANGE sizing), get, remove before the
 * deferment ends (EPERM), restore under a new name with the data intact,
 * purge, and the errors for unknown ids and unsupported thresholds.
 * Usage: trash POOL. Prints "trash OK" on success. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      fprintf(stderr, "line %d: ", __LINE__);              \
      fprintf(stderr, __VA_ARGS__);                        \
      fprintf(stderr, "\n");                               \
      exit(1);                                             \
    }                                                      \
  } while (0)

static int count_images(rados_ioctx_t io, const char *name) {
  rbd_image_spec_t specs[16];
  size_t n = 16;
  int r = rbd_list2(io, specs, &n);
  CHECK(r >= 0, "rbd_list2: %d", r);
  int found = 0;
  for (size_t i = 0; i < n; i++)
    if (strcmp(specs[i].name, name) == 0) found++;
  rbd_image_spec_list_cleanup(specs, n);
  return found;
}

int main(int argc, char **argv) {
  if (argc != 2) return 2;
  rados_t c;
  rados_ioctx_t io;
  rbd_image_t img;
  int order = 22;
  char buf[4096], back[4096];
  for (size_t i = 0; i < sizeof buf; i++) buf[i] = (char)(i * 7 + 1);

  CHECK(rados_create(&c, NULL) == 0, "rados_create");
  CHECK(rados_conf_read_file(c, NULL) == 0, "conf");
  CHECK(rados_connect(c) == 0, "connect");
  CHECK(rados_ioctx_create(c, argv[1], &io) == 0, "ioctx");

  CHECK(rbd_create(io, "t", 8 << 20, &order) == 0, "create");
  CHECK(rbd_open(io, "t", &img, NULL) == 0, "open");
  CHECK(rbd_write(img, 4096, sizeof buf, buf) == (ssize_t)sizeof buf, "write");
  int r = rbd_trash_move(io, "t", 3600);
  CHECK(r == -EBUSY, "trash_move of an open image: %d", r);
  CHECK(rbd_close(img) == 0, "close");

  r = rbd_trash_move(io, "nosuch", 0);
  CHECK(r == -ENOENT, "trash_move of a missing image: %d", r);
  r = rbd_trash_move(io, "t", 3600);
  CHECK(r == 0, "trash_move: %d", r);
  CHECK(count_images(io, "t") == 0, "a trashed image is not listed");
  r = rbd_open(io, "t", &img, NULL);
  CHECK(r == -ENOENT, "open of a trashed image by name: %d", r);

  size_t n = 0;
  r = rbd_trash_list(io, NULL, &n);
  CHECK(r == -ERANGE && n == 1, "trash_list sizing: %d n=%zu", r, n);
  rbd_trash_image_info_t entries[4];
  r = rbd_trash_list(io, entries, &n);
  CHECK(r == 1 && n == 1, "trash_list: %d n=%zu", r, n);
  CHECK(strcmp(entries[0].name, "t") == 0, "name %s", entries[0].name);
  CHECK(entries[0].source == RBD_TRASH_IMAGE_SOURCE_USER, "source %d",
        (int)entries[0].source);
  CHECK(entries[0].deferment_end_time - entries[0].deletion_time == 3600,
        "deferment %ld..%ld", (long)entries[0].deletion_time,
        (long)entries[0].deferment_end_time);
  char id[64];
  snprintf(id, sizeof id, "%s", entries[0].id);
  rbd_trash_list_cleanup(entries, n);

  rbd_trash_image_info_t info;
  r = rbd_trash_get(io, id, &info);
  CHECK(r == 0 && strcmp(info.name, "t") == 0 && strcmp(info.id, id) == 0,
        "trash_get: %d", r);
  rbd_trash_get_cleanup(&info);
  r = rbd_trash_get(io, "0000nosuchid", &info);
  CHECK(r == -ENOENT, "trash_get of an unknown id: %d", r);

  /* A trashed image still opens by id (as `rbd trash ls -l` does). */
  r = rbd_open_by_id_read_only(io, id, &img, NULL);
  CHECK(r == 0, "open_by_id_read_only of a trashed image: %d", r);
  memset(back, 0, sizeof back);
  CHECK(rbd_read(img, 4096, sizeof back, back) == (ssize_t)sizeof back, "read by id");
  CHECK(memcmp(buf, back, sizeof buf) == 0, "trashed data differs");
  CHECK(rbd_close(img) == 0, "close by id");
  r = rbd_open_by_id(io, "0000nosuchid", &img, NULL);
  CHECK(r == -ENOENT, "open_by_id of an unknown id: %d", r);
  /* The asynchronous forms: the call queues, the completion tells. */
  rbd_completion_t comp;
  CHECK(rbd_aio_create_completion(NULL, NULL, &comp) == 0, "completion");
  img = NULL;
  r = rbd_aio_open_by_id_read_only(io, id, &img, NULL, comp);
  CHECK(r == 0, "aio_open_by_id_read_only: %d", r);
  CHECK(rbd_aio_wait_for_complete(comp) == 0, "wait");
  r = (int)rbd_aio_get_return_value(comp);
  CHECK(r == 0 && img != NULL, "aio_open_by_id_read_only completed with %d", r);
  rbd_aio_release(comp);
  memset(back, 0, sizeof back);
  CHECK(rbd_read(img, 4096, sizeof back, back) == (ssize_t)sizeof back, "read by aio id");
  CHECK(memcmp(buf, back, sizeof buf) == 0, "trashed data differs (aio open)");
  CHECK(rbd_write(img, 0, sizeof buf, buf) == -EROFS, "a read-only aio open refuses writes");
  CHECK(rbd_close(img) == 0, "close aio by id");
  CHECK(rbd_aio_create_completion(NULL, NULL, &comp) == 0, "completion");
  r = rbd_aio_open_by_id(io, "0000nosuchid", &img, NULL, comp);
  CHECK(r == 0, "aio_open_by_id of an unknown id queues: %d", r);
  CHECK(rbd_aio_wait_for_complete(comp) == 0, "wait");
  r = (int)rbd_aio_get_return_value(comp);
  CHECK(r == -ENOENT, "aio_open_by_id of an unknown id completed with %d", r);
  rbd_aio_release(comp);

  r = rbd_trash_remove(io, id, false);
  CHECK(r == -EPERM, "trash_remove before the deferment ends: %d", r);
  r = rbd_trash_purge(io, 0, -1);
  CHECK(r == 0, "purge (nothing expired): %d", r);
  n = 1;
  CHECK(rbd_trash_list(io, entries, &n) == 1, "purge kept the protected image");
  rbd_trash_list_cleanup(entries, n);

  /* The old name is taken meanwhile: restore under another one. */
  CHECK(rbd_create(io, "t", 1 << 20, &order) == 0, "re-create t");
  r = rbd_trash_restore(io, id, NULL);
  CHECK(r == -EEXIST, "restore onto a taken name: %d", r);
  r = rbd_trash_restore(io, id, "t2");
  CHECK(r == 0, "restore as t2: %d", r);
  CHECK(count_images(io, "t2") == 1, "t2 is listed again");
  CHECK(rbd_open(io, "t2", &img, NULL) == 0, "open t2");
  CHECK(rbd_read(img, 4096, sizeof back, back) == (ssize_t)sizeof back, "read");
  CHECK(memcmp(buf, back, sizeof buf) == 0, "restored data differs");
  CHECK(rbd_close(img) == 0, "close t2");
  r = rbd_trash_restore(io, id, NULL);
  CHECK(r == -ENOENT, "second restore: %d", r);

  CHECK(rbd_trash_move(io, "t2", 0) == 0, "trash_move t2");
  r = rbd_trash_purge(io, 0, 0.5f);
  CHECK(r == -EOPNOTSUPP, "purge by threshold: %d", r);
  r = rbd_trash_purge(io, 0, -1);
  CHECK(r == 0, "purge: %d", r);
  n = 1;
  r = rbd_trash_list(io, entries, &n);
  CHECK(r == 0 && n == 0, "trash empty after purge: %d n=%zu", r, n);
  r = rbd_trash_get(io, id, &info);
  CHECK(r == -ENOENT, "purged image still in the trash: %d", r);
  r = rbd_trash_remove(io, id, true);
  CHECK(r == -ENOENT, "trash_remove of a purged image: %d", r);

  CHECK(rbd_remove(io, "t") == 0, "remove t");

  /* Children and descendants, trashed clones marked. */
  uint64_t features = RBD_FEATURE_LAYERING;
  CHECK(rbd_create2(io, "p", 4 << 20, features, &order) == 0, "create p");
  CHECK(rbd_open(io, "p", &img, NULL) == 0, "open p");
  CHECK(rbd_snap_create(img, "s") == 0 && rbd_snap_protect(img, "s") == 0, "snap p");
  CHECK(rbd_clone(io, "p", "s", io, "c1", features, &order) == 0, "clone c1");
  CHECK(rbd_clone(io, "p", "s", io, "c2", features, &order) == 0, "clone c2");
  rbd_image_t c1;
  CHECK(rbd_open(io, "c1", &c1, NULL) == 0, "open c1");
  CHECK(rbd_snap_create(c1, "s2") == 0 && rbd_snap_protect(c1, "s2") == 0, "snap c1");
  CHECK(rbd_clone(io, "c1", "s2", io, "g1", features, &order) == 0, "clone g1");
  CHECK(rbd_trash_move(io, "c2", 0) == 0, "trash c2");
  rbd_linked_image_spec_t specs[4];
  size_t ns = 0;
  r = rbd_list_children3(img, specs, &ns);
  CHECK(r == -ERANGE && ns == 2, "children sizing: %d %zu", r, ns);
  ns = 4;
  r = rbd_list_children3(img, specs, &ns);
  CHECK(r == 0 && ns == 2, "children: %d %zu", r, ns);
  CHECK(strcmp(specs[0].image_name, "c1") == 0 && !specs[0].trash, "child c1");
  CHECK(strcmp(specs[1].image_name, "c2") == 0 && specs[1].trash, "trashed child c2");
  CHECK(strcmp(specs[0].pool_name, argv[1]) == 0, "child pool %s", specs[0].pool_name);
  rbd_linked_image_spec_list_cleanup(specs, ns);
  ns = 4;
  r = rbd_list_descendants(img, specs, &ns);
  CHECK(r == 0 && ns == 3, "descendants: %d %zu", r, ns);
  CHECK(strcmp(specs[2].image_name, "g1") == 0, "grandchild %s", specs[2].image_name);
  rbd_linked_image_spec_list_cleanup(specs, ns);
  /* Clean up: the trashed clone first, then the rest. */
  n = 4;
  CHECK(rbd_trash_list(io, entries, &n) == 1, "one trashed");
  char cid[64];
  snprintf(cid, sizeof cid, "%s", entries[0].id);
  rbd_trash_list_cleanup(entries, n);
  CHECK(rbd_trash_remove(io, cid, false) == 0, "trash rm c2");
  CHECK(rbd_remove(io, "g1") == 0, "rm g1");
  CHECK(rbd_snap_unprotect(c1, "s2") == 0 && rbd_snap_remove(c1, "s2") == 0, "c1 snap");
  CHECK(rbd_close(c1) == 0, "close c1");
  CHECK(rbd_remove(io, "c1") == 0, "rm c1");
  CHECK(rbd_snap_unprotect(img, "s") == 0 && rbd_snap_remove(img, "s") == 0, "p snap");
  CHECK(rbd_close(img) == 0, "close p");
  CHECK(rbd_remove(io, "p") == 0, "rm p");
  rados_ioctx_destroy(io);
  rados_shutdown(c);
  printf("trash OK\n");
  return 0;
}
