/* outfile.c: files a caller names to be written (the command's --out, keygen's key, the
 * examples'): never replacing what is there unless forced, never leaving half a file. */
/*** @module oktadpop */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <openssl/rand.h>
#include "lua/oktadpop.h"

#define OK_OUTFILE_MT "oktadpop.outfile"

/* An open output: the temporary file beside the target until commit links or renames it in. */
typedef struct ok_outfile {
  FILE *fp;       /* the temporary file, NULL once closed */
  char *tmp;      /* its path, NULL once it is gone (committed or removed) */
  char *target;
  int force;
  int write_errno; /* the first failed write's errno, reported by commit */
} ok_outfile;

/* Closes and removes the temporary file; safe to call twice (commit, discard, __gc, __close). */
static void outfile_release(ok_outfile *f) {
  if (f->fp) { fclose(f->fp); f->fp = NULL; }
  if (f->tmp) { unlink(f->tmp); free(f->tmp); f->tmp = NULL; }
  free(f->target);
  f->target = NULL;
}

/* Pushes nil and a "file" error whose exists field is set: the target is there. */
static int fail_exists(lua_State *L, const char *path, const struct stat *st) {
  ok_fail(L, "file", "%s exists%s: it is not replaced unless forced", path,
          S_ISLNK(st->st_mode) ? " (a symbolic link)" : "");
  lua_pushboolean(L, 1);
  lua_setfield(L, -2, "exists");
  return 2;
}

/* A temporary name beside target: target ".tmp-" and 12 random base64url characters. */
static void temp_name(const char *target, char *out, size_t outsz) {
  unsigned char r[9];
  char suffix[16];
  if (RAND_bytes(r, sizeof r) != 1) memset(r, 0, sizeof r); /* O_EXCL still refuses a clash */
  suffix[ok_b64url_encode(r, sizeof r, suffix)] = '\0';
  snprintf(out, outsz, "%s.tmp-%s", target, suffix);
}

/*** oktadpop.outfile(path [, {force=, private=}]) -> file | nil, err: a file to write path
 * through. An existing path, whatever its type or mode (tested with lstat, so a file the
 * caller cannot read and a symbolic link count), is refused unless force (err.exists). What is
 * written goes to a temporary file beside path, created with O_EXCL (mode 0600 when private,
 * else 0666 less the umask); file:commit() then puts it at path with link(2), which fails if
 * path appeared meanwhile, or with force renames it over path (a symbolic link is replaced, not
 * followed). A file not committed is removed: file:discard(), or when it is collected.
 * @function outfile
 */
int ok_outfile_new(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  int force = 0, priv = 0, fd = -1;
  struct stat st;
  ok_outfile *f;
  if (!lua_isnoneornil(L, 2)) {
    static const char *const names[] = {"force", "private", NULL};
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!ok_opts_known(L, 2, "outfile", names)) return 2;
    lua_getfield(L, 2, "force");
    force = lua_toboolean(L, -1);
    lua_getfield(L, 2, "private");
    priv = lua_toboolean(L, -1);
    lua_pop(L, 2);
  }
  if (len == 0 || strlen(path) != len) return ok_fail(L, "config", "outfile: the path is empty or holds a NUL byte");
  f = lua_newuserdata(L, sizeof *f); /* first: whatever is made below, __gc undoes */
  memset(f, 0, sizeof *f);
  luaL_setmetatable(L, OK_OUTFILE_MT);
  if (lstat(path, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return ok_fail(L, "file", "%s is a directory", path);
    if (!force) return fail_exists(L, path, &st);
  } else if (errno != ENOENT) {
    return ok_fail(L, "file", "cannot write %s: %s", path, strerror(errno));
  }
  f->force = force;
  if (!(f->target = strdup(path)) || !(f->tmp = malloc(len + 32))) return luaL_error(L, "out of memory");
  for (int tries = 0; fd < 0 && tries < 8; tries++) {
    temp_name(path, f->tmp, len + 32);
    fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, priv ? 0600 : 0666);
    if (fd < 0 && errno != EEXIST) break;
  }
  if (fd < 0) {
    int e = errno;
    free(f->tmp);
    f->tmp = NULL;
    return ok_fail(L, "file", "cannot write beside %s: %s", path, strerror(e));
  }
  if (!(f->fp = fdopen(fd, "wb"))) {
    close(fd);
    return ok_fail(L, "file", "cannot write %s: %s", f->tmp, strerror(errno));
  }
  return 1;
}

static ok_outfile *outfile_check(lua_State *L) { return luaL_checkudata(L, 1, OK_OUTFILE_MT); }

/*** file:write(s, ...) -> file | nil, err: strings or numbers, as io's write.
 * @function outfile:write
 */
static int outfile_write(lua_State *L) {
  ok_outfile *f = outfile_check(L);
  int n = lua_gettop(L);
  if (!f->fp) return ok_fail(L, "file", "the file is already committed or discarded");
  for (int i = 2; i <= n; i++) {
    size_t len;
    const char *s = luaL_checklstring(L, i, &len);
    if (fwrite(s, 1, len, f->fp) != len && !f->write_errno) f->write_errno = errno ? errno : EIO;
  }
  if (f->write_errno) return ok_fail(L, "file", "cannot write %s: %s", f->tmp, strerror(f->write_errno));
  lua_settop(L, 1);
  return 1;
}

/*** file:commit() -> true | nil, err: the whole file in place, flushed to disk; on an error the
 * temporary file is removed and the target is as it was.
 * @function outfile:commit
 */
static int outfile_commit(lua_State *L) {
  ok_outfile *f = outfile_check(L);
  int e = 0;
  if (!f->fp) return ok_fail(L, "file", "the file is already committed or discarded");
  if (fflush(f->fp) != 0 || fsync(fileno(f->fp)) != 0) e = errno;
  if (fclose(f->fp) != 0 && !e) e = errno;
  f->fp = NULL;
  if (f->write_errno) e = f->write_errno;
  if (e) {
    ok_fail(L, "file", "cannot write %s: %s", f->target, strerror(e));
  } else if (f->force ? rename(f->tmp, f->target) != 0 : link(f->tmp, f->target) != 0) {
    struct stat st;
    e = errno;
    if (e == EEXIST && lstat(f->target, &st) == 0) fail_exists(L, f->target, &st); /* it appeared meanwhile */
    else ok_fail(L, "file", "cannot put the file at %s: %s", f->target, strerror(e));
  } else {
    if (f->force) { free(f->tmp); f->tmp = NULL; } /* renamed: nothing left to remove */
    lua_pushboolean(L, 1);
  }
  outfile_release(f); /* after link: the temporary name goes, the file stays at target */
  return e ? 2 : 1;
}

/*** file:discard(): removes the temporary file; the target is as it was. Safe to call twice.
 * @function outfile:discard
 */
static int outfile_discard(lua_State *L) {
  outfile_release(outfile_check(L));
  return 0;
}

static int outfile_tostring(lua_State *L) {
  ok_outfile *f = outfile_check(L);
  lua_pushfstring(L, "oktadpop.outfile: %s", f->target ? f->target : "(committed or discarded)");
  return 1;
}

void ok_outfile_open(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"write", outfile_write}, {"commit", outfile_commit}, {"discard", outfile_discard}, {NULL, NULL}};
  static const luaL_Reg meta[] = {{"__gc", outfile_discard}, {"__tostring", outfile_tostring},
#if LUA_VERSION_NUM >= 504
                                  {"__close", outfile_discard},
#endif
                                  {NULL, NULL}};
  ok_class(L, OK_OUTFILE_MT, methods, meta);
}
