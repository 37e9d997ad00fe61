#define _GNU_SOURCE
/* System calls a sandboxed build must not make, tried under the x86_64
 * ABI (syscall) and the i386 ABI (int $0x80 from this same x86_64 program,
 * which the kernel and seccomp see as AUDIT_ARCH_I386). Each probe prints
 * "NAME/ABI RESULT" where RESULT is "ok" or the errno's name. The arguments
 * are chosen so that, unfiltered, the kernel answers something else than
 * the filter does (EFAULT, EINVAL, EBADF or success).
 * Built by tests/sandbox.rs with `cc -static` (non-PIE: the i386 ABI takes
 * 32-bit pointers, so buffers must live below 4 GiB). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include <signal.h>
#include <sys/wait.h>
#include <sys/syscall.h>

static long sys64(long nr, long a, long b, long c, long d, long e) {
	long r;
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	__asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8) : "rcx", "r11", "memory");
	return r;
}

static long sys32(long nr, long a, long b, long c, long d, long e) {
	long r;
	__asm__ volatile("push %%rbx\n\tmov %2, %%rbx\n\tint $0x80\n\tpop %%rbx"
	                 : "=a"(r) : "a"(nr), "r"(a), "c"(b), "d"(c), "S"(d), "D"(e) : "memory");
	return (long)(int)r;
}

static const char *result(long r) {
	static char buf[32];
	if (r >= 0 || r < -4095) return "ok";
	const char *n = strerrorname_np(-r);
	if (n) return n;
	snprintf(buf, sizeof buf, "errno%ld", -r);
	return buf;
}

static void probe(const char *name, int abi32, long nr, long a, long b, long c, long d, long e) {
	long r = abi32 ? sys32(nr, a, b, c, d, e) : sys64(nr, a, b, c, d, e);
	printf("%s/%s %s\n", name, abi32 ? "i386" : "x86_64", result(r));
	fflush(stdout);
}

/* A clone or unshare that succeeds changes the caller: try it in a child. */
static void probe_child(const char *name, int abi32, long nr, long a) {
	fflush(stdout);
	pid_t pid = fork();
	if (pid == 0) {
		long r = abi32 ? sys32(nr, a, 0, 0, 0, 0) : sys64(nr, a, 0, 0, 0, 0);
		if (r == 0 && nr != SYS_unshare && nr != 310) _exit(0); /* the clone's child */
		printf("%s/%s %s\n", name, abi32 ? "i386" : "x86_64", result(r));
		fflush(stdout);
		_exit(0);
	}
	while (waitpid(-1, 0, 0) > 0 || errno == EINTR) {}
}

static int socketcall_args[3];

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "keyring") == 0) {
		/* KEYCTL_GET_KEYRING_ID of @s without creating; then search it. */
		long id = sys64(SYS_keyctl, 0, -3, 0, 0, 0);
		long found = sys64(SYS_keyctl, 10, -3, (long)"user", (long)"imgrep-test-secret", 0);
		printf("session %s %ld\nsecret %s\n", result(id), id, result(found));
		return 0;
	}
	if (argc > 2 && strcmp(argv[1], "plant") == 0) {
		/* A session keyring of our own holding a secret, then run argv[2..]. */
		long id = sys64(SYS_keyctl, 1, (long)"imgrep-test", 0, 0, 0);
		long key = sys64(SYS_add_key, (long)"user", (long)"imgrep-test-secret", (long)"HOST-SECRET", 11, -3);
		if (id < 0 || key < 0) { fprintf(stderr, "plant: %s %s\n", result(id), result(key)); return 2; }
		printf("host session %ld\n", id);
		fflush(stdout);
		execvp(argv[2], argv + 2);
		perror("exec");
		return 2;
	}
	for (int abi32 = 0; abi32 < 2; abi32++) {
		/* { name, x86_64 number, i386 number, arguments } */
		struct { const char *name; long nr64, nr32, a, b, c, d, e; } p[] = {
			{ "getpid", 39, 20, 0, 0, 0, 0, 0 },
			{ "keyctl", 250, 288, 0, -3, 0, 0, 0 },
			{ "add_key", 248, 286, 0, 0, 0, 0, -3 },
			{ "request_key", 249, 287, 0, 0, 0, 0, 0 },
			{ "bpf", 321, 357, 9999, 0, 0, 0, 0 },
			{ "perf_event_open", 298, 336, 0, 0, -1, -1, 0 },
			{ "userfaultfd", 323, 374, 1 /* UFFD_USER_MODE_ONLY */, 0, 0, 0, 0 },
			{ "io_uring_setup", 425, 425, 1, 0, 0, 0, 0 },
			{ "mount", 165, 21, 0, 0, 0, 0, 0 },
			{ "open_tree", 428, 428, -1, 0, 0, 0, 0 },
			{ "fsopen", 430, 430, 0, 0, 0, 0, 0 },
			{ "personality_addr_no_randomize", 135, 136, 0x40000, 0, 0, 0, 0 },
			{ "personality_query", 135, 136, 0xffffffff, 0, 0, 0, 0 },
			{ "personality_linux32", 135, 136, 8, 0, 0, 0, 0 },
			{ "personality_linux", 135, 136, 0, 0, 0, 0, 0 },
			{ "socket_vsock", 41, 359, 40, 1, 0, 0, 0 },
			{ "socket_alg", 41, 359, 38, 5, 0, 0, 0 },
			{ "socket_packet", 41, 359, 17, 3, 0, 0, 0 },
			{ "socket_unix", 41, 359, 1, 1, 0, 0, 0 },
			{ "socket_inet", 41, 359, 2, 2, 0, 0, 0 },
			{ "ioctl_tiocsti", 16, 54, -1, 0x5412, 0, 0, 0 },
			{ "ioctl_tioclinux", 16, 54, -1, 0x541C, 0, 0, 0 },
			{ "clone3", 435, 435, 0, 0, 0, 0, 0 },
		};
		for (unsigned i = 0; i < sizeof p / sizeof p[0]; i++)
			probe(p[i].name, abi32, abi32 ? p[i].nr32 : p[i].nr64, p[i].a, p[i].b, p[i].c, p[i].d, p[i].e);
		/* TIOCSTI with bits above the 32 the kernel reads. */
		if (!abi32) probe("ioctl_tiocsti_high", 0, 16, -1, 0x100005412L, 0, 0, 0);
		/* i386 socket() through socketcall(SYS_SOCKET, args). */
		if (abi32) {
			socketcall_args[0] = 40; socketcall_args[1] = 1; socketcall_args[2] = 0;
			probe("socketcall_vsock", 1, 102, 1, (long)socketcall_args, 0, 0, 0);
		}
		probe_child("unshare_newuser", abi32, abi32 ? 310 : SYS_unshare, 0x10000000);
		probe_child("clone_newuser", abi32, abi32 ? 120 : SYS_clone, 0x10000000 | SIGCHLD);
	}
	/* x32: x86_64 numbers with bit 30 set. */
	probe("getpid_x32", 0, 0x40000000 | 39, 0, 0, 0, 0, 0);
	return 0;
}
