/*
 * tool.h - process set-up shared by the test and benchmark programs
 * (mockd, loadgen), header-only. JSON framing lives in pjson.h.
 */
#ifndef PERF_TOOL_H
#define PERF_TOOL_H

#include <sys/resource.h>

/* Load tests open thousands of connections: take what the hard limit allows. */
static inline void tool_raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

#endif /* PERF_TOOL_H */
