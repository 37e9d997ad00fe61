/* The check of bootstrap/tcc: compiled by the new TinyCC, statically
 * linked against musl (libc.a, and the empty libm.a for -lm) and run inside
 * the build. What it writes to the file named by argv[1] is compared with
 * hello.sha256: formatted integers and floats, a libm function, stdio
 * buffering flushed by fclose. */
#include <math.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	char line[64];
	FILE *f;

	if (argc != 2)
		return 2;
	snprintf(line, sizeof line, "%s, %d %.2f %g %s", "hello", 42, 3.25, sqrt(2.0), "musl");
	puts(line);
	f = fopen(argv[1], "w");
	if (!f)
		return 1;
	fprintf(f, "%s\n", line);
	return fclose(f) != 0;
}
