/* Logging for the programs (never called by library code, which fills
 * caller-supplied error strings instead). One line per event to stderr:
 *   2026-11-21T23:59:01.123Z relay info: tunnel ... */
#ifndef POSTERN_LOG_H
#define POSTERN_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

void log_init(const char *program, enum log_level level);
/* -v raises, -q lowers the level; clamps to the valid range. */
void log_adjust(int delta);
int log_enabled(enum log_level level);
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
