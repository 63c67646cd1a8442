/*
 * thread: what a thread of cutover says about itself to the operating system.
 *
 * Its name, so that `top -H`, `ps -L` and /proc show which of the sidecar's threads spends
 * the CPU (the loops, the spool writer, the recorder, the mirror, the transfer engine). And,
 * for background work (the copies, the removals, the shadow comparisons), a lower scheduling
 * priority: on a host where the sidecar shares CPUs with the application, a copy waits when
 * both want a CPU, and a request never waits for a copy. Linux keeps a nice value per
 * thread, so this changes only the calling thread; elsewhere it changes nothing.
 */
#include "core/core.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

void thread_setup(const char *name, bool background)
{
#ifdef __linux__
    if (name) {
        char n[16];
        /* the kernel keeps 15 bytes */
        snprintf(n, sizeof(n), "%s", name);
        pthread_setname_np(pthread_self(), n);
    }
    if (background) {
        id_t tid = (id_t)syscall(SYS_gettid);
        int cur;
        errno = 0;
        cur = getpriority(PRIO_PROCESS, tid);
        if (errno == 0) {
            int want = cur + THREAD_BACKGROUND_NICE;
            /* raising one's own nice value needs no privilege; a failure leaves it as it was */
            (void)setpriority(PRIO_PROCESS, tid, want > 19 ? 19 : want);
        }
    }
#else
    (void)name;
    (void)background;
#endif
}
