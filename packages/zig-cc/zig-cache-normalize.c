/* Makes a zig cache manifest (ZIG_GLOBAL_CACHE_DIR/h/HASH) independent of
   the machine that wrote it: the inode and mtime zig records for each input
   file become 0, which is what zig itself records for a file whose mtime
   it cannot trust, so that the next use hashes the file's contents instead
   (a hit when they are the same). Entries whose digest is computed from
   those fields (metadata_only) are left alone.

   The format is Manifest.File of lib/std/Build/Cache.zig in zig 0.17.1:
   size u64, inode u64, mtime i64, digest [16]u8, flags u8, then the path
   and a zero byte; after the last entry one more zero byte.

   Usage: zig-cache-normalize FILE...  (rewrites each FILE in place) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { HEAD = 8 + 8 + 8 + 16 + 1, INODE = 8, MTIME = 16, FLAGS = 40 };

static int normalize(const char *path) {
	FILE *f = fopen(path, "rb");
	if (!f) { perror(path); return 1; }
	static unsigned char buf[1 << 24];
	size_t n = fread(buf, 1, sizeof buf, f);
	if (!feof(f)) { fprintf(stderr, "%s: too large\n", path); return 1; }
	fclose(f);
	size_t i = 0;
	while (n - i > 1) {
		if (n - i < HEAD + 1) { fprintf(stderr, "%s: truncated entry at %zu\n", path, i); return 1; }
		unsigned char flags = buf[i + FLAGS];
		unsigned char *end = memchr(buf + i + HEAD, 0, n - i - HEAD);
		if (!end) { fprintf(stderr, "%s: unterminated path at %zu\n", path, i); return 1; }
		if (!(flags & 2)) {
			memset(buf + i + INODE, 0, 8);
			memset(buf + i + MTIME, 0, 8);
		}
		i = (size_t)(end - buf) + 1;
	}
	if (n - i != 1 || buf[i] != 0) { fprintf(stderr, "%s: no final zero byte\n", path); return 1; }
	f = fopen(path, "wb");
	if (!f || fwrite(buf, 1, n, f) != n || fclose(f) != 0) { perror(path); return 1; }
	return 0;
}

int main(int argc, char **argv) {
	int rc = 0;
	for (int a = 1; a < argc; a++) rc |= normalize(argv[a]);
	return rc;
}
