/* Program-level logging to stderr, one line per event. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *log_program = "postern";
static int log_level = LOG_INFO;

static const char *const log_names[] = { "error", "warn", "info", "debug" };

void
log_init(const char *program, enum log_level level)
{
	log_program = program;
	log_level = level;
}

void
log_adjust(int delta)
{
	log_level += delta;
	if (log_level < LOG_ERROR)
		log_level = LOG_ERROR;
	if (log_level > LOG_DEBUG)
		log_level = LOG_DEBUG;
}

int
log_enabled(enum log_level level)
{
	return (int)level <= log_level;
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	char line[2048], stamp[32];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if (!log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ %s %s: ", stamp,
	    ts.tv_nsec / 1000000, log_program, log_names[level]);
	if (n < 0 || (size_t)n >= sizeof(line))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	/* One write per line so concurrent processes sharing a log file
	 * do not interleave within a line. */
	n = (int)strlen(line);
	if ((size_t)n < sizeof(line) - 1)
		line[n++] = '\n';
	else
		line[sizeof(line) - 2] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
	fflush(stderr);
}
