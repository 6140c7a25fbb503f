/*
 * sdnotify.h - readiness notifications to systemd (Type=notify), without
 * libsystemd.
 */
#ifndef BROKER_SDNOTIFY_H
#define BROKER_SDNOTIFY_H

/* Send state ("READY=1", "STOPPING=1", ...) as one datagram to
 * NOTIFY_SOCKET when it is set: an absolute path, or '@' followed by a name
 * in the abstract namespace. 0 (also when unset), or -errno. Any thread;
 * reads the environment, so not while another thread changes it. */
int sdnotify(const char *state);

#endif /* BROKER_SDNOTIFY_H */
