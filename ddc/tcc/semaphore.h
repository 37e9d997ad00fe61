/* TinyCC locks a semaphore around each compilation (CONFIG_TCC_SEMLOCK,
   for libtcc used from threads); GNU Mes' libc has no semaphores, and the
   tcc command is single-threaded: a semaphore that never blocks. */
typedef int sem_t;
static int sem_init(sem_t *s, int shared, unsigned value) { *s = value; return 0; }
static int sem_wait(sem_t *s) { return 0; }
static int sem_post(sem_t *s) { return 0; }
