/* files.c: reading the small files oktadpop is handed (key files, .env): regular files only,
 * never blocking on a FIFO, size-capped, into GC'd memory that is allocated before the file
 * is opened, so no Lua error can strand a descriptor or a buffer. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lua/oktadpop.h"

const char OK_FILE_CANNOT_OPEN[] = "cannot open";
const char OK_FILE_NOT_REGULAR[] = "not a regular file";
const char OK_FILE_TOO_LARGE[] = "too large";

const char *ok_read_small_file(lua_State *L, const char *path, size_t max, int copies,
                               char **data, size_t *len) {
  struct stat st;
  size_t room, got = 0;
  char *buf;
  int fd;
  if (stat(path, &st) != 0) return OK_FILE_CANNOT_OPEN;
  if (!S_ISREG(st.st_mode)) return OK_FILE_NOT_REGULAR;
  if ((size_t)st.st_size > max) return OK_FILE_TOO_LARGE;
  room = (size_t)st.st_size;
  buf = lua_newuserdata(L, (size_t)copies * (room + 1)); /* before open: may raise, nothing to leak */
  fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO swapped in would block open */
  if (fd < 0) return OK_FILE_CANNOT_OPEN;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) { close(fd); return OK_FILE_NOT_REGULAR; }
  while (got < room) { /* a file that grew since stat is read up to the room we have */
    ssize_t r = read(fd, buf + got, room - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  buf[got] = '\0';
  *data = buf;
  *len = got;
  return NULL;
}
