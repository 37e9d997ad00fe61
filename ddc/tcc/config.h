/* TinyCC's configuration for the diverse double compilation (docs/ddc.md):
   written by hand instead of by tcc's configure, so that every root's
   stage 1 is the same program whatever compiler and host build it. An i386
   cross compiler (the hex0 chain ends in an i386 tcc), static, for the
   libc its stage 2 builds (GNU Mes' libc, installed under /usr). */
#define TCC_TARGET_I386 1
#define TCC_MUSL 1
#define CONFIG_TCC_STATIC 1
/* No backtrace support: tcc enables it when host and target agree, which
   would make the hex0 root's tcc-1 (an i386 program) another program. */
#define CONFIG_TCCBOOT 1
#define CONFIG_TCCDIR "/usr/lib/tcc"
#define CONFIG_TCC_SYSINCLUDEPATHS "{B}/include:/usr/include"
#define CONFIG_TCC_LIBPATHS "{B}:/usr/lib"
#define CONFIG_TCC_CRTPREFIX "/usr/lib"
#define CONFIG_TCC_ELFINTERP "/lib/ld-musl-i386.so.1"
#define TCC_VERSION "0.9.27"
#define GCC_MAJOR 0
#define GCC_MINOR 0
#define CC_NAME CC_tcc
